"""Small statistics for scores over seeded episodes (numpy only).

Returns of one policy over seeds s..s+n-1 are i.i.d. draws, so their mean has a
standard error; two policies played on the same seeds are compared per seed (a paired
difference), which removes the variance the tracks themselves put into both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # population std (ddof=0), as evaluation.real.summarize_returns gives it
    sem: float  # standard error of the mean: std with ddof=1 over sqrt(n)
    n: int


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over seeds of a - b
    sem: float  # std (ddof=1) of the per-seed differences over sqrt(n)
    t: float  # mean / sem, the paired t statistic with n - 1 degrees of freedom
    n: int


def summarize(returns: Iterable[float]) -> Summary:
    """Mean, population std (ddof=0, as evaluation/real.py and dream/evolve.py write
    it), standard error of the mean (ddof=1 std / sqrt(n); NaN for one value) and n."""
    values = np.asarray(list(returns), np.float64)
    if values.size == 0:
        raise ValueError("summarize needs at least one return")
    n = values.size
    sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Summary(float(values.mean()), float(values.std()), sem, n)


def _by_seed(results: Sequence[dict[str, Any]], name: str) -> dict[int, float]:
    returns: dict[int, float] = {}
    for result in results:
        seed = int(result["seed"])
        if seed in returns:
            raise ValueError(f"{name} has seed {seed} more than once")
        returns[seed] = float(result["return"])
    return returns


def paired_difference(
    a_results: Sequence[dict[str, Any]], b_results: Sequence[dict[str, Any]]
) -> PairedDifference:
    """a - b matched by seed, from eval JSON ``results`` entries ({"seed", "return"}).

    Raises ValueError naming the seeds when the two seed sets differ: an unmatched
    episode would make the comparison unpaired.
    """
    a, b = _by_seed(a_results, "a"), _by_seed(b_results, "b")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(
            f"seed sets differ: only in a {only_a}, only in b {only_b}"
        )
    if not a:
        raise ValueError("paired_difference needs at least one seed")
    seeds = sorted(a)
    diff = np.array([a[s] - b[s] for s in seeds], np.float64)
    n = diff.size
    mean = float(diff.mean())
    sem = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if math.isnan(sem) or (sem == 0 and mean == 0):
        t = math.nan
    elif sem == 0:
        t = math.copysign(math.inf, mean)
    else:
        t = mean / sem
    return PairedDifference(mean, sem, t, n)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size]  # exclusive
    ranks = np.empty(values.size, np.float64)
    ranks[order] = ((starts + 1 + ends) / 2)[group]
    return ranks


def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    """Spearman rank correlation, ties given their average rank.

    NaN for fewer than 3 points, for any NaN in the input, or when either side is
    constant (no ranking to correlate).
    """
    x = np.asarray(list(x), np.float64)
    y = np.asarray(list(y), np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-d sequences of one length: "
                         f"{x.shape} and {y.shape}")
    if x.size < 3 or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    rx = _average_ranks(x) - (x.size + 1) / 2
    ry = _average_ranks(y) - (y.size + 1) / 2
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    if denominator == 0:
        return math.nan
    return float((rx * ry).sum() / denominator)
