"""Metrics of TB scores: threshold metrics, ROC and AUC with intervals, operating points.

Conventions: labels ``y`` are 0 (normal) and 1 (TB); scores ``p`` are TB
probabilities (any score where higher means "more likely TB" works for the
ROC functions); a case is called TB when ``p >= threshold``.

* :func:`classification_report_table`, :func:`confusion_matrix_table`,
  :func:`binary_metrics` -- threshold metrics as tables.
* :func:`roc_with_ci`, :func:`auc_with_ci` -- ROC curve and AUC with a
  stratified percentile-bootstrap confidence interval (cases are resampled
  within each class, so every resample has both;
  :func:`cxrlib.stats.auc_bootstrap_ci`).
* :func:`operating_points` -- the best sensitivity at a specificity of at
  least 0.70 and the best specificity at a sensitivity of at least 0.90, the
  World Health Organization's target for a TB triage test (WHO 2014 target
  product profile), with their thresholds.
* :func:`per_site_metrics` -- these numbers per site and overall.

Cross-validation and cross-site transfer are in :mod:`cxrlib.tb.crossval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, roc_auc_score, roc_curve

from cxrlib.stats import auc_bootstrap_ci
from cxrlib.tb.classifiers import ClassifierError, check_labels

__all__ = [
    "WHO_MIN_SENSITIVITY",
    "WHO_MIN_SPECIFICITY",
    "auc_with_ci",
    "binary_metrics",
    "classification_report_table",
    "confusion_matrix_table",
    "operating_points",
    "per_site_metrics",
    "require_both_classes",
    "roc_with_ci",
]

#: WHO target product profile for a TB triage test: sensitivity >= 0.90 ...
WHO_MIN_SENSITIVITY = 0.90
#: ... at specificity >= 0.70.
WHO_MIN_SPECIFICITY = 0.70

_CLASS_NAMES = ("normal", "tb")


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


def require_both_classes(y: np.ndarray, what: str) -> None:
    """Raise ValueError (naming ``what``) unless ``y`` holds both labels."""
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
    require_both_classes(y, "auc_with_ci")
    scores = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if scores.ndim != 2:
        raise ValueError(f"p must have shape (N,) or (R, N), got {np.shape(p)}")
    for row in scores:
        _scores(row, y.size)
    auc = float(np.mean([roc_auc_score(y, row) for row in scores]))
    low, high = auc_bootstrap_ci(*_resampleable(y, scores), n_boot=int(n_boot), ci=ci, seed=seed)
    return auc, (low, high)


def _resampleable(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y`` and ``(R, N)`` scores with the case of a one-case class given twice.

    SciPy's bootstrap needs two cases in each class; a class of one case resamples to
    itself, and its two copies do too, with the same AUC (the Mann-Whitney count and the
    number of pairs both double), so the interval is unchanged.
    """
    for label in (0, 1):
        single = np.flatnonzero(y == label)
        if single.size == 1:
            y = np.append(y, label)
            scores = np.concatenate([scores, scores[:, single]], axis=1)
    return y, scores


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
    require_both_classes(y, "operating_points")
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
