"""An ablation table: agents of several runs on the same test seeds, each row paired
with the row before it, beside each run's dream-vs-real calibration.

Each entry is (label, run directory, eval name); its scores come from
``RUN/eval/NAME.json`` and its checks from the run's dream logs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from world_models.evaluation.calibration import check_correlation, read_checks
from world_models.pipeline.report import eval_results
from world_models.stats import paired_difference, summarize


def _results(run_dir: Path, eval_name: str) -> list[dict[str, Any]]:
    results = eval_results(run_dir, eval_name)
    if results is None:
        raise FileNotFoundError(
            f"no evaluation {run_dir / 'eval' / eval_name}.json; "
            f"run evaluate_agent.py --run {run_dir}"
        )
    return results


def ablation_rows(entries: list[tuple[str, Path, str]]) -> list[dict[str, Any]]:
    """One row per entry: score summary, paired difference to the previous row, the
    Spearman ρ of dream estimate vs real score over the run's checks."""
    rows, previous = [], None
    for label, run_dir, eval_name in entries:
        results = _results(Path(run_dir), eval_name)
        summary = summarize(r["return"] for r in results)
        rho, checks = check_correlation(read_checks(run_dir))
        row = dict(label=label, run=str(run_dir), mean=summary.mean, std=summary.std,
                   sem=summary.sem, n=summary.n, rho=rho, checks=checks)
        if previous is not None:
            diff = paired_difference(results, previous)
            row.update(diff_mean=diff.mean, diff_sem=diff.sem, diff_t=diff.t)
        rows.append(row)
        previous = results
    return rows


def ablation_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | test return, mean ± std | SE | paired Δ to the row above "
             "(± SE, t) | dream-vs-real ρ (checks) |", "|---|---|---|---|---|"]
    for row in rows:
        diff = (f"{row['diff_mean']:+.1f} ± {row['diff_sem']:.1f} "
                f"(t = {row['diff_t']:.2f})" if "diff_mean" in row else "–")
        rho = "–" if math.isnan(row["rho"]) else f"{row['rho']:.2f} ({row['checks']})"
        lines.append(f"| {row['label']} | {row['mean']:.1f} ± {row['std']:.1f} "
                     f"(n={row['n']}) | {row['sem']:.1f} | {diff} | {rho} |")
    return "\n".join(lines) + "\n"
