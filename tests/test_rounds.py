"""Curriculum rounds end to end: the smoke pipeline over two rounds, training a fresh
M and search (the default), continuing them, or keeping round 0's LSTM."""

import json
import shutil
import subprocess

import jax
import numpy as np
import pytest
from tiny_run import ROOT, smoke_pipeline_command

from world_models.agent import kept_action_noise
from world_models.config import make_config
from world_models.dream.search import load_search
from world_models.dream.selection import real_check
from world_models.logs import read_metrics
from world_models.pipeline.markers import marker_path
from world_models.pipeline.round_choice import choose_round, load_round_choices
from world_models.run_models import load_models
from world_models.seeds import round_choice_seeds
from world_models.training.rnn import load_rnn

CONTINUED = ("--set", "pipeline.retrain_rnn=false",
             "--set", "pipeline.warm_start_es=true")


@pytest.fixture(scope="module")
def fresh_m_run(tmp_path_factory):
    """Two smoke rounds as the defaults run them (a fresh M and search in round 1),
    and a copy of the run as round 0 left it."""
    run_dir = tmp_path_factory.mktemp("fresh_m") / "run"
    subprocess.run(smoke_pipeline_command(run_dir, "--rounds", "1"),
                   check=True, cwd=ROOT, timeout=900)
    round0 = run_dir.with_name("round0")
    shutil.copytree(run_dir, round0, symlinks=True)
    subprocess.run(smoke_pipeline_command(run_dir, "--rounds", "2"),
                   check=True, cwd=ROOT, timeout=900)
    return run_dir, round0


def test_two_rounds(fresh_m_run):
    run_dir, _ = fresh_m_run
    for stage in ("collect", "encode", "rnn", "dream", "round_choice", "test"):
        assert marker_path(run_dir, 1, stage).exists(), stage
    assert list((run_dir / "data" / "round1" / "on_policy").glob("*.npz"))
    report = (run_dir / "report.md").read_text()
    assert "| 1 | on_policy |" in report
    assert (run_dir / "eval" / "round1_agent.json").exists()


def test_a_round_that_continues_m_and_its_search(tmp_path):
    run_dir = tmp_path / "continued"
    subprocess.run(smoke_pipeline_command(run_dir, "--rounds", "2", *CONTINUED),
                   check=True, cwd=ROOT, timeout=900)
    steps = make_config("smoke").rnn.steps
    assert read_metrics(run_dir / "rnn" / "metrics.jsonl")[-1]["step"] == 2 * steps
    assert not (run_dir / "rnn_round0").exists()
    assert not marker_path(run_dir, 1, "round_choice").exists()  # no round 0 agent
    # Round 1 retrained M, so the controller kept in round 0 was scored again under it.
    rows = [json.loads(line) for line in (run_dir / "dream" / "metrics.jsonl").open()]
    assert any("best_rescored" in row for row in rows)


def test_a_round_that_trains_a_fresh_m(fresh_m_run):
    run_dir, _ = fresh_m_run
    steps = make_config("smoke").rnn.steps
    assert marker_path(run_dir, 1, "rnn_reset").exists()
    kept = load_round_choices(run_dir)[1]["kept_round"]
    round1 = "" if kept == 1 else "_round1_declined"  # where round 1's own M is
    old, new = (read_metrics(run_dir / folder / "metrics.jsonl")
                for folder in ("rnn_round0", f"rnn{round1}"))
    assert old[-1]["step"] == new[-1]["step"] == steps  # trained afresh, not continued
    assert new[0]["step"] == 1 and not np.isclose(old[0]["train_loss"],
                                                  new[0]["train_loss"])
    # a new search, started from round 0's kept controller re-scored under the new M
    rows = read_metrics(run_dir / f"dream{round1}" / "metrics.jsonl")
    assert rows[0].get("best_rescored") is not None
    assert (run_dir / "dream_round0").is_dir()


def test_round_1_plays_round_0s_agent_beside_its_own(fresh_m_run):
    run_dir, round0 = fresh_m_run
    config = make_config("smoke", overrides=["pipeline.rounds=2"])
    choice = load_round_choices(run_dir)[1]
    seeds = round_choice_seeds(config, 1)
    assert choice["seeds"] == [seeds.start, seeds.stop - 1]
    new, previous = choice["agents"]
    assert (new["round"], previous["round"]) == (1, 0)
    assert len(new["returns"]) == len(previous["returns"]) == len(seeds)
    # round 0's agent as round 0 left the run, on the same seeds: the same episodes
    params = np.asarray(load_search(round0)["best_params"])
    again = real_check(round0, config, params, 1, seeds, kept_action_noise(round0))
    assert [e["return"] for e in again] == pytest.approx(previous["returns"])
    assert choice["kept_round"] == (1 if new["mean"] > previous["mean"] else 0)
    assert "## Which round's agent each later round kept" in (
        run_dir / "report.md").read_text()


def test_a_round_that_keeps_the_previous_agent_restores_it(fresh_m_run, tmp_path):
    source, round0 = fresh_m_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir, symlinks=True)
    record = run_dir / "round_choice" / "round1.json"
    choice = json.loads(record.read_text())
    if choice["kept_round"] == 0:  # undo the restore the pipeline made
        for name in ("rnn", "dream"):
            shutil.rmtree(run_dir / name)
            (run_dir / f"{name}_round1_declined").rename(run_dir / name)
    round1_params = np.asarray(load_search(run_dir)["best_params"])
    record.write_text(json.dumps(dict(choice, kept_round=0)))
    # killed after round 1's M was set aside and before round 0's was copied back
    (run_dir / "rnn").rename(run_dir / "rnn_round1_declined")
    config = make_config("smoke", overrides=["pipeline.rounds=2"])
    for _ in range(2):  # the resumed restore, then once more: nothing changes
        assert choose_round(run_dir, config, 1)["kept_round"] == 0
        for name in ("rnn", "dream"):
            assert _files(run_dir / name) == _files(round0 / name)
    declined = load_search(run_dir, config, run_dir / "dream_round1_declined")
    np.testing.assert_array_equal(declined["best_params"], round1_params)
    np.testing.assert_array_equal(load_models(str(run_dir))[2].head.weight,
                                  load_rnn(round0).head.weight)


def _files(folder):
    return {path.relative_to(folder): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_round_with_a_frozen_lstm_keeps_round_0s_lstm(tmp_path):
    run_dir = tmp_path / "frozen"
    subprocess.run(smoke_pipeline_command(
        run_dir, "--rounds", "2", "--set", "pipeline.freeze_lstm=true", *CONTINUED),
        check=True, cwd=ROOT, timeout=900)
    steps = make_config("smoke").rnn.steps
    round0, round1 = (load_rnn(run_dir, step) for step in (steps, 2 * steps))
    for a, b in zip(jax.tree.leaves(round0.cell), jax.tree.leaves(round1.cell),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(round0.head.weight, round1.head.weight)
