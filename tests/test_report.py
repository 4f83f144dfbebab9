"""report.md from a run directory written on disk as the stages write it."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats as scipy_stats

from world_models.config import make_config
from world_models.logs import MetricsLogger
from world_models.pipeline.markers import marker_path
from world_models.pipeline.report import render_report, write_report
from world_models.run_directory import init_run

HEADS = dict(val_return_pred_mean=12.5, val_return_true_mean=20.25,
             val_return_corr=0.625, val_return_ratio=0.5, val_done_auroc=0.875)


def _marker(run_dir, k, stage, summary):
    path = marker_path(run_dir, k, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"stage": stage, "round": k, "seconds": 1.5, "summary": summary}))


def _eval(run_dir, name, seeds, returns):
    returns = np.asarray(returns, np.float64)
    results = [{"seed": int(s), "return": float(r), "length": 10, "terminated": False}
               for s, r in zip(seeds, returns)]
    report = dict(name=name, policy=name, env_id="CarRacing-v3", max_steps=10,
                  episodes=len(results), mean=float(returns.mean()),
                  std=float(returns.std()), min=float(returns.min()),
                  max=float(returns.max()), results=results)
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / f"{name}.json").write_text(json.dumps(report))
    return {key: report[key] for key in ("mean", "std", "episodes")}


def _checks(folder, checks, generations_per_check=2):
    logger = MetricsLogger(folder, tensorboard=False)
    for generation, estimate, real in checks:
        for g in range(generation - generations_per_check + 1, generation + 1):
            logger.log(g, dream_best=estimate + 5, dream_mean=estimate,
                       dream_worst=estimate - 5, dream_length=8, sigma=0.1)
        logger.log(generation, real_score=real, real_std=3.0,
                   dream_estimate=estimate, dream_estimate_std=2.0)
    logger.close()


@pytest.fixture
def run(tmp_path):
    """Two rounds: per-seed eval results, round 1's listed in another seed order."""
    run_dir = tmp_path / "run"
    config = init_run(run_dir, make_config("smoke", overrides=["eval.episodes=6"]))
    seeds = np.arange(config.eval.seed, config.eval.seed + 6)
    rng = np.random.default_rng(3)
    r0 = rng.normal(100, 40, 6).round(2)
    r1 = (r0 + rng.normal(30, 20, 6)).round(2)
    order = rng.permutation(6)
    summary0 = dict(agent=_eval(run_dir, "round0_agent", seeds, r0),
                    brownian=_eval(run_dir, "brownian", seeds, rng.normal(-50, 9, 6)),
                    zero=_eval(run_dir, "zero", seeds, rng.normal(-30, 7, 6)))
    summary1 = dict(agent=_eval(run_dir, "round1_agent", seeds[order], r1[order]))
    for k, summary in ((0, summary0), (1, summary1)):
        _marker(run_dir, k, "dream", dict(best_generation=2 * (k + 1),
                                          best_real_score=50.0 + k))
        _marker(run_dir, k, "test", summary)
    # round 0's search set aside, then round 1's; ties in the dream estimates
    aside = [(2, 10.0, 40.0), (4, 30.0, 35.0), (6, 30.0, 60.0)]
    current = [(2, 20.0, 45.0), (4, 50.0, 20.0)]
    _checks(run_dir / "dream_round0", aside)
    _checks(run_dir / "dream", current)
    return dict(run_dir=run_dir, r0=r0, r1=r1, checks=aside + current)


def test_report_shows_standard_errors_paired_differences_and_calibration(run):
    run_dir, r0, r1 = run["run_dir"], run["r0"], run["r1"]
    path = write_report(run_dir)
    report = path.read_text()

    assert ("over the same 6 seeded episodes (seeds 10000..10005; "
            "baselines on the first 6 of them)") in report
    se0 = r0.std(ddof=1) / math.sqrt(len(r0))
    assert f"| 0 | {r0.mean():.1f} ± {r0.std():.1f} (SE {se0:.1f}, n=6) |" in report
    se1 = r1.std(ddof=1) / math.sqrt(len(r1))
    assert f"| 1 | {r1.mean():.1f} ± {r1.std():.1f} (SE {se1:.1f}, n=6) |" in report

    diff = r1 - r0
    t = scipy_stats.ttest_rel(r1, r0).statistic
    sem = diff.std(ddof=1) / math.sqrt(len(diff))
    assert f"| 1 − 0 | {diff.mean():+.1f} | {sem:.1f} | {t:+.2f} | 6 |" in report

    assert "## Dream vs real (calibration)" in report
    assert "| dream_round0 | 6 | 30.0 ± 2.0 | 60.0 ± 3.0 |" in report
    assert "| dream | 4 | 50.0 ± 2.0 | 20.0 ± 3.0 |" in report
    estimates, reals = zip(*[(e, r) for _, e, r in run["checks"]])
    rho = scipy_stats.spearmanr(estimates, reals).statistic
    assert f"over 5 checks: ρ = {rho:.3f}." in report
    assert "![calibration](dream/calibration.png)" in report
    assert report.count("calibration.png") == 1  # not again among the dream curves
    assert (run_dir / "dream" / "calibration.png").stat().st_size > 5000
    assert "M's reward and termination heads" not in report
    assert "## Final check" not in report  # the search kept its best check


