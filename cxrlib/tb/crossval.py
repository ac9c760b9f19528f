"""Cross-validation of TB classifiers, and transfer from one site to another.

* :func:`cross_validate` -- repeated, stratified k-fold out-of-fold
  probabilities; strata combine the site and the label, so every fold has the
  same mix of Montgomery/Shenzhen and normal/TB images. The classifier (with
  its scaler) is fitted on the training folds only.
* :func:`cv_table` -- one row per cross-validated pipeline, for comparisons.
* :func:`cross_site` -- train on the images of one site, test on another.

The metrics (AUC with intervals, threshold metrics) are those of :mod:`cxrlib.tb.metrics`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cxrlib.tb.classifiers import (
    ClassifierError,
    check_features,
    check_labels,
    make_classifier,
)
from cxrlib.tb.metrics import auc_with_ci, binary_metrics, require_both_classes

__all__ = [
    "CVResult",
    "CrossSiteResult",
    "cross_site",
    "cross_validate",
    "cv_table",
]


def _blas_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit the BLAS thread pools while fitting (None: leave them alone)."""
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"blas_threads must be a positive int or None, got {threads!r}")
    return threadpool_limits(limits=int(threads), user_api="blas")


def _classifier(classifier: str | BaseEstimator, seed: int, params: Mapping | None) -> Any:
    if isinstance(classifier, str):
        return make_classifier(classifier, seed=seed, **dict(params or {}))
    if params:
        return clone(classifier).set_params(**params)
    return clone(classifier)


def _classifier_name(classifier: str | BaseEstimator) -> str:
    return classifier if isinstance(classifier, str) else type(classifier).__name__


@dataclass
class CVResult:
    """Out-of-fold predictions of a repeated cross-validation.

    Attributes
    ----------
    y : numpy.ndarray
        ``int64 (N,)`` labels.
    strata : numpy.ndarray
        ``object (N,)`` the site of each sample (``"all"`` when none was given).
    proba : numpy.ndarray
        ``float64 (R, N)`` out-of-fold TB probability of each sample in each
        repeat (every sample is in exactly one test fold per repeat).
    folds : numpy.ndarray
        ``int64 (R, N)`` the test fold of each sample in each repeat.
    classifier : str
    params : dict
    n_splits, n_repeats, seed : int
    """

    y: np.ndarray
    strata: np.ndarray
    proba: np.ndarray
    folds: np.ndarray
    classifier: str
    params: dict = field(default_factory=dict)
    n_splits: int = 5
    n_repeats: int = 2
    seed: int = 0

    @property
    def mean_proba(self) -> np.ndarray:
        """``float64 (N,)`` out-of-fold probability averaged over the repeats."""
        return self.proba.mean(axis=0)

    def auc_per_repeat(self) -> np.ndarray:
        """``float64 (R,)`` ROC AUC of each repeat's out-of-fold probabilities."""
        return np.array([roc_auc_score(self.y, row) for row in self.proba])

    def summary(
        self, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
    ) -> dict[str, Any]:
        """Headline numbers of the cross-validation.

        Returns
        -------
        dict
            ``classifier``, ``n``, ``auc`` (mean over repeats), ``auc_low``,
            ``auc_high`` (stratified bootstrap of the cases, each resample scored
            on every repeat), ``auc_repeat_sd``, and the repeat-averaged
            ``accuracy``, ``sensitivity``, ``specificity`` at ``threshold``.
        """
        auc, (low, high) = auc_with_ci(self.y, self.proba, n_boot=n_boot, seed=seed, ci=ci)
        metrics = [binary_metrics(self.y, row, threshold) for row in self.proba]
        out: dict[str, Any] = {
            "classifier": self.classifier,
            "n": int(self.y.size),
            "auc": auc,
            "auc_low": low,
            "auc_high": high,
            "auc_repeat_sd": float(np.std(self.auc_per_repeat())),
        }
        for key in ("accuracy", "sensitivity", "specificity"):
            out[key] = float(np.mean([m[key] for m in metrics]))
        return out


def _strata_values(strata: Any, n: int) -> np.ndarray:
    if strata is None:
        return np.full(n, "all", dtype=object)
    values = np.asarray(strata, dtype=object).ravel()
    if values.size != n:
        raise ValueError(f"strata has {values.size} values but X has {n} rows")
    return values.astype(str).astype(object)


