import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from world_models.data.collection import RolloutError, collect
from world_models.data.episodes import list_episodes, load_episode
from world_models.data.policies import make_policy, register_policy


class FlakyPolicy:
    """Brownian, except that seed 2 raises and seed 3 kills its worker process."""

    def __init__(self, env_id):
        self.inner = make_policy("brownian", env_id)

    def reset(self, seed):
        if seed == 2:
            raise RuntimeError("env exploded on seed 2")
        if seed == 3:
            os._exit(3)
        self.inner.reset(seed)

    def act(self, frame, raw_obs):
        return self.inner.act(frame, raw_obs)


def make_flaky(env_id):
    return FlakyPolicy(env_id)


register_policy("test_flaky", make_flaky)

_SCRIPT = Path(__file__).resolve().parents[1] / "collect_data.py"
_spec = importlib.util.spec_from_file_location("collect_data", _SCRIPT)
collect_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect_data)


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_cli_collects_valid_episodes_and_rerun_writes_nothing(tmp_path, capsys):
    out = tmp_path / "data"
    argv = [
        "--env",
        "CarRacing-v3",
        "--policy",
        "brownian",
        "--episodes",
        "3",
        "--workers",
        "2",
        "--max-steps",
        "20",
        "--seed",
        "5",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert collect_data.main(argv) == 0
    files = list_episodes(out)
    assert [f.name for f in files] == [
        "ep_000005.npz",
        "ep_000006.npz",
        "ep_000007.npz",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [5, 6, 7] and manifest["total_episodes"] == 3
    assert manifest["env_id"] == "CarRacing-v3" and manifest["policy"] == "brownian"
    for path, entry in zip(files, manifest["episodes"]):
        episode = load_episode(path)
        assert int(episode["seed"]) == entry["seed"] and entry["file"] == path.name
        assert entry["length"] == len(episode["rewards"]) == 20
        assert entry["return"] == pytest.approx(float(episode["rewards"].sum()))
        assert not entry["terminated"] and episode["truncated"][-1]
    before = _mtimes(out)
    assert collect_data.main(argv) == 0
    assert _mtimes(out) == before  # idempotent: no episode or manifest rewritten

    files[1].write_bytes(b"corrupt")  # a damaged file is collected again
    assert collect_data.main(argv) == 0
    assert load_episode(files[1])["seed"] == 6
    assert _mtimes(out)[files[0].name] == before[files[0].name]


@pytest.mark.parametrize("env_id", ["LunarLander-v3", "ALE/Pong-v5"])
def test_collect_discrete_envs(tmp_path, env_id):
    manifest = collect(
        tmp_path,
        env_id,
        "brownian",
        episodes=2,
        seed=0,
        workers=2,
        max_steps=30,
        progress=False,
    )
    assert manifest["total_episodes"] == 2
    for path in list_episodes(tmp_path):
        episode = load_episode(path)
        assert episode["actions"].dtype == np.int32
        assert str(episode["env_id"]) == env_id


def test_worker_failures_are_retried_then_reported(tmp_path, capsys):
    argv = [
        "--env",
        "LunarLander-v3",
        "--policy",
        "test_flaky",
        "--episodes",
        "5",
        "--workers",
        "2",
        "--max-steps",
        "10",
        "--seed",
        "0",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert collect_data.main(argv) == 1
    error = capsys.readouterr().err
    assert "2 of 5 episodes failed" in error
    assert "seed 2" in error and "env exploded" in error
    assert "seed 3" in error and "died" in error
    assert [p.name for p in list_episodes(tmp_path)] == [
        "ep_000000.npz",
        "ep_000001.npz",
        "ep_000004.npz",
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["missing_seeds"] == [2, 3] and manifest["seeds"] == [0, 1, 4]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(RolloutError, match="max_steps=10"):
        collect(tmp_path, "LunarLander-v3", "test_flaky", 5, 0, 2, 11, progress=False)


def test_run_directory_mode(tmp_path):
    run = tmp_path / "run"
    argv = [
        "--run",
        str(run),
        "--preset",
        "smoke",
        "--env",
        "LunarLander-v3",
        "--episodes",
        "2",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert collect_data.main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["env_id"] == "LunarLander-v3" and config["preset"] == "smoke"
    files = list_episodes(run / "data" / "round0" / "brownian")
    assert len(files) == 2
    assert (
        collect_data.main(["--run", str(run), "--episodes", "3", "--no-progress"]) == 1
    )


def test_the_ray_backend_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    from world_models.config import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    monkeypatch.delenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", raising=False)
    with pytest.raises(ConfigError, match="uv sync --extra ray"):
        collect(tmp_path, "CarRacing-v3", "brownian", 1, 0, 1, 5, progress=False,
                backend="ray")
    assert list(tmp_path.iterdir()) == []
