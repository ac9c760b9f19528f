"""Confidence intervals, on SciPy: bootstrap (plain, by cluster, stratified AUC), binomial.

Every interval in the library comes from here:

* :func:`bootstrap_ci` - percentile bootstrap of a statistic of per-image values
  (``scipy.stats.bootstrap``);
* :func:`cluster_bootstrap_ci` - the mean of per-item values when items come in clusters
  (copies of one radiograph), resampling whole clusters;
* :func:`auc_bootstrap_ci` - ROC AUC with cases resampled within each class;
* :func:`spearman_ci` - Spearman rank correlation of paired values, pairs resampled;
* :func:`binomial_ci` - Wilson interval of a proportion
  (``scipy.stats.binomtest(...).proportion_ci``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats as _scipy

__all__ = ["bootstrap_ci", "cluster_bootstrap_ci", "auc_bootstrap_ci", "spearman_ci", "binomial_ci"]

#: Resamples computed at once (bounds memory to about ``_BATCH * n`` floats).
_BATCH_CELLS = 2_000_000


def _check(n_boot: int, ci: float) -> None:
    if isinstance(n_boot, bool) or int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _batch(n: int) -> int:
    return max(1, _BATCH_CELLS // max(1, n))


def _accepts_axis(stat: Callable[..., Any], sample: np.ndarray) -> bool:
    try:
        out = np.asarray(stat(np.stack([sample, sample]), axis=-1))
    except TypeError:
        return False
    return out.shape == (2,)


def bootstrap_ci(
    values: Any,
    stat: Callable[..., Any] = np.mean,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile-bootstrap confidence interval of a statistic.

    Parameters
    ----------
    values : array_like, shape (n,)
        Per-image values; ``nan`` entries are dropped.
    stat : callable, default numpy.mean
        Statistic; vectorised (``stat(samples, axis=-1)``) when it accepts ``axis``.
    n_boot : int, default 2000
        Number of bootstrap resamples.
    ci : float, default 0.95
        Coverage of the interval, in ``(0, 1)``.
    seed : int, default 0
        Seed of the resampling (results are reproducible).

    Returns
    -------
    (estimate, low, high) : tuple of float
        ``stat`` of the values and the percentile interval. With one value (or all values
        equal) the interval is that value.

    Raises
    ------
    ValueError
        For no finite values, or bad ``n_boot`` / ``ci``.
    """
    array = np.asarray(values, dtype=float).ravel()
    array = array[~np.isnan(array)]
    if array.size == 0:
        raise ValueError("bootstrap_ci needs at least one non-nan value, got none")
    _check(n_boot, ci)
    estimate = float(stat(array))
    if array.size == 1 or np.all(array == array[0]):
        return estimate, estimate, estimate
    vectorized = _accepts_axis(stat, array)
    result = _scipy.bootstrap(
        (array,),
        (lambda x, axis=-1: stat(x, axis=axis)) if vectorized else (lambda x: stat(x)),
        n_resamples=int(n_boot),
        confidence_level=ci,
        method="percentile",
        vectorized=vectorized,
        batch=_batch(array.size),
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return estimate, float(low), float(high)


def _paired_interval(
    samples: tuple[np.ndarray, ...],
    stat: Callable[..., np.ndarray],
    n_boot: int,
    ci: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of a vectorised ``stat`` over arrays resampled together."""
    result = _scipy.bootstrap(
        samples,
        stat,
        paired=True,
        n_resamples=int(n_boot),
        confidence_level=ci,
        method="percentile",
        vectorized=True,
        batch=_batch(samples[0].size),
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def cluster_bootstrap_ci(
    values: Any,
    clusters: Any,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of per-item values with an interval that resamples whole clusters.

    Items of one cluster (augmented copies of one radiograph) are not independent, so
    clusters are drawn with replacement with all their items; the statistic of a
    resample is its items' mean.

    Parameters
    ----------
    values : array_like, shape (n,)
        Per-item values (float).
    clusters : array_like, shape (n,)
        Cluster of each item (any hashable values).
    n_boot, ci, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    (mean, low, high) : tuple of float
        The interval is ``nan`` with fewer than two clusters.
    """
    values = np.asarray(values, dtype=float).ravel()
    clusters = np.asarray(clusters).ravel()
    if values.size == 0 or values.size != clusters.size:
        raise ValueError(
            f"values and clusters must be non-empty and of one length, got {values.size} "
            f"and {clusters.size}"
        )
    _check(n_boot, ci)
    _, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(float)
    mean = float(values.mean())
    if sums.size < 2:
        return mean, float("nan"), float("nan")

    def ratio(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return s.sum(axis=axis) / c.sum(axis=axis)

    low, high = _paired_interval((sums, counts), ratio, n_boot, ci, seed)
    return mean, low, high


def _auc(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mann-Whitney AUC of each resample (ties count one half), vectorised."""
    u = _scipy.mannwhitneyu(positive, negative, axis=axis, method="asymptotic").statistic
    return u / (positive.shape[axis] * negative.shape[axis])


def auc_bootstrap_ci(
    y: Any, scores: Any, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the ROC AUC, resampling cases within each class.

    Parameters
    ----------
    y : array_like of {0, 1}, shape (N,)
        Labels; both classes present.
    scores : array_like, shape (N,) or (R, N)
        Scores; with ``R`` rows (the repeats of a cross-validation) each resample is
        scored on every row and the AUCs averaged.
    n_boot, ci, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    (low, high) : tuple of float
    """
    y = np.asarray(y).ravel()
    rows = np.atleast_2d(np.asarray(scores, dtype=float))
    if rows.shape[-1] != y.size:
        raise ValueError(f"scores have {rows.shape[-1]} cases but y has {y.size}")
    _check(n_boot, ci)
    positive, negative = rows[:, y == 1], rows[:, y == 0]
    if positive.shape[1] == 0 or negative.shape[1] == 0:
        raise ValueError("auc_bootstrap_ci needs both classes in y")

    def mean_auc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
        # SciPy resamples the cases of every row alike and passes (R, batch, n): the AUC
        # of a resample is the mean over the R rows, given back for each row.
        aucs = _auc(pos, neg, axis=axis)
        return np.broadcast_to(aucs.mean(axis=0, keepdims=True), aucs.shape)

    result = _scipy.bootstrap(
        (positive, negative),
        mean_auc,
        n_resamples=int(n_boot),
        confidence_level=ci,
        method="percentile",
        vectorized=True,
        axis=-1,
        batch=_batch(y.size * rows.shape[0]),
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(np.ravel(low)[0]), float(np.ravel(high)[0])


def spearman_ci(
    x: Any,
    y: Any,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Spearman rank correlation of paired values with a percentile-bootstrap interval.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired values (e.g. a quality estimate and the true Dice of each mask); pairs
        with a ``nan`` in either are dropped.
    n_boot, ci, seed
        As in :func:`bootstrap_ci`; whole pairs are resampled.

    Returns
    -------
    (rho, low, high) : tuple of float
        ``nan`` throughout with fewer than three pairs or a constant ``x`` or ``y``.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y must have one length, got {x.size} and {y.size}")
    _check(n_boot, ci)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    nan = float("nan")
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return nan, nan, nan

    def rho(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        ranks_a = _scipy.rankdata(a, axis=axis)
        ranks_b = _scipy.rankdata(b, axis=axis)
        ranks_a = ranks_a - ranks_a.mean(axis=axis, keepdims=True)
        ranks_b = ranks_b - ranks_b.mean(axis=axis, keepdims=True)
        spread = np.sqrt((ranks_a**2).sum(axis=axis) * (ranks_b**2).sum(axis=axis))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ranks_a * ranks_b).sum(axis=axis) / spread

    low, high = _paired_interval((x, y), rho, n_boot, ci, seed)
    return float(rho(x, y)), low, high


def binomial_ci(successes: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``.

    Parameters
    ----------
    successes : int
        Count in ``[0, n]``.
    n : int
        Trials (images), ``>= 1``.
    ci : float, default 0.95

    Returns
    -------
    (low, high) : tuple of float
    """
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    interval = _scipy.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=ci, method="wilson"
    )
    return float(interval.low), float(interval.high)