def _inner_cv_error(
    classifier: Any, y_train: np.ndarray, fold: int, repeat: int, n_splits: int, error: Exception
) -> ValueError:
    """A message for a classifier whose own inner cross-validation has too few samples.

    The tuned classifiers (``logreg`` with ``C="auto"``, ``svm``'s calibration) split
    their training folds once more (5 folds); scikit-learn's message names that
    internal ``n_splits=5``, not the number of folds the caller chose.
    """
    found = re.search(r"n_splits=(\d+)", str(error))
    inner = found.group(1) if found else "several"
    normal, tb = np.bincount(y_train, minlength=2)[:2].tolist()
    return ValueError(
        f"{n_splits}-fold cross-validation leaves {normal} normal and {tb} TB radiographs "
        f"to train on in fold {fold + 1} (repeat {repeat + 1}), too few for classifier "
        f"{_classifier_name(classifier)!r}, which tunes itself with its own {inner}-fold "
        f"cross-validation on them (at least {inner} of each class); use more labelled "
        "radiographs or more folds (--splits / n_splits)"
    )


def cross_validate(
    X: Any,
    y: Any,
    strata: Any = None,
    classifier: str | BaseEstimator = "logreg",
    *,
    n_splits: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    progress: bool = False,
    blas_threads: int | None = 1,
) -> CVResult:
    """Repeated stratified k-fold cross-validation with out-of-fold probabilities.

    Folds come from :class:`sklearn.model_selection.RepeatedStratifiedKFold` on
    the combined stratum ``site | label``. In each fold a fresh classifier
    (:func:`cxrlib.tb.classifiers.make_classifier`, whose scaler is part of the
    pipeline) is fitted on the training folds only and predicts the test fold.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features, finite.
    y : array_like, shape (N,)
        Labels 0/1.
    strata : array_like, shape (N,), optional
        The site (or any group to balance over folds) of each sample.
    classifier : str or sklearn estimator, default "logreg"
        A name for :func:`~cxrlib.tb.classifiers.make_classifier`, or an estimator
        with ``predict_proba`` (cloned for every fold).
    n_splits : int, default 5
    n_repeats : int, default 2
    seed : int, default 0
        Seed of the fold assignment and of the classifier.
    params : mapping, optional
        Classifier parameters (``make_classifier(name, **params)``, or
        ``set_params`` on an estimator).
    progress : bool, default False
        Show a tqdm progress bar over the fits.
    blas_threads : int or None, default 1
        BLAS threads while fitting (:func:`threadpoolctl.threadpool_limits`).
        The feature matrices here are small, so one thread is fastest and,
        on a busy machine, avoids oversubscription that made the same
        cross-validation ten times slower; None leaves the setting alone.
        (OpenMP threads, e.g. of ``"gboost"``, are not affected.)

    Returns
    -------
    CVResult

    Raises
    ------
    ClassifierError
        For bad features or labels.
    ValueError
        For bad ``n_splits`` / ``n_repeats`` or mismatched lengths.
    """
    X = check_features(X, "cross_validate")
    y = check_labels(y, X.shape[0], "cross_validate")
    sites = _strata_values(strata, X.shape[0])
    for name, value, low in (("n_splits", n_splits, 2), ("n_repeats", n_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if np.bincount(y).min() < n_splits:
        raise ValueError(
            f"n_splits={n_splits} needs at least {n_splits} samples of each class, got "
            f"{np.bincount(y).tolist()} (normal, TB)"
        )
    combined = np.array([f"{s}|{label}" for s, label in zip(sites, y, strict=True)])
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    proba = np.full((n_repeats, y.size), np.nan)
    folds = np.full((n_repeats, y.size), -1, dtype=np.int64)
    splits = splitter.split(X, combined)
    bar = tqdm(total=n_splits * n_repeats, desc="Cross-validation", disable=not progress)
    with bar, _blas_threads(blas_threads):
        for index, (train, test) in enumerate(splits):
            repeat, fold = divmod(index, n_splits)
            model = _classifier(classifier, seed + repeat, params)
            try:
                model.fit(X[train], y[train])
            except ValueError as error:
                if "n_splits" not in str(error):
                    raise
                raise _inner_cv_error(
                    classifier, y[train], fold, repeat, n_splits, error
                ) from error
            proba[repeat, test] = np.asarray(model.predict_proba(X[test]))[:, 1]
            folds[repeat, test] = fold
            bar.update()
    return CVResult(
        y=y,
        strata=sites,
        proba=proba,
        folds=folds,
        classifier=_classifier_name(classifier),
        params=dict(params or {}),
        n_splits=int(n_splits),
        n_repeats=int(n_repeats),
        seed=int(seed),
    )


def cv_table(
    results: Mapping[str, CVResult],
    *,
    threshold: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Compare cross-validated pipelines, one row each, best AUC first.

    Parameters
    ----------
    results : mapping of str to CVResult
        E.g. ``{"handcrafted + logreg": result, ...}``.
    threshold, n_boot, seed, ci
        See :meth:`CVResult.summary`.

    Returns
    -------
    pandas.DataFrame
        Indexed by the mapping's keys (``pipeline``), columns of
        :meth:`CVResult.summary`, sorted by ``auc`` descending.
    """
    rows = {
        key: result.summary(threshold=threshold, n_boot=n_boot, seed=seed, ci=ci)
        for key, result in results.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "pipeline"
    return table.sort_values("auc", ascending=False, kind="stable")


# ------------------------------------------------------------------------ cross-site


@dataclass
class CrossSiteResult:
    """A classifier trained on one site and tested on another.

    Attributes
    ----------
    train_site, test_site : str
    n_train, n_test : int
    y : numpy.ndarray
        ``int64 (n_test,)`` labels of the test site.
    proba : numpy.ndarray
        ``float64 (n_test,)`` TB probabilities on the test site.
    auc : float
    auc_ci : (float, float)
    metrics : dict
        :func:`binary_metrics` at the threshold.
    """

    train_site: str
    test_site: str
    n_train: int
    n_test: int
    y: np.ndarray
    proba: np.ndarray
    auc: float
    auc_ci: tuple[float, float]
    metrics: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """One flat row: sites, sizes, AUC with CI, accuracy, sensitivity, specificity."""
        return {
            "train_site": self.train_site,
            "test_site": self.test_site,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "auc": self.auc,
            "auc_low": self.auc_ci[0],
            "auc_high": self.auc_ci[1],
            **{k: self.metrics[k] for k in ("accuracy", "sensitivity", "specificity")},
        }


def cross_site(
    X: Any,
    y: Any,
    sites: Any,
    classifier: str | BaseEstimator,
    train_site: str,
    test_site: str,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    n_boot: int = 2000,
    ci: float = 0.95,
    blas_threads: int | None = 1,
) -> CrossSiteResult:
    """Train on the images of one site, test on those of another.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,)
        Labels 0/1.
    sites : array_like, shape (N,)
        Site of each image.
    classifier : str or sklearn estimator
        As in :func:`cross_validate`.
    train_site, test_site : str
        Two different values of ``sites``.
    seed, params
        As in :func:`cross_validate`.
    threshold : float, default 0.5
    n_boot, ci
        See :func:`auc_with_ci`.
    blas_threads : int or None, default 1
        See :func:`cross_validate`.

    Returns
    -------
    CrossSiteResult

    Raises
    ------
    ValueError
        For an unknown or identical site, or a site without both classes.
    """
    X = check_features(X, "cross_site")
    y = check_labels(y, X.shape[0], "cross_site")
    sites = _strata_values(sites, X.shape[0])
    known = sorted(set(sites))
    for name, site in (("train_site", train_site), ("test_site", test_site)):
        if str(site) not in known:
            raise ValueError(f"{name} {site!r} is not one of the sites {known}")
    if str(train_site) == str(test_site):
        raise ValueError(f"train_site and test_site are both {train_site!r}; pick two sites")
    train, test = sites == str(train_site), sites == str(test_site)
    require_both_classes(y[test], f"cross_site: test site {test_site!r}")
    model = _classifier(classifier, seed, params)
    with _blas_threads(blas_threads):
        try:
            model.fit(X[train], y[train])
        except ClassifierError as error:
            raise ClassifierError(f"cross_site: training site {train_site!r}: {error}") from None
        proba = np.asarray(model.predict_proba(X[test]))[:, 1].astype(np.float64)
    auc, interval = auc_with_ci(y[test], proba, n_boot=n_boot, seed=seed, ci=ci)
    return CrossSiteResult(
        train_site=str(train_site),
        test_site=str(test_site),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        y=y[test],
        proba=proba,
        auc=auc,
        auc_ci=interval,
        metrics=binary_metrics(y[test], proba, threshold),
    )
