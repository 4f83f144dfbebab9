"""compare_controllers: the real steps each controller cost, every contender played on
the same seeds, scores cached by fingerprint."""

import json

import numpy as np
import pytest
from tiny_run import TINY_OVERRIDES, make_tiny_run

from world_models.config import make_config
from world_models.data.collection import collect, play_episodes
from world_models.dream.evolve import evolve
from world_models.dream.search import load_search
from world_models.dream.selection import load_finalists
from world_models.evaluation.contenders import (
    Contender,
    RealSteps,
    baseline_contenders,
    collection_steps,
    model_free_contender,
    run_contenders,
    search_steps,
)
from world_models.evaluation.controller_comparison import compare_controllers
from world_models.evaluation.real import evaluate_run
from world_models.logs import read_metrics
from world_models.run_directory import init_run, load_run_config

LIMIT = 20  # eval.max_steps of the run below


@pytest.fixture(scope="module")
def searched_run(tmp_path_factory):
    """A tiny run with two collected episodes and a search with checks and a final
    check."""
    run = make_tiny_run(tmp_path_factory.mktemp("compare") / "run")
    init_run(run, make_config("smoke", overrides=TINY_OVERRIDES + (
        "dream.generations=2", "dream.real_eval_every=1", "dream.finalists=2",
        "dream.final_check_episodes=2", f"eval.max_steps={LIMIT}")), fresh=True)
    collect(run / "data" / "round0" / "brownian", "CarRacing-v3", "brownian", 2,
            seed=5_000_000, workers=1, max_steps=7, progress=False)
    evolve(run, progress=False)
    return run


def test_real_steps_count_collection_checks_and_final_checks(searched_run):
    config = load_run_config(searched_run)
    assert collection_steps(searched_run) == RealSteps(14)  # 2 episodes x 7 steps
    rows = [r for r in read_metrics(searched_run / "dream" / "metrics.jsonl")
            if "real_score" in r or "best_rescored" in r]
    finalists = [f for final in load_finalists(searched_run).values()
                 for f in final["finalists"]]
    assert len(rows) == 2 and len(finalists) == 2
    expected = sum(r["real_steps"] for r in rows) + sum(
        f["real_steps"] for f in finalists)
    assert search_steps(searched_run, config) == RealSteps(int(expected))
    # a check plays real_eval_episodes, a finalist final_check_episodes, each to LIMIT
    assert all(0 < r["real_steps"] <= LIMIT for r in rows)
    assert all(0 < f["real_steps"] <= 2 * LIMIT for f in finalists)


def test_checks_logged_before_their_steps_count_as_an_upper_bound(searched_run,
                                                                  tmp_path):
    config = load_run_config(searched_run)
    run = tmp_path / "old"
    (run / "dream").mkdir(parents=True)
    rows = read_metrics(searched_run / "dream" / "metrics.jsonl")
    (run / "dream" / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in row.items() if k != "real_steps"}) + "\n"
        for row in rows))
    bound = search_steps(run, config)
    assert bound == RealSteps(2 * LIMIT, exact=False)  # two checks of one episode
    assert str(bound) == f"≤ {2 * LIMIT}"
    assert str(RealSteps(1234)) == "1,234"


def test_every_contender_plays_the_same_seeds_and_unchanged_ones_are_cached(
        searched_run):
    config = load_run_config(searched_run)
    contenders = run_contenders(searched_run, config) + baseline_contenders(
        searched_run)
    assert [c.name for c in contenders] == [
        "CMA-ES in the dream", "zero controller", "random (brownian)"]
    cma = contenders[0]
    assert cma.real_steps == collection_steps(searched_run) + search_steps(
        searched_run, config)
    seeds = range(3, 5)
    rows, table = compare_controllers(searched_run, contenders, seeds, 1, LIMIT,
                                      progress=False)
    # the CMA-ES contender is the run's kept controller, as the agent plays it
    kept = play_episodes("CarRacing-v3", "agent", list(seeds), 1, LIMIT,
                         policy_kwargs=dict(run_dir=str(searched_run)),
                         progress=False)
    assert kept[0]["return"] != 0
    cached = json.loads(
        (searched_run / "eval" / "compare" / "cma_es_in_the_dream.json").read_text())
    assert [r["return"] for r in cached["results"]] == [r["return"] for r in kept]
    assert rows[0]["mean"] == pytest.approx(np.mean([r["return"] for r in kept]))
    assert rows[0]["paired_mean"] == 0
    assert rows[2]["real_steps"] is None and "| random (brownian) |" in table
    assert (searched_run / "eval" / "compare.md").read_text() == table

    files = sorted((searched_run / "eval" / "compare").iterdir())
    stamps = [p.stat().st_mtime_ns for p in files]
    compare_controllers(searched_run, contenders, seeds, 1, LIMIT, progress=False)
    assert [p.stat().st_mtime_ns for p in files] == stamps  # nothing replayed

    params = np.asarray(load_search(searched_run)["best_params"]) * 0.5
    changed = Contender(cma.name, "agent", dict(
        run_dir=str(searched_run), params=tuple(params.tolist())))
    compare_controllers(searched_run, [changed], seeds, 1, LIMIT, progress=False)
    assert files[0].name == "cma_es_in_the_dream.json"
    assert files[0].stat().st_mtime_ns != stamps[0]  # another controller: replayed


def test_bad_comparisons_are_refused(searched_run, tmp_path):
    zero = baseline_contenders(searched_run)[0]
    with pytest.raises(ValueError, match="must differ"):
        compare_controllers(searched_run, [zero, zero], range(2), 1, LIMIT,
                            progress=False)
    with pytest.raises(ValueError, match="test seeds"):
        compare_controllers(searched_run, [zero], range(10**8, 10**8 + 2), 1, LIMIT,
                            progress=False)
    with pytest.raises(FileNotFoundError, match="summary.json"):
        model_free_contender(tmp_path)


def test_an_earlier_evaluation_is_adopted_only_if_its_seeds_replay(searched_run):
    zero = baseline_contenders(searched_run)[0]
    seeds = range(6, 9)
    report = evaluate_run(searched_run, name="zero_earlier", policy="zero",
                          episodes=3, seed=6, workers=1, max_steps=LIMIT,
                          progress=False)
    path = searched_run / "eval" / "zero_earlier.json"
    tampered = dict(report, results=[dict(r) for r in report["results"]])
    tampered["results"][0]["return"] += 1.0
    bad = searched_run / "eval" / "tampered.json"
    bad.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="does not replay"):
        compare_controllers(searched_run, [zero], seeds, 1, LIMIT, progress=False,
                            evaluations={zero.name: bad}, verify=1)
    with pytest.raises(ValueError, match="not played on seeds"):
        compare_controllers(searched_run, [zero], range(6, 8), 1, LIMIT,
                            progress=False, evaluations={zero.name: path})
    with pytest.raises(ValueError, match="no contender"):
        compare_controllers(searched_run, [zero], seeds, 1, LIMIT, progress=False,
                            evaluations={"nobody": path})
    rows, _ = compare_controllers(searched_run, [zero], seeds, 1, LIMIT,
                                  progress=False, evaluations={zero.name: path})
    assert rows[0]["mean"] == pytest.approx(report["mean"])
    cached = json.loads(
        (searched_run / "eval" / "compare" / "zero_controller.json").read_text())
    assert cached["adopted_from"] == str(path)
    assert cached["results"] == report["results"]
