import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from world_models.data.collection import RolloutError, play_episodes
from world_models.data.episodes import validate_episode
from world_models.data.play import play_episode
from world_models.data.policies import make_policy
from world_models.envs import get_spec, make_env, preprocess_frame, raw_frame

ENV_IDS = ["CarRacing-v3", "LunarLander-v3", "ALE/Pong-v5", "ALE/Breakout-v5"]
CASES = [(env_id, "brownian") for env_id in ENV_IDS] + [
    ("CarRacing-v3", "recovery"),
    ("CarRacing-v3", "aggressive"),
]


@pytest.mark.parametrize("env_id, policy_name", CASES)
def test_same_seed_gives_identical_episode(env_id, policy_name):
    episodes = [
        play_episode(env_id, make_policy(policy_name, env_id), seed, 25)
        for seed in (3, 3, 4)
    ]
    first, again, other = episodes
    validate_episode(first, name=env_id)
    for key in ("obs", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["obs"], other["obs"]) or not np.array_equal(
        first["actions"], other["actions"]
    )


def test_reused_env_gives_the_same_episode():
    env = make_env("CarRacing-v3")
    policy = make_policy("brownian", "CarRacing-v3")
    play_episode("CarRacing-v3", policy, 1, 10, env=env)
    reused = play_episode("CarRacing-v3", policy, 7, 15, env=env)
    fresh = play_episode("CarRacing-v3", make_policy("brownian", "CarRacing-v3"), 7, 15)
    np.testing.assert_array_equal(reused["obs"], fresh["obs"])
    np.testing.assert_array_equal(reused["actions"], fresh["actions"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_preprocessing_and_max_steps_truncation(env_id):
    spec = get_spec(env_id)
    episode = play_episode(env_id, "brownian", seed=0, max_steps=6)
    assert episode["obs"].shape == (7, 64, 64, 3) and episode["obs"].dtype == np.uint8
    assert episode["truncated"].tolist() == [False] * 5 + [True]
    assert not episode["terminated"].any()
    if spec.discrete:
        assert episode["actions"].dtype == np.int32 and episode["actions"].shape == (6,)
    else:
        assert episode["actions"].shape == (6, spec.action_size)
    env = make_env(env_id)
    observation, _ = env.reset(seed=0)
    raw = raw_frame(env, observation, spec)
    np.testing.assert_array_equal(preprocess_frame(raw, spec), episode["obs"][0])
    assert raw.ndim == 3 and raw.shape[2] == 3
    env.close()


def test_carracing_crop_removes_the_dashboard():
    spec = get_spec("CarRacing-v3")
    env = make_env("CarRacing-v3")
    observation, _ = env.reset(seed=0)
    env.close()
    marked = observation.copy()
    marked[84:] = (255, 0, 255)  # paint the dashboard rows magenta
    frame = preprocess_frame(marked, spec)
    np.testing.assert_array_equal(frame, preprocess_frame(observation, spec))
    marked[83] = (255, 0, 255)  # ...while a view row does reach the frame
    assert not np.array_equal(preprocess_frame(marked, spec), frame)


def test_evaluate_matches_play_episode():
    results = play_episodes(
        "LunarLander-v3", "brownian", [5, 2], workers=2, max_steps=30, progress=False
    )
    assert [r["seed"] for r in results] == [5, 2]
    for result in results:
        episode = play_episode(
            "LunarLander-v3", "brownian", result["seed"], 30, record_frames=False
        )
        assert "obs" not in episode
        assert result["return"] == pytest.approx(float(episode["rewards"].sum()))
        assert result["length"] == len(episode["rewards"])
        assert result["terminated"] == bool(episode["terminated"][-1])


def test_evaluate_reports_failures():
    with pytest.raises(RolloutError, match="seed 0"):
        play_episodes(
            "CarRacing-v3",
            "brownian",
            [0],
            workers=1,
            max_steps=5,
            policy_kwargs={"no_such_argument": 1},
            progress=False,
        )



def test_workers_keep_jax_on_the_cpu(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS")  # conftest's, which workers would inherit
    sys.path.insert(0, str(Path(__file__).parent))
    from slow_policy import make_cpu_only

    from world_models.data.policies import register_policy

    register_policy("cpu_only", make_cpu_only)
    (result,) = play_episodes(
        "CarRacing-v3", "cpu_only", [0], workers=1, max_steps=3, progress=False
    )
    assert result["length"] == 3


_KILLED_PARENT = """
import sys
sys.path.insert(0, {tests!r})
from slow_policy import make_slow
from world_models.data.policies import register_policy
from world_models.data.collection import play_episodes
register_policy("slow", make_slow)
play_episodes("CarRacing-v3", "slow", [0, 1], workers=2, max_steps=0, progress=False)
"""


def test_workers_end_when_their_parent_is_killed():
    script = _KILLED_PARENT.format(tests=str(Path(__file__).parent))
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = _pool_workers(parent.pid)
        assert len(workers) == 2, "the pool never started"
        time.sleep(8)  # imports done, each worker is into its 50-second episode
    finally:
        parent.kill()  # SIGKILL: the parent cannot stop its workers itself
        parent.wait()
    # Alone they end within a second; 20 s leaves room for a loaded machine and is
    # still well before the ~40 s their episodes had left.
    deadline = time.monotonic() + 20
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers))


def _pool_workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [p for p in pids if b"spawn_main" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
