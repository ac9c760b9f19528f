"""Calibrated TB probabilities: :class:`InnerCalibrated`, Brier scores and reliability tables.

A classifier's probability is *calibrated* when, of the radiographs it gives 0.8, about 80 %
have TB. Penalised or boosted classifiers, or one trained on another site, are often not.

* :class:`InnerCalibrated` -- wraps any classifier with ``predict_proba``: an inner
  stratified cross-validation **on the training data it is fitted on** gives out-of-fold
  scores, a calibrator (Platt's sigmoid or isotonic regression) is fitted on them, and the
  classifier is refitted on all the training data (the ``ensemble=False`` procedure of
  :class:`sklearn.calibration.CalibratedClassifierCV`). The inner out-of-fold calibrated
  probabilities are kept (:attr:`InnerCalibrated.oof_proba_`): thresholds are chosen on
  them (:mod:`cxrlib.tb.operating`) without a second inner cross-validation.
* :func:`brier_table` -- the Brier score (mean squared error of the probability) per site
  and overall, with a percentile-bootstrap interval (:func:`cxrlib.stats.bootstrap_ci`).
* :func:`reliability_table` -- binned mean predicted probability against the observed
  fraction of TB, with counts and Wilson intervals, per site: the data of a reliability
  diagram.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from cxrlib.stats import binomial_ci, bootstrap_ci
from cxrlib.tb.classifiers import ClassifierError, check_features, check_labels

__all__ = [
    "CALIBRATIONS",
    "InnerCalibrated",
    "brier_table",
    "check_calibration",
    "reliability_table",
]

#: Calibration methods: Platt's sigmoid, isotonic regression, or none (identity).
CALIBRATIONS = ("sigmoid", "isotonic", "none")

_EPS = 1e-15


def check_calibration(method: Any) -> str:
    """Return ``method`` as one of :data:`CALIBRATIONS` or raise ValueError."""
    name = str(method).strip().lower()
    if name not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {list(CALIBRATIONS)}, got {method!r}")
    return name


def _score(proba: np.ndarray) -> np.ndarray:
    """The log-odds of TB probabilities (the decision function of a logistic model)."""
    return logit(np.clip(np.asarray(proba, np.float64), _EPS, 1.0 - _EPS))


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of ``p = expit(a * s + b)`` fitted as Platt (2000) does.

    The targets are Platt's smoothed labels ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``
    (as :func:`sklearn.calibration.CalibratedClassifierCV` uses), so a perfectly
    separated training set gives a finite slope.
    """
    n_pos = float(np.sum(y == 1))
    n_neg = float(y.size - n_pos)
    target = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = max(1.0, float(np.max(np.abs(scores))))
    s = scores / scale

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * s + ab[1]
        # binary cross-entropy of expit(z) against the smoothed targets, and its gradient
        value = np.sum(np.logaddexp(0.0, z) - target * z)
        residual = expit(z) - target
        return float(value), np.array([residual @ s, residual.sum()])

    start = np.array([1.0, float(np.log((n_pos + 1.0) / (n_neg + 1.0)))])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-8})
    return float(result.x[0] / scale), float(result.x[1])


