"""End to end: the smoke pipeline, its M candidates, and a kill mid-stage followed by
a re-run (its rounds: test_rounds.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_run import ROOT, smoke_pipeline_command

from world_models.config import ConfigError, make_config
from world_models.dream.search import load_search
from world_models.logs import read_metrics
from world_models.pipeline.markers import STAGES, marker_path
from world_models.pipeline.run import run_pipeline
from world_models.training.rnn import load_rnn

SMOKE_BASELINE = ROOT / "tests" / "data" / "smoke_baseline.json"
MODEL_RTOL = 1.5e-2
ONE_TILE = 4.0  # CarRacing pays 1000/N per new tile, N >= 250 on its tracks


def _artifacts(run_dir: Path) -> dict[str, object]:
    """What a run leaves that must not depend on being interrupted."""
    evals = {p.name: [(e["seed"], e["return"], e["length"]) for e in
                      json.loads(p.read_text())["results"]]
             for p in sorted((run_dir / "eval").glob("*.json"))}
    data = {str(p.relative_to(run_dir)): np.load(p)["actions"].tobytes()
            for p in sorted((run_dir / "data").rglob("*.npz"))}
    latents = {str(p.relative_to(run_dir)): np.load(p)["mu"].tobytes()
               for p in sorted((run_dir / "latents").rglob("*.npz"))}
    return {"evals": evals, "data": data, "latents": latents}


def _fingerprint(run_dir: Path) -> dict[str, object]:
    """What the smoke run computed, as numbers a refactor must not change: every
    collected episode, every logged training metric, every latent file and every
    real episode of the test."""
    episodes = {}
    for path in sorted((run_dir / "data").rglob("*.npz")):
        with np.load(path) as episode:
            episodes[str(path.relative_to(run_dir))] = [
                float(episode["rewards"].sum()),
                float(episode["actions"].astype(np.float64).sum()),
                float(episode["obs"].astype(np.float64).mean()),
            ]
    latents = {}
    for path in sorted((run_dir / "latents").rglob("*.npz")):
        with np.load(path) as latent:
            latents[str(path.relative_to(run_dir))] = float(
                latent["mu"].astype(np.float64).mean())
    metrics = {folder: read_metrics(run_dir / folder / "metrics.jsonl")
               for folder in ("vae", "rnn", "dream")}
    evals = {path.name: [[e["seed"], e["return"], e["length"]]
                         for e in json.loads(path.read_text())["results"]]
             for path in sorted((run_dir / "eval").glob("*.json"))}
    return _flat({"episodes": episodes, "latents": latents, "metrics": metrics,
                  "evals": evals})


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(_flat(value, f"{prefix}/{key}"))
    return flat


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    subprocess.run(smoke_pipeline_command(run_dir), check=True, cwd=ROOT, timeout=600)
    return run_dir


def test_smoke_pipeline_one_round(smoke_run):
    for stage in STAGES:
        assert marker_path(smoke_run, 0, stage).exists(), stage
    report = (smoke_run / "report.md").read_text()
    assert "Real score per round" in report and "brownian" in report
    agent = json.loads((smoke_run / "eval" / "round0_agent.json").read_text())
    config = make_config("smoke")
    assert [e["seed"] for e in agent["results"]] == list(
        range(config.eval.seed, config.eval.seed + config.eval.episodes))


def test_smoke_run_matches_the_recorded_baseline(smoke_run):
    """Behaviour is unchanged by refactoring: the smoke pipeline computes what it
    computed when the baseline was recorded (record it again, on purpose, with
    WM_RECORD_SMOKE_BASELINE=1, when a change is meant to alter the numbers)."""
    found = _fingerprint(smoke_run)
    if os.environ.get("WM_RECORD_SMOKE_BASELINE") == "1":
        SMOKE_BASELINE.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(SMOKE_BASELINE.read_text())
    assert sorted(found) == sorted(recorded)
    # The baseline is compared on other CPUs, whose rounding moves what the models
    # compute: by up to 4e-4 on a first-generation AMD EPYC against the Xeon that
    # recorded it, by up to 1.1e-2 on a fifth-generation EPYC (M's predicted return
    # at one validation; V's KL 3.5e-3), and there the agent's 40-step test episode
    # crossed one more track tile (+1000/N for N >= 250 tiles). A change in behaviour
    # moves them by far more. What no model touches (the collected data, the
    # baselines' episodes) stays within 1e-3.
    for key, value in recorded.items():
        if key.startswith("/evals/round0_agent") and key.endswith("/1"):
            tolerance = {"rel": 0, "abs": ONE_TILE}
        elif key.startswith(("/latents", "/metrics")):
            tolerance = {"rel": MODEL_RTOL, "abs": 1e-5}
        else:
            tolerance = {"rel": 1e-3, "abs": 1e-5}
        assert found[key] == pytest.approx(value, nan_ok=True, **tolerance), key


def test_same_command_again_redoes_nothing(smoke_run):
    before = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()
              and "pipeline" not in p.parts and p.name != "report.md"}
    subprocess.run(smoke_pipeline_command(smoke_run), check=True, cwd=ROOT, timeout=600)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def test_other_config_on_existing_run_refused(smoke_run):
    with pytest.raises(ConfigError, match="another config"):
        run_pipeline(smoke_run, make_config("smoke", overrides=["vae.steps=3"]))


def test_killed_mid_stage_then_rerun_matches_uninterrupted(smoke_run, tmp_path):
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(smoke_pipeline_command(run_dir), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    target = run_dir / "rnn" / "ckpt"  # killed once M has a first checkpoint
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None:
        if target.exists() and any(p.name.isdigit() for p in target.iterdir()):
            break
        time.sleep(0.2)
    assert process.poll() is None, "the pipeline ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not marker_path(run_dir, 0, "rnn").exists()
    subprocess.run(smoke_pipeline_command(run_dir), check=True, cwd=ROOT, timeout=600)
    assert _artifacts(run_dir) == _artifacts(smoke_run)


def test_m_candidates_the_chosen_m_and_search_become_the_runs(smoke_run, tmp_path):
    run_dir = tmp_path / "candidates"
    subprocess.run(smoke_pipeline_command(
        run_dir, "--set", "pipeline.rnn_candidates=2", "--set",
        "pipeline.search_candidates=2", "--set", "dream.finalists=1",
        "--set", "dream.final_check_episodes=1"), check=True, cwd=ROOT, timeout=900)
    record = json.loads((run_dir / "candidates.json").read_text())
    assert [(row["rnn_seed"], row["dream_seed"]) for row in record["candidates"]] == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    scores = [row["final_score"] for row in record["candidates"]]
    assert record["chosen_folder"] == record["candidates"][
        scores.index(max(scores))]["folder"]
    folders = [run_dir / "candidates" / f"m{index}" for index in (0, 1)]
    m0, m1 = (jax.tree.leaves(load_rnn(folder)) for folder in folders)
    # candidate 0 is the M a one-M run trains; candidate 1 another draw
    for a, b in zip(m0, jax.tree.leaves(load_rnn(smoke_run)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(m0, m1, strict=True))
    # M seed 0's second search: the same M, another CMA-ES seed
    second = run_dir / "candidates" / "m0_search1"
    for a, b in zip(jax.tree.leaves(load_rnn(second)), m0, strict=True):
        np.testing.assert_array_equal(a, b)
    means = [np.asarray(load_search(folder)["es_state"].mean)
             for folder in (folders[0], second)]
    assert not np.array_equal(*means)
    chosen = run_dir / "candidates" / record["chosen_folder"]
    for a, b in zip(jax.tree.leaves(load_rnn(run_dir)),
                    jax.tree.leaves(load_rnn(chosen)), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(load_search(run_dir)["best_params"],
                                  load_search(chosen)["best_params"])
    assert (run_dir / "eval" / "round0_agent.json").exists()
    assert "## M candidates" in (run_dir / "report.md").read_text()
    # M trained under another seed than the run's loads in the run (seed 1 copied in)
    shutil.rmtree(run_dir / "rnn")
    shutil.copytree(folders[1] / "rnn", run_dir / "rnn")
    for a, b in zip(jax.tree.leaves(load_rnn(run_dir)), m1, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ppo_script_trains_in_the_runs_dream_and_saves_a_search_start(smoke_run):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_ppo.py"), "--run",
                    str(smoke_run), "--updates", "3", "--num-envs", "4", "--num-steps",
                    "4"], check=True, cwd=ROOT, timeout=600)
    folder = smoke_run / "ppo"
    rows = json.loads((folder / "ppo_metrics.json").read_text())["updates"]
    assert [row["step"] for row in rows] == [1, 2, 3]
    kept = load_search(smoke_run, folder=folder)
    assert int(kept["best_generation"]) == 0 and kept["best_params"].ndim == 1
    assert (folder / "curve.png").exists()
