"""Curriculum rounds end to end: the smoke pipeline over two rounds, continuing M,
training a fresh one, or keeping round 0's LSTM."""

import json
import subprocess

import jax
import numpy as np
from tiny_run import ROOT, smoke_pipeline_command

from world_models.config import make_config
from world_models.logs import read_metrics
from world_models.pipeline.markers import marker_path
from world_models.training.rnn import load_rnn


def test_two_rounds(tmp_path):
    run_dir = tmp_path / "two"
    subprocess.run(smoke_pipeline_command(run_dir, "--rounds", "2"), check=True,
                   cwd=ROOT, timeout=900)
    for stage in ("collect", "encode", "rnn", "dream", "test"):
        assert marker_path(run_dir, 1, stage).exists(), stage
    assert list((run_dir / "data" / "round1" / "on_policy").glob("*.npz"))
    report = (run_dir / "report.md").read_text()
    assert "| 1 | on_policy |" in report
    assert (run_dir / "eval" / "round1_agent.json").exists()
    # Round 1 retrained M, so the controller kept in round 0 was scored again under it.
    rows = [json.loads(line) for line in (run_dir / "dream" / "metrics.jsonl").open()]
    assert any("best_rescored" in row for row in rows)


def test_a_round_that_trains_a_fresh_m(tmp_path):
    run_dir = tmp_path / "fresh_m"
    subprocess.run(smoke_pipeline_command(
        run_dir, "--rounds", "2", "--set", "pipeline.retrain_rnn=true",
        "--set", "pipeline.warm_start_es=false"), check=True, cwd=ROOT, timeout=900)
    steps = make_config("smoke").rnn.steps
    assert marker_path(run_dir, 1, "rnn_reset").exists()
    old, new = (read_metrics(run_dir / folder / "metrics.jsonl")
                for folder in ("rnn_round0", "rnn"))
    assert old[-1]["step"] == new[-1]["step"] == steps  # trained afresh, not continued
    assert new[0]["step"] == 1 and not np.isclose(old[0]["train_loss"],
                                                  new[0]["train_loss"])
    # a new search, started from round 0's kept controller re-scored under the new M
    rows = read_metrics(run_dir / "dream" / "metrics.jsonl")
    assert rows[0].get("best_rescored") is not None
    assert (run_dir / "dream_round0").is_dir()


def test_a_round_with_a_frozen_lstm_keeps_round_0s_lstm(tmp_path):
    run_dir = tmp_path / "frozen"
    subprocess.run(smoke_pipeline_command(
        run_dir, "--rounds", "2", "--set", "pipeline.freeze_lstm=true"),
        check=True, cwd=ROOT, timeout=900)
    steps = make_config("smoke").rnn.steps
    round0, round1 = (load_rnn(run_dir, step) for step in (steps, 2 * steps))
    for a, b in zip(jax.tree.leaves(round0.cell), jax.tree.leaves(round1.cell),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(round0.head.weight, round1.head.weight)