class InnerCalibrated(ClassifierMixin, BaseEstimator):
    """A classifier calibrated on the out-of-fold scores of an inner cross-validation.

    :meth:`fit` (on the training data only):

    1. out-of-fold TB probabilities of ``estimator`` by an inner stratified
       ``inner_splits``-fold cross-validation (shuffled, seeded by ``seed``);
    2. a calibrator fitted on their log-odds: ``"sigmoid"`` (Platt: a logistic
       regression on the log-odds), ``"isotonic"`` (a non-decreasing step function,
       clipped to [0, 1]) or ``"none"`` (identity);
    3. ``estimator`` refitted on all the training data.

    ``predict_proba`` applies the calibrator to the refitted classifier's probabilities.

    Parameters
    ----------
    estimator : sklearn classifier
        With ``predict_proba``; cloned for every fit (e.g.
        :func:`cxrlib.tb.classifiers.make_classifier`).
    method : {"sigmoid", "isotonic", "none"}, default "sigmoid"
    inner_splits : int, default 5
        Folds of the inner cross-validation (at least 2).
    seed : int, default 0
        Seed of the inner folds.

    Attributes
    ----------
    estimator_ : sklearn classifier
        Fitted on all the training data.
    oof_proba_ : numpy.ndarray
        ``float64 (N,)`` calibrated inner out-of-fold TB probability of each
        training sample (the calibrator was fitted on these samples' scores, the
        classifiers that scored them did not see them).
    oof_uncalibrated_ : numpy.ndarray
        ``float64 (N,)`` the same before calibration.
    calibrator_ : tuple or IsotonicRegression or None
        ``(slope, intercept)`` of the sigmoid, the isotonic fit, or None.
    classes_ : numpy.ndarray
        ``[0, 1]``.
    """

    def __init__(
        self,
        estimator: Any = None,
        method: str = "sigmoid",
        inner_splits: int = 5,
        seed: int = 0,
    ) -> None:
        self.estimator = estimator
        self.method = method
        self.inner_splits = inner_splits
        self.seed = seed

    def _calibrate(self, proba: np.ndarray) -> np.ndarray:
        if self.calibrator_ is None:
            return np.asarray(proba, np.float64)
        if isinstance(self.calibrator_, tuple):
            slope, intercept = self.calibrator_
            return expit(slope * _score(proba) + intercept)
        return np.asarray(self.calibrator_.predict(_score(proba)), np.float64)

    def fit(self, X: Any, y: Any) -> InnerCalibrated:
        """Inner cross-validation, calibrator, refit on all of ``X`` (see the class).

        Parameters
        ----------
        X : array_like, shape (N, D)
        y : array_like, shape (N,)
            Labels 0/1, both present, at least ``inner_splits`` of each.

        Returns
        -------
        InnerCalibrated
            ``self``.
        """
        if self.estimator is None:
            raise ClassifierError("InnerCalibrated needs an estimator")
        method = check_calibration(self.method)
        splits = self.inner_splits
        if isinstance(splits, bool) or not isinstance(splits, int | np.integer) or splits < 2:
            raise ClassifierError(f"inner_splits must be an int >= 2, got {splits!r}")
        X = check_features(X, "InnerCalibrated")
        y = check_labels(y, X.shape[0], "InnerCalibrated")
        counts = np.bincount(y, minlength=2)
        if counts.min() < splits:
            raise ValueError(
                f"the inner {splits}-fold cross-validation (calibration and thresholds) needs "
                f"at least {splits} samples of each class (n_splits={splits}), got "
                f"{counts.tolist()} (normal, TB)"
            )
        inner = StratifiedKFold(int(splits), shuffle=True, random_state=int(self.seed))
        oof = cross_val_predict(clone(self.estimator), X, y, cv=inner, method="predict_proba")
        raw = np.asarray(oof, np.float64)[:, 1]
        if method == "sigmoid":
            self.calibrator_: Any = _platt(_score(raw), y)
        elif method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            self.calibrator_ = iso.fit(_score(raw), y.astype(np.float64))
        else:
            self.calibrator_ = None
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.oof_uncalibrated_ = raw
        self.oof_proba_ = self._calibrate(raw)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_uncalibrated(self, X: Any) -> np.ndarray:
        """``float64 (N,)`` TB probability of the refitted classifier, before calibration."""
        if not hasattr(self, "estimator_"):
            raise ClassifierError("InnerCalibrated is not fitted yet: call fit(X, y) first")
        return np.asarray(self.estimator_.predict_proba(X), np.float64)[:, 1]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated class probabilities ``float64 (N, 2)``: ``[:, 1]`` is TB."""
        p = self._calibrate(self.predict_uncalibrated(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """``int64 (N,)``: TB when the calibrated probability is at least 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


# ------------------------------------------------------------------------------ tables


