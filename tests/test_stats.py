"""Tests for cxrlib.stats: intervals that cover, shrink with n, and fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrlib import stats


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.9, 0.05, 20), rng.normal(0.9, 0.05, 2000)
    est_s, low_s, high_s = stats.bootstrap_ci(small)
    est_l, low_l, high_l = stats.bootstrap_ci(large)
    assert low_s <= est_s <= high_s and low_l <= est_l <= high_l
    assert est_s == pytest.approx(small.mean())
    assert (high_l - low_l) < (high_s - low_s) / 3
    assert stats.bootstrap_ci(small, seed=1) != stats.bootstrap_ci(small, seed=2)
    assert stats.bootstrap_ci(small, seed=1) == stats.bootstrap_ci(small, seed=1)


def test_bootstrap_ci_takes_any_statistic_and_drops_nan():
    values = np.array([1.0, 2.0, np.nan, 3.0, 10.0])
    est, low, high = stats.bootstrap_ci(values, np.median, n_boot=500)
    assert est == 2.5 and low <= est <= high
    est, low, high = stats.bootstrap_ci(values, lambda x: float(np.max(x)), n_boot=200)
    assert est == 10.0 and high == 10.0
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError, match="non-nan"):
        stats.bootstrap_ci([np.nan])
    with pytest.raises(ValueError, match="ci"):
        stats.bootstrap_ci([1.0, 2.0], ci=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_ci([1.0, 2.0], n_boot=0)


def test_cluster_bootstrap_is_wider_than_treating_copies_as_independent():
    rng = np.random.default_rng(1)
    per_radiograph = rng.normal(0.9, 0.05, 30)
    values = np.repeat(per_radiograph, 8) + rng.normal(0, 0.001, 240)  # 8 near-copies each
    clusters = np.repeat(np.arange(30), 8)
    mean, low, high = stats.cluster_bootstrap_ci(values, clusters)
    _, naive_low, naive_high = stats.bootstrap_ci(values)
    assert low <= mean <= high
    assert (high - low) > 2 * (naive_high - naive_low)
    assert np.isnan(stats.cluster_bootstrap_ci([0.5, 0.6], ["a", "a"])[1])
    with pytest.raises(ValueError, match="one length"):
        stats.cluster_bootstrap_ci([0.5], ["a", "b"])


def test_auc_interval_brackets_the_auc_and_averages_repeats():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    scores = y * 0.8 + rng.random(300)
    low, high = stats.auc_bootstrap_ci(y, scores, n_boot=500)
    assert low <= roc_auc_score(y, scores) <= high and high - low < 0.1
    rows = np.stack([scores, scores + rng.random(300), rng.random(300)])
    mean_auc = np.mean([roc_auc_score(y, r) for r in rows])
    low, high = stats.auc_bootstrap_ci(y, rows, n_boot=500)
    assert low <= mean_auc <= high
    with pytest.raises(ValueError, match="both classes"):
        stats.auc_bootstrap_ci(np.ones(5), np.arange(5.0))


def test_binomial_ci_is_wilson():
    low, high = stats.binomial_ci(45, 50)
    p, n, z = 0.9, 50, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert stats.binomial_ci(0, 10)[0] == 0.0 and stats.binomial_ci(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        stats.binomial_ci(11, 10)


def test_spearman_ci_matches_scipy_and_brackets_it():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(5)
    x = rng.random(80)
    y = x + rng.normal(0, 0.3, 80)
    y[[3, 9]] = y[4]  # ties
    rho, low, high = stats.spearman_ci(x, y)
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    assert low < rho < high and high - low < 0.4
    wide = stats.spearman_ci(x[:20], y[:20])
    assert wide[2] - wide[1] > high - low


def test_spearman_ci_drops_nan_pairs_and_gives_nan_for_constants():
    x, y = np.array([1.0, 2.0, np.nan, 4.0, 5.0]), np.array([1.0, 3.0, 2.0, 2.5, 6.0])
    assert stats.spearman_ci(x, y)[0] == pytest.approx(0.8)
    assert np.isnan(stats.spearman_ci(np.ones(5), y)).all()
    with pytest.raises(ValueError, match="one length"):
        stats.spearman_ci(np.ones(3), np.ones(4))
