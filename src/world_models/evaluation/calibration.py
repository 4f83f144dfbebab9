"""How well M's dream predicts reality: the dream's estimate beside the real score.

At every real check evolve.py logs, for the CMA mean, its dream return over many dreams
(``dream_estimate`` ± ``dream_estimate_std``) and its real return on the selection seeds
(``real_score`` ± ``real_std``). A dream that ranks controllers as reality does is what
the search needs; a rank correlation near zero or below means C is exploiting M.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from world_models.logs import METRICS_FILENAME, read_metrics
from world_models.stats import spearman

PLOT_NAME = "calibration.png"
# M's validation of its reward and termination heads, shown when train_rnn logs them.
HEAD_METRICS = (
    "val_return_pred_mean",
    "val_return_true_mean",
    "val_return_corr",
    "val_return_ratio",
    "val_done_auroc",
)


@dataclass(frozen=True)
class Check:
    search: str  # the folder: dream, or dream_roundK set aside by a later round
    generation: int
    dream_estimate: float
    dream_estimate_std: float
    real_score: float
    real_std: float


def search_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """dream_round0, dream_round1, ... (earlier searches set aside), then dream."""
    run_dir = Path(run_dir)
    aside = [p for p in run_dir.glob("dream_round*")
             if p.is_dir() and re.fullmatch(r"dream_round\d+", p.name)]
    aside.sort(key=lambda p: int(p.name.removeprefix("dream_round")))
    current = run_dir / "dream"
    return aside + ([current] if current.is_dir() else [])


def read_checks(run_dir: str | os.PathLike) -> list[Check]:
    """Every real check of every search, in order; a missing value is NaN."""
    checks = []
    for folder in search_dirs(run_dir):
        for row in read_metrics(folder / METRICS_FILENAME):
            if "real_score" not in row:
                continue
            checks.append(Check(
                folder.name,
                int(row["step"]),
                row.get("dream_estimate", math.nan),
                row.get("dream_estimate_std", math.nan),
                row["real_score"],
                row.get("real_std", math.nan),
            ))
    return checks


def check_correlation(checks: list[Check]) -> tuple[float, int]:
    """Spearman ρ of dream estimate vs real score over the checks having both; n."""
    pairs = [(c.dream_estimate, c.real_score) for c in checks
             if math.isfinite(c.dream_estimate) and math.isfinite(c.real_score)]
    if not pairs:
        return math.nan, 0
    x, y = zip(*pairs)
    return spearman(x, y), len(pairs)


def plot_calibration(checks: list[Check], out_png: str | os.PathLike) -> None:
    """Dream estimate (x) vs real score (y), one point per check coloured by generation
    (one marker per search), each side's std as error bars, and the line where the
    dream equals reality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [c.dream_estimate for c in checks]
    y = [c.real_score for c in checks]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.errorbar(x, y, xerr=[c.dream_estimate_std for c in checks],
                yerr=[c.real_std for c in checks], fmt="none", ecolor="0.8", zorder=1)
    searches = list(dict.fromkeys(c.search for c in checks))
    norm = matplotlib.colors.Normalize(min(c.generation for c in checks),
                                       max(c.generation for c in checks))
    for search, marker in zip(searches, "osD^v<>p*h" * len(searches)):
        mine = [c for c in checks if c.search == search]
        points = ax.scatter([c.dream_estimate for c in mine],
                            [c.real_score for c in mine],
                            c=[c.generation for c in mine], cmap="viridis", norm=norm,
                            marker=marker, label=search, zorder=2)
    fig.colorbar(points, ax=ax, label="generation")
    finite = [v for v in x + y if math.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        ax.plot([low, high], [low, high], "--", color="0.5", label="real = dream")
    ax.legend(loc="best")
    rho, n = check_correlation(checks)
    ax.set_xlabel("dream estimate (mean return in M's dream)")
    ax.set_ylabel("real score (mean return on the selection seeds)")
    ax.set_title(f"dream vs real: Spearman ρ = {rho:.2f} over {n} checks")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def write_calibration_plot(run_dir: str | os.PathLike) -> Path | None:
    """dream/calibration.png from every search's checks; None when there is none.

    Left as it is when newer than every search's log, so re-running a finished
    pipeline (which rewrites the report) changes no file outside report.md.
    """
    folder = Path(run_dir) / "dream"
    path = folder / PLOT_NAME
    logs = [d / METRICS_FILENAME for d in search_dirs(run_dir)
            if (d / METRICS_FILENAME).exists()]
    if path.exists() and all(
        log.stat().st_mtime_ns <= path.stat().st_mtime_ns for log in logs
    ):
        return path
    checks = read_checks(run_dir)
    if not checks or not folder.is_dir():
        return None
    plot_calibration(checks, path)
    return path


def _pm(mean: float, std: float) -> str:
    return "–" if not math.isfinite(mean) else f"{mean:.1f} ± {std:.1f}"


def head_metrics(run_dir: str | os.PathLike) -> tuple[dict[str, float], int]:
    """Latest value of each of M's head metrics logged in rnn/; the last such step."""
    latest: dict[str, float] = {}
    step = -1
    for row in read_metrics(Path(run_dir) / "rnn" / METRICS_FILENAME):
        found = {k: row[k] for k in HEAD_METRICS if k in row}
        if found:
            latest.update(found)
            step = int(row["step"])
    return latest, step


def calibration_section(run_dir: str | os.PathLike) -> list[str]:
    """Markdown lines of the report's "Dream vs real (calibration)" section."""
    run_dir = Path(run_dir)
    checks = read_checks(run_dir)
    heads, step = head_metrics(run_dir)
    if not checks and not heads:
        return []
    lines = ["## Dream vs real (calibration)", ""]
    if checks:
        lines += [("At each real check, the CMA mean's return in M's dream (mean ± "
                   "std over its dreams) and in the real env (mean ± std over the "
                   "selection seeds, which are not the test seeds)."), "",
                  "| search | generation | dream estimate | real score |",
                  "|---|---|---|---|"]
        lines += [f"| {c.search} | {c.generation} | "
                  f"{_pm(c.dream_estimate, c.dream_estimate_std)} | "
                  f"{_pm(c.real_score, c.real_std)} |" for c in checks]
        rho, n = check_correlation(checks)
        lines += ["", f"Spearman rank correlation of dream estimate and real score "
                  f"over {n} checks: ρ = {rho:.3f}"
                  + (" (undefined below 3 checks or without spread)"
                     if math.isnan(rho) else "") + ".", ""]
        if (run_dir / "dream" / PLOT_NAME).exists():
            lines += [f"![calibration](dream/{PLOT_NAME})", ""]
    if heads:
        values = ", ".join(f"{k} {heads[k]:.4g}" for k in HEAD_METRICS if k in heads)
        lines += [(f"M's reward and termination heads (validation, step {step}): "
                   f"{values}."), ""]
    return lines
