"""Evaluate TB classifiers: cross-validation, reports, ROC with confidence intervals.

Conventions: labels ``y`` are 0 (normal) and 1 (TB); scores ``p`` are TB
probabilities (any score where higher means "more likely TB" works for the
ROC functions); a case is called TB when ``p >= threshold``.

* :func:`cross_validate` -- repeated, stratified k-fold out-of-fold
  probabilities; strata combine the site and the label, so every fold has the
  same mix of Montgomery/Shenzhen and normal/TB images. The classifier (with
  its scaler) is fitted on the training folds only.
* :func:`classification_report_table`, :func:`confusion_matrix_table`,
  :func:`binary_metrics` -- threshold metrics as tables.
* :func:`roc_with_ci`, :func:`auc_with_ci` -- ROC curve and AUC with a
  stratified percentile-bootstrap confidence interval (cases are resampled
  within each class, so every resample has both).
* :func:`operating_points` -- the best sensitivity at a specificity of at
  least 0.70 and the best specificity at a sensitivity of at least 0.90, the
  World Health Organization's target for a TB triage test (WHO 2014 target
  product profile), with their thresholds.
* :func:`per_site_metrics`, :func:`cross_site` -- per-site numbers and
  train-on-one-site / test-on-the-other transfer.
* :func:`cv_table` -- one row per cross-validated pipeline, for comparisons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import classification_report, roc_auc_score, roc_curve
from tqdm import tqdm

from cxrlib.tb.classifiers import (
    ClassifierError,
    check_features,
    check_labels,
    make_classifier,
)

__all__ = [
    "WHO_MIN_SENSITIVITY",
    "WHO_MIN_SPECIFICITY",
    "CVResult",
    "CrossSiteResult",
    "auc_with_ci",
    "binary_metrics",
    "classification_report_table",
    "confusion_matrix_table",
    "cross_site",
    "cross_validate",
    "cv_table",
    "operating_points",
    "per_site_metrics",
    "roc_with_ci",
]

#: WHO target product profile for a TB triage test: sensitivity >= 0.90 ...
WHO_MIN_SENSITIVITY = 0.90
#: ... at specificity >= 0.70.
WHO_MIN_SPECIFICITY = 0.70

_CLASS_NAMES = ("normal", "tb")
_BOOT_CHUNK_CELLS = 4_000_000  # bootstrap memory bound (cells of a float64 array)


# ------------------------------------------------------------------------------ inputs


def _labels(y: Any, who: str = "evaluate") -> np.ndarray:
    """0/1 labels as int64; one class is allowed (threshold metrics still work)."""
    try:
        return check_labels(y, who=who)
    except ClassifierError as error:
        if "needs both classes" not in str(error):
            raise
        return np.asarray(y, dtype=np.float64).astype(np.int64).ravel()


def _scores(p: Any, n: int, name: str = "p") -> np.ndarray:
    array = np.asarray(p, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of TB probabilities, got shape {array.shape}")
    if array.size != n:
        raise ValueError(f"{name} has {array.size} values but y has {n} labels")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _both_classes(y: np.ndarray, what: str) -> None:
    if np.unique(y).size < 2:
        raise ValueError(f"{what} needs both classes (0 = normal, 1 = TB) in y, got only {y[0]}")


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return value


def _check_ci(ci: float, n_boot: int) -> None:
    if not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")


# ----------------------------------------------------------------- threshold metrics


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """Counts and rates of the decision ``p >= threshold``.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,)
        TB probabilities.
    threshold : float, default 0.5

    Returns
    -------
    dict
        ``n``, ``tp``, ``fp``, ``tn``, ``fn`` (int) and ``accuracy``,
        ``sensitivity`` (TB recall), ``specificity`` (normal recall), ``ppv``,
        ``npv`` (float; ``nan`` when undefined, e.g. no TB case).
    """
    y = _labels(y)
    p = _scores(p, y.size)
    pred = p >= _check_threshold(threshold)
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "n": int(y.size),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / y.size,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }


def confusion_matrix_table(
    y: Any, p: Any, threshold: float = 0.5, class_names: Sequence[str] = _CLASS_NAMES
) -> pd.DataFrame:
    """Confusion matrix of ``p >= threshold`` as a labelled table.

    Returns
    -------
    pandas.DataFrame
        2 x 2 ``int64``; rows ``true <name>``, columns ``predicted <name>``,
        in the order normal, TB.
    """
    m = binary_metrics(y, p, threshold)
    normal, tb = class_names
    return pd.DataFrame(
        [[m["tn"], m["fp"]], [m["fn"], m["tp"]]],
        index=[f"true {normal}", f"true {tb}"],
        columns=[f"predicted {normal}", f"predicted {tb}"],
        dtype=np.int64,
    )


def classification_report_table(
    y: Any, p: Any, threshold: float = 0.5, class_names: Sequence[str] = _CLASS_NAMES
) -> pd.DataFrame:
    """Scikit-learn's classification report as a table (the original notebooks' format).

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,)
        TB probabilities.
    threshold : float, default 0.5
        TB when ``p >= threshold``.
    class_names : (str, str), default ("normal", "tb")

    Returns
    -------
    pandas.DataFrame
        Rows: the two classes, ``accuracy``, ``macro avg``, ``weighted avg``;
        columns ``precision``, ``recall``, ``f1-score`` (float64) and
        ``support`` (int64). As in the text report, the accuracy row holds the
        accuracy in ``f1-score``, ``nan`` in precision and recall, and ``N`` in
        ``support``. Undefined ratios (no predicted case of a class) are 0.
    """
    y = _labels(y)
    pred = (_scores(p, y.size) >= _check_threshold(threshold)).astype(np.int64)
    report = classification_report(
        y, pred, labels=[0, 1], target_names=list(class_names), output_dict=True, zero_division=0
    )
    accuracy = float(np.mean(pred == y))
    rows = {name: report[name] for name in class_names}
    rows["accuracy"] = {
        "precision": np.nan,
        "recall": np.nan,
        "f1-score": accuracy,
        "support": y.size,
    }
    for name in ("macro avg", "weighted avg"):
        rows[name] = report[name]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table[["precision", "recall", "f1-score", "support"]]
    return table.astype({"support": np.int64})


# ----------------------------------------------------------------------- ROC and AUC


def _bootstrap_aucs(y: np.ndarray, scores: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """AUCs of stratified bootstrap resamples, averaged over the rows of ``scores``.

    ``scores`` is ``(R, N)``; the same resample of cases is used for every row.
    Each AUC is the Mann-Whitney statistic computed from the resample counts
    (ties count one half), vectorised over resamples.
    """
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n1, n0 = pos.size, neg.size
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_CELLS // max(n1, n0 + 1))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        c_pos = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=size).astype(np.float64)
        c_neg = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=size).astype(np.float64)
        total = np.zeros(size)
        for row in scores:
            s_pos, s_neg = row[pos], row[neg]
            order = np.argsort(s_neg, kind="stable")
            sorted_neg = s_neg[order]
            cum = np.zeros((size, n0 + 1))
            np.cumsum(c_neg[:, order], axis=1, out=cum[:, 1:])
            lo = np.searchsorted(sorted_neg, s_pos, side="left")
            hi = np.searchsorted(sorted_neg, s_pos, side="right")
            below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])  # (size, n1)
            total += np.einsum("bi,bi->b", c_pos, below) / (n1 * n0)
        out[start : start + size] = total / len(scores)
    return out


def auc_with_ci(
    y: Any, p: Any, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """ROC AUC with a stratified percentile-bootstrap confidence interval.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1, both present.
    p : array_like, shape (N,) or (R, N)
        Scores; with ``R`` rows (e.g. the repeats of a cross-validation) the
        AUC is the mean of the rows' AUCs, and each bootstrap resample of the
        cases is scored on every row and averaged.
    n_boot : int, default 2000
        Bootstrap resamples (cases resampled with replacement within each class).
    seed : int, default 0
    ci : float, default 0.95

    Returns
    -------
    auc : float
    (low, high) : tuple of float
        Percentile interval of the bootstrap AUCs.
    """
    _check_ci(ci, n_boot)
    y = _labels(y)
    _both_classes(y, "auc_with_ci")
    scores = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if scores.ndim != 2:
        raise ValueError(f"p must have shape (N,) or (R, N), got {np.shape(p)}")
    for row in scores:
        _scores(row, y.size)
    auc = float(np.mean([roc_auc_score(y, row) for row in scores]))
    boot = _bootstrap_aucs(y, scores, int(n_boot), seed)
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return auc, (float(low), float(high))


def roc_with_ci(
    y: Any, p: Any, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """ROC curve and AUC with a bootstrap confidence interval.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1, both present.
    p : array_like, shape (N,)
        TB scores.
    n_boot, seed, ci
        See :func:`auc_with_ci`.

    Returns
    -------
    fpr, tpr : numpy.ndarray
        ``float64 (K,)`` false- and true-positive rates from
        :func:`sklearn.metrics.roc_curve` (from (0, 0) to (1, 1)).
    auc : float
    (low, high) : tuple of float
    """
    y = _labels(y)
    p = _scores(p, y.size)
    auc, interval = auc_with_ci(y, p, n_boot=n_boot, seed=seed, ci=ci)
    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr, auc, interval


def operating_points(
    y: Any,
    p: Any,
    *,
    min_specificity: float = WHO_MIN_SPECIFICITY,
    min_sensitivity: float = WHO_MIN_SENSITIVITY,
) -> pd.DataFrame:
    """Best sensitivity at a minimum specificity, and vice versa (WHO triage target).

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1, both present.
    p : array_like, shape (N,)
        TB scores; a case is TB when ``p >= threshold``.
    min_specificity : float, default 0.70
    min_sensitivity : float, default 0.90

    Returns
    -------
    pandas.DataFrame
        Two rows: ``sensitivity at specificity >= {min_specificity}`` (the
        highest sensitivity among thresholds that keep the specificity) and
        ``specificity at sensitivity >= {min_sensitivity}``; columns
        ``threshold``, ``sensitivity``, ``specificity`` (float64) and
        ``meets_target`` (bool: both minimums met at that threshold). The
        threshold may be ``inf`` (call nothing TB) when no finite one keeps
        the constraint. Among equally good thresholds, the one that is best on
        the other measure is reported.
    """
    y = _labels(y)
    _both_classes(y, "operating_points")
    p = _scores(p, y.size)
    for name, value in (("min_specificity", min_specificity), ("min_sensitivity", min_sensitivity)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    spec = 1.0 - fpr
    rows = {}
    ok = spec >= min_specificity - 1e-12
    best = np.lexsort((spec[ok], tpr[ok]))[-1]  # max sensitivity, then max specificity
    rows[f"sensitivity at specificity >= {min_specificity:g}"] = np.flatnonzero(ok)[best]
    ok = tpr >= min_sensitivity - 1e-12
    best = np.lexsort((tpr[ok], spec[ok]))[-1]
    rows[f"specificity at sensitivity >= {min_sensitivity:g}"] = np.flatnonzero(ok)[best]
    table = pd.DataFrame(
        {
            "threshold": [float(thresholds[i]) for i in rows.values()],
            "sensitivity": [float(tpr[i]) for i in rows.values()],
            "specificity": [float(spec[i]) for i in rows.values()],
        },
        index=list(rows),
    )
    table["meets_target"] = (table["sensitivity"] >= min_sensitivity - 1e-12) & (
        table["specificity"] >= min_specificity - 1e-12
    )
    return table


# ------------------------------------------------------------------------ per site


def _summary_row(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int, ci: float
) -> dict[str, Any]:
    m = binary_metrics(y, p, threshold)
    row: dict[str, Any] = {"n": m["n"], "n_tb": int(y.sum())}
    if np.unique(y).size == 2:
        auc, (low, high) = auc_with_ci(y, p, n_boot=n_boot, seed=seed, ci=ci)
    else:
        auc = low = high = float("nan")
    row.update(auc=auc, auc_low=low, auc_high=high)
    for key in ("accuracy", "sensitivity", "specificity"):
        row[key] = m[key]
    return row


def per_site_metrics(
    y: Any,
    p: Any,
    sites: Any,
    *,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """AUC (with CI), accuracy, sensitivity and specificity per site and overall.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,)
        TB probabilities.
    sites : array_like, shape (N,)
        Site of each image (e.g. ``"montgomery"``, ``"shenzhen"``).
    threshold : float, default 0.5
    n_boot, seed, ci
        See :func:`auc_with_ci`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``site`` (sorted, then ``"all"``); columns ``n``, ``n_tb``,
        ``auc``, ``auc_low``, ``auc_high`` (``nan`` for a site with one class),
        ``accuracy``, ``sensitivity``, ``specificity``.
    """
    _check_ci(ci, n_boot)
    y = _labels(y)
    p = _scores(p, y.size)
    sites = np.asarray(sites, dtype=object).astype(str)
    if sites.shape != (y.size,):
        raise ValueError(f"sites has {sites.size} values but y has {y.size} labels")
    threshold = _check_threshold(threshold)
    rows = {}
    for site in sorted(set(sites)):
        keep = sites == site
        rows[site] = _summary_row(y[keep], p[keep], threshold, n_boot, seed, ci)
    rows["all"] = _summary_row(y, p, threshold, n_boot, seed, ci)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "site"
    return table


# ----------------------------------------------------------------- cross-validation


def _blas_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit the BLAS thread pools while fitting (None: leave them alone)."""
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"blas_threads must be a positive int or None, got {threads!r}")
    from threadpoolctl import threadpool_limits

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
    from sklearn.model_selection import RepeatedStratifiedKFold

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
            model.fit(X[train], y[train])
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
    _both_classes(y[test], f"cross_site: test site {test_site!r}")
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
