"""The Ray backend of the worker pool (collect.backend=ray) on a local Ray of 2 CPUs:
the same episodes as the local pool, retries of a dead worker, nothing partial."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

# As ray_pool does before its import: under `uv run`, Ray would rebuild the
# environment in each worker from the lock file, without the ray extra.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
ray = pytest.importorskip("ray")

from world_models.config import make_config
from world_models.data import ray_pool
from world_models.data.collection import (
    MANIFEST,
    RolloutError,
    collect,
    play_episodes,
)
from world_models.data.episodes import list_episodes, load_episode
from world_models.data.play import play_episode
from world_models.data.policies import make_policy, register_policy
from world_models.evaluation.real import evaluate_run
from world_models.run_directory import init_run

TESTS = Path(__file__).parent
STEPS = 30


class DiesMidEpisode:
    """Brownian, but kills its own process at its 5th step: on seed 1 always, on seed 0
    while the file ``marker`` is absent (it creates the file as it dies)."""

    def __init__(self, env_id, marker):
        self.inner, self.marker, self.seed, self.steps = (
            make_policy("brownian", env_id), Path(marker), 0, 0
        )

    def reset(self, seed):
        self.inner.reset(seed)
        self.seed, self.steps = seed, 0

    def act(self, frame, raw_obs):
        self.steps += 1
        if self.steps == 5 and (self.seed == 1 or not self.marker.exists()):
            if self.seed == 0:
                self.marker.touch()
            os._exit(3)
        return self.inner.act(frame, raw_obs)


def make_dies_mid_episode(env_id, marker):
    return DiesMidEpisode(env_id, marker)


register_policy("test_dies_mid_episode", make_dies_mid_episode)


@pytest.fixture(scope="module")
def local_ray():
    # Ray's workers import this module (the test policies) from tests/, and start
    # without JAX_PLATFORMS: the actor itself must keep JAX on the CPU.
    env = {"PYTHONPATH": str(TESTS), "JAX_PLATFORMS": ""}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def _counted(function, calls):
    def counted(*args, **kwargs):
        calls.append("ray")
        return function(*args, **kwargs)

    return counted


def _summaries(manifest):
    return [
        {k: v for k, v in e.items() if k != "mtime_ns"} for e in manifest["episodes"]
    ]


def test_ray_plays_the_same_episodes_as_the_local_pool(
    local_ray, tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setattr(ray_pool, "run_tasks", _counted(ray_pool.run_tasks, calls))
    args = ("CarRacing-v3", "recovery", 3, 7, 2, STEPS)  # episodes, seed, workers
    local = collect(tmp_path / "local", *args, progress=False)
    remote = collect(tmp_path / "ray", *args, progress=False, backend="ray")
    assert _summaries(remote) == _summaries(local) and len(local["episodes"]) == 3
    assert {k: v for k, v in remote.items() if k != "episodes"} == {
        k: v for k, v in local.items() if k != "episodes"
    }
    assert json.loads((tmp_path / "ray" / MANIFEST).read_text()) == remote
    local_files = list_episodes(tmp_path / "local")
    assert [f.name for f in list_episodes(tmp_path / "ray")] == [
        f.name for f in local_files
    ]
    for path in local_files:
        mine, theirs = load_episode(path), load_episode(tmp_path / "ray" / path.name)
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_array_equal(theirs[key], mine[key], err_msg=key)
    run = tmp_path / "run"  # the test evaluation reads the backend from the config
    init_run(run, make_config("smoke", overrides=["collect.backend=ray"]))
    report = evaluate_run(run, policy="recovery", episodes=3, seed=7, workers=2,
                          max_steps=STEPS, progress=False)
    assert report["results"] == [
        {k: e[k] for k in ("seed", "return", "length", "terminated")}
        for e in local["episodes"]
    ]
    assert calls == ["ray", "ray"]  # the collection, then the test evaluation


def test_ray_actors_keep_jax_on_the_cpu(local_ray):
    sys.path.insert(0, str(TESTS))
    from slow_policy import make_cpu_only

    register_policy("cpu_only", make_cpu_only)
    (result,) = play_episodes(
        "CarRacing-v3", "cpu_only", [0], 1, 3, progress=False, backend="ray"
    )
    assert result["length"] == 3


def test_a_worker_killed_mid_episode_is_retried_then_reported(local_ray, tmp_path):
    out, marker = tmp_path / "data", tmp_path / "died_once"
    with pytest.raises(RolloutError, match="seed 1: worker process died"):
        collect(
            out, "CarRacing-v3", "test_dies_mid_episode", 2, 0, 2, 20,
            policy_kwargs={"marker": str(marker)}, progress=False, backend="ray",
        )
    assert marker.exists()  # seed 0 died once, then played whole on a fresh actor
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seeds"] == [0] and manifest["missing_seeds"] == [1]
    # seed 1 died on both attempts: no episode file, no temp file
    assert sorted(p.name for p in out.iterdir()) == ["ep_000000.npz", MANIFEST]
    episode = load_episode(out / "ep_000000.npz")
    whole = play_episode("CarRacing-v3", "brownian", 0, 20)
    assert len(episode["actions"]) == 20
    np.testing.assert_array_equal(episode["obs"], whole["obs"])
    np.testing.assert_array_equal(episode["actions"], whole["actions"])
