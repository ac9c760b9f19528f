"""Fitting one TB classifier on a training set: fresh, thread-limited, calibrated when asked.

* :func:`new_classifier` -- an unfitted classifier from a name
  (:func:`cxrlib.tb.classifiers.make_classifier`) or a clone of an estimator;
* :func:`fit_classifier` -- fitted on a training set, wrapped in
  :class:`cxrlib.tb.calibration.InnerCalibrated` when an inner cross-validation is asked
  for (calibration, and inner out-of-fold probabilities to choose thresholds on);
* :func:`limit_blas_threads` -- the BLAS thread limit used while fitting.

:func:`cxrlib.tb.crossval.cross_validate` calls :func:`fit_classifier` in every outer fold,
:func:`cxrlib.tb.train.train_tb` once on all radiographs, :func:`cxrlib.tb.transfer.cross_site`
on one site.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from threadpoolctl import threadpool_limits

from cxrlib.tb.calibration import InnerCalibrated, check_calibration
from cxrlib.tb.classifiers import make_classifier

__all__ = [
    "check_inner",
    "classifier_name",
    "fit_classifier",
    "limit_blas_threads",
    "new_classifier",
]


def limit_blas_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit the BLAS thread pools while fitting (None: leave them alone)."""
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"blas_threads must be a positive int or None, got {threads!r}")
    return threadpool_limits(limits=int(threads), user_api="blas")


def new_classifier(classifier: str | BaseEstimator, seed: int, params: Mapping | None) -> Any:
    """A fresh, unfitted classifier: :func:`make_classifier` of a name, or a clone."""
    if isinstance(classifier, str):
        return make_classifier(classifier, seed=seed, **dict(params or {}))
    if params:
        return clone(classifier).set_params(**params)
    return clone(classifier)


def classifier_name(classifier: str | BaseEstimator) -> str:
    """The name of a classifier: the string itself, or the estimator's class name."""
    return classifier if isinstance(classifier, str) else type(classifier).__name__


def check_inner(calibration: str, inner_splits: int | None) -> tuple[str, int | None]:
    """Validate a calibration method and the inner folds it needs (None: no inner CV)."""
    method = check_calibration(calibration)
    if inner_splits is None:
        if method != "none":
            raise ValueError(
                f"calibration={method!r} needs an inner cross-validation: set inner_splits"
            )
        return method, None
    bad = isinstance(inner_splits, bool) or not isinstance(inner_splits, int | np.integer)
    if bad or inner_splits < 2:
        raise ValueError(f"inner_splits must be an int >= 2 or None, got {inner_splits!r}")
    return method, int(inner_splits)


def fit_classifier(
    classifier: str | BaseEstimator,
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    calibration: str = "none",
    inner_splits: int | None = None,
) -> Any:
    """Fit a classifier on a training set, calibrated on its inner folds when asked.

    Parameters
    ----------
    classifier : str or sklearn estimator
        As in :func:`cross_validate`.
    X : numpy.ndarray
        ``float (N, D)`` training features.
    y : numpy.ndarray
        ``int64 (N,)`` training labels.
    seed, params
        As in :func:`cross_validate`.
    calibration : {"none", "sigmoid", "isotonic"}, default "none"
    inner_splits : int, optional
        Folds of the inner cross-validation; None fits the classifier alone
        (``calibration`` must then be ``"none"``).

    Returns
    -------
    sklearn estimator
        Fitted: the classifier, or an :class:`~cxrlib.tb.calibration.InnerCalibrated`
        around it (whose ``oof_proba_`` are the inner out-of-fold probabilities).
    """
    method, inner = check_inner(calibration, inner_splits)
    model = new_classifier(classifier, seed, params)
    if inner is None:
        return model.fit(X, y)
    return InnerCalibrated(model, method=method, inner_splits=inner, seed=seed).fit(X, y)