def _inputs(y: Any, p: Any, sites: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold labels 0 (normal) and 1 (TB)")
    p = np.atleast_2d(np.asarray(p, np.float64))
    if p.ndim != 2 or p.shape[1] != y.size:
        raise ValueError(f"p must have shape (N,) or (R, N) with N = {y.size}, got {p.shape}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p must hold probabilities in [0, 1]")
    if sites is None:
        sites = np.full(y.size, "all", dtype=object)
    sites = np.asarray(sites, dtype=object).astype(str)
    if sites.shape != (y.size,):
        raise ValueError(f"sites has {sites.size} values but y has {y.size} labels")
    return y, p, sites


def _groups(sites: np.ndarray) -> list[tuple[str, np.ndarray]]:
    names = sorted(set(sites))
    groups = [(name, sites == name) for name in names if name != "all"]
    return [*groups, ("all", np.ones(sites.size, bool))]


def brier_table(
    y: Any, p: Any, sites: Any = None, *, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> pd.DataFrame:
    """Brier score per site and overall, with percentile-bootstrap intervals.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,) or (R, N)
        TB probabilities; with ``R`` rows (repeats of a cross-validation) the score
        is the mean over the rows (each case's squared error is averaged over the
        repeats, and the cases are resampled).
    sites : array_like, shape (N,), optional
    n_boot, seed, ci
        See :func:`cxrlib.stats.bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``site`` (sorted, then ``"all"``); columns ``n`` (int), ``n_tb``
        (int), ``brier``, ``brier_low``, ``brier_high``, and ``brier_reference``
        (float): the score of always predicting the site's TB prevalence, which a
        useful probability beats.
    """
    y, p, sites = _inputs(y, p, sites)
    errors = np.mean((p - y[None, :]) ** 2, axis=0)
    rows = {}
    for name, keep in _groups(sites):
        brier, low, high = bootstrap_ci(errors[keep], n_boot=n_boot, ci=ci, seed=seed)
        prevalence = float(y[keep].mean())
        rows[name] = {
            "n": int(keep.sum()),
            "n_tb": int(y[keep].sum()),
            "brier": brier,
            "brier_low": low,
            "brier_high": high,
            "brier_reference": prevalence * (1.0 - prevalence),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "site"
    return table


def reliability_table(
    y: Any,
    p: Any,
    sites: Any = None,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    ci: float = 0.95,
) -> pd.DataFrame:
    """Binned predicted probability against the observed fraction of TB, per site.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,)
        TB probabilities.
    sites : array_like, shape (N,), optional
        Site of each case; each site gets its bins, and ``"all"`` the pooled ones.
    n_bins : int, default 10
    strategy : {"uniform", "quantile"}, default "uniform"
        Bins of equal width on [0, 1], or with equal counts (per site).
    ci : float, default 0.95
        Coverage of the Wilson interval of the observed fraction.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``site`` (str), ``bin`` (int), ``bin_low``,
        ``bin_high``, ``count`` (int), ``mean_predicted``, ``observed``,
        ``observed_low``, ``observed_high`` (float). A calibrated classifier has
        ``observed`` close to ``mean_predicted`` in every bin.
    """
    y, p2, sites = _inputs(y, p, sites)
    if p2.shape[0] != 1:
        raise ValueError("reliability_table needs one probability per case, shape (N,)")
    p = p2[0]
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    rows = []
    for name, keep in _groups(sites):
        values, labels = p[keep], y[keep]
        if strategy == "uniform":
            edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
        else:
            edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, int(n_bins) + 1)))
            edges[0], edges[-1] = 0.0, 1.0
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            inside = index == b
            count = int(inside.sum())
            if not count:
                continue
            positive = int(labels[inside].sum())
            low, high = binomial_ci(positive, count, ci=ci)
            rows.append(
                {
                    "site": name,
                    "bin": b,
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "count": count,
                    "mean_predicted": float(values[inside].mean()),
                    "observed": positive / count,
                    "observed_low": low,
                    "observed_high": high,
                }
            )
    columns = ["site", "bin", "bin_low", "bin_high", "count", "mean_predicted", "observed"]
    return pd.DataFrame(rows, columns=[*columns, "observed_low", "observed_high"])
