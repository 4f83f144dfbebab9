import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from world_models.stats import paired_difference, spearman, summarize


def _results(seeds, returns):
    return [{"seed": s, "return": r, "length": 10, "terminated": False}
            for s, r in zip(seeds, returns)]


def test_summarize_by_hand_and_against_numpy():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(math.sqrt(1.25))  # ddof=0, as evaluate.py
    assert s.sem == pytest.approx(math.sqrt(5 / 3) / 2)  # ddof=1 std / sqrt(n)
    values = np.random.default_rng(1).normal(3, 2, size=37)
    s = summarize(values)
    assert s.sem == pytest.approx(scipy_stats.sem(values))
    assert s.std == pytest.approx(values.std())
    assert math.isnan(summarize([5.0]).sem)
    with pytest.raises(ValueError):
        summarize([])


def test_paired_difference_matches_by_seed_by_hand():
    a = _results([1, 2, 3], [10.0, 20.0, 30.0])
    b = _results([3, 1, 2], [25.0, 8.0, 21.0])  # other order: pairing is by seed
    d = paired_difference(a, b)  # differences 2, -1, 5
    assert d.n == 3 and d.mean == pytest.approx(2.0)
    assert d.sem == pytest.approx(math.sqrt(3.0))  # sd 3 over sqrt(3)
    assert d.t == pytest.approx(2 / math.sqrt(3.0))


def test_paired_difference_against_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    seeds = list(range(10000, 10025))
    a_returns, b_returns = rng.normal(400, 200, 25), rng.normal(350, 150, 25)
    order = rng.permutation(25)
    d = paired_difference(
        _results(seeds, a_returns),
        _results([seeds[i] for i in order], b_returns[order]),
    )
    expected = scipy_stats.ttest_rel(a_returns, b_returns)
    assert d.t == pytest.approx(expected.statistic)
    assert d.mean == pytest.approx((a_returns - b_returns).mean())
    assert d.sem == pytest.approx(scipy_stats.sem(a_returns - b_returns))


def test_paired_difference_refuses_other_seeds_and_names_them():
    a = _results([1, 2, 3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"only in a \[3\], only in b \[4\]"):
        paired_difference(a, _results([1, 2, 4], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="seed 2 more than once"):
        paired_difference(a, _results([1, 2, 2], [1.0, 2.0, 3.0]))


def test_paired_difference_without_spread():
    a = _results([1, 2], [3.0, 4.0])
    assert paired_difference(a, _results([1, 2], [1.0, 2.0])).t == math.inf
    assert math.isnan(paired_difference(a, a).t)


def test_spearman_by_hand_with_ties():
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 4], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_spearman_against_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(2)
    for size in (3, 7, 40):
        x = rng.integers(0, 5, size).astype(float)  # many ties
        y = rng.normal(size=size)
        if np.ptp(x) == 0:
            continue
        expected = scipy_stats.spearmanr(x, y).statistic
        assert spearman(x, y) == pytest.approx(expected)


def test_spearman_undefined_cases_are_nan():
    assert math.isnan(spearman([1, 2], [2, 1]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1, float("nan"), 3], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])