def test_report_shows_each_finalist_and_the_one_kept(run):
    run_dir = run["run_dir"]
    finalists = [dict(generation=2, check_score=61.0, final_score=40.5, final_std=9.0),
                 dict(generation=4, check_score=55.0, final_score=47.5, final_std=8.0)]
    (run_dir / "dream" / "finalists.json").write_text(json.dumps({"4": dict(
        seeds=[100998000, 100998015], kept_generation=4, finalists=finalists)}))
    report = render_report(run_dir)
    assert "## Final check" in report
    assert "| 4 | 2 | 61.0 | 40.5 ± 9.0 | 100998000..100998015 |" in report
    assert "| 4 | 4 (kept) | 55.0 | 47.5 ± 8.0 | 100998000..100998015 |" in report
    assert "ended early" not in report
    assert "action noise" not in report
    record = json.loads((run_dir / "dream" / "finalists.json").read_text())
    record["4"].update(kept_noise=0.05, noise_levels=[
        dict(noise=0.1, final_score=47.5, final_std=8.0, real_steps=0),
        dict(noise=0.05, final_score=52.0, final_std=7.0, real_steps=60)])
    (run_dir / "dream" / "finalists.json").write_text(json.dumps(record))
    report = render_report(run_dir)
    assert "| 0.1 | 47.5 ± 8.0 |" in report and "| 0.05 (kept) | 52.0 ± 7.0 |" in report
    assert "other finalists" not in report
    record["4"]["other_levels"] = [
        dict(generation=2, noise=0.05, final_score=49.5, final_std=6.0, real_steps=60)]
    (run_dir / "dream" / "finalists.json").write_text(json.dumps(record))
    report = render_report(run_dir)
    assert "the other finalists played the block at each level too" in report
    assert "| 2 | 0.05 | 49.5 ± 6.0 |" in report
    record["4"]["stalled"] = True
    (run_dir / "dream" / "finalists.json").write_text(json.dumps(record))
    settings = json.loads((run_dir / "config.json").read_text())
    settings["dream"]["patience"] = 2
    (run_dir / "config.json").write_text(json.dumps(settings))
    assert "ended early at generation 4: 2 checks in a row" in render_report(run_dir)


def test_report_shows_the_heads_of_m_when_logged(run):
    run_dir = run["run_dir"]
    logger = MetricsLogger(run_dir / "rnn", tensorboard=False)
    logger.log(4, train_loss=1.0)
    logger.log(5, val_nll=0.5, **HEADS)
    logger.close()
    report = render_report(run_dir)
    assert ("M's reward and termination heads (validation, step 5): "
            "val_return_pred_mean 12.5, val_return_true_mean 20.25, "
            "val_return_corr 0.625, val_return_ratio 0.5, "
            "val_done_auroc 0.875.") in report


def test_calibration_plot_is_redrawn_only_when_a_log_changed(run):
    run_dir = run["run_dir"]
    plot = run_dir / "dream" / "calibration.png"
    write_report(run_dir)
    drawn = plot.stat().st_mtime_ns
    write_report(run_dir)  # a re-run of a finished pipeline leaves it alone
    assert plot.stat().st_mtime_ns == drawn
    log = run_dir / "dream_round0" / "metrics.jsonl"
    os.utime(log, ns=(drawn + 10**9, drawn + 10**9))
    write_report(run_dir)
    assert plot.stat().st_mtime_ns > drawn


def test_rounds_on_other_seeds_are_not_paired(run):
    run_dir = run["run_dir"]
    saved = json.loads((run_dir / "eval" / "round1_agent.json").read_text())
    saved["results"][0]["seed"] = 42
    (run_dir / "eval" / "round1_agent.json").write_text(json.dumps(saved))
    report = render_report(run_dir)
    assert "| 1 − 0 | not paired: seed sets differ: only in a [42]" in report


def test_report_without_checks_has_no_calibration_section(tmp_path):
    run_dir = tmp_path / "run"
    init_run(run_dir, make_config("smoke"))
    write_report(run_dir)
    report = (run_dir / "report.md").read_text()
    assert "Dream vs real" not in report and not (run_dir / "dream").exists()


def test_ablation_rows_pair_each_run_with_the_one_before(tmp_path):
    from world_models.evaluation.ablation import ablation_markdown, ablation_rows

    seeds = np.arange(10_000, 10_008)
    rng = np.random.default_rng(5)
    base = rng.normal(300, 100, 8).round(2)
    runs = {}
    for name, returns in (("a", base), ("b", base + rng.normal(50, 10, 8).round(2))):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        _eval(runs[name], "agent", seeds, returns)
    _checks(runs["b"] / "dream", [(2, 10.0, 100.0), (4, 20.0, 90.0), (6, 30.0, 300.0)])
    rows = ablation_rows([("A", runs["a"], "agent"), ("B", runs["b"], "agent")])
    b_returns = [r["return"] for r in
                 json.loads((runs["b"] / "eval" / "agent.json").read_text())["results"]]
    t = scipy_stats.ttest_rel(b_returns, base).statistic
    assert rows[1]["diff_t"] == pytest.approx(t)
    assert rows[1]["diff_mean"] == pytest.approx(np.mean(b_returns) - base.mean())
    assert rows[1]["rho"] == pytest.approx(0.5) and rows[1]["checks"] == 3
    assert math.isnan(rows[0]["rho"]) and "diff_mean" not in rows[0]
    table = ablation_markdown(rows)
    assert f"(t = {t:.2f})" in table and table.count("\n") == 4


def test_report_says_when_the_agent_drives_with_a_speed_governor(run):
    run_dir = run["run_dir"]
    assert "speed governor" not in render_report(run_dir)
    governed = ["eval.episodes=6", "dream.speed_limit=44"]
    init_run(run_dir, make_config("smoke", overrides=governed), fresh=True)
    assert "no gas while the dashboard shows more than 44 " in render_report(run_dir)
