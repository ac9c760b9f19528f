"""Cross-validation of TB classifiers: out-of-fold probabilities, calibrated, nested thresholds.

* :func:`cross_validate` -- repeated, stratified k-fold out-of-fold
  probabilities; strata combine the site and the label, so every fold has the
  same mix of Montgomery/Shenzhen and normal/TB images. The classifier (with
  its scaler) is fitted on the training folds only. With ``inner_splits``, each
  outer training part is split once more: the inner out-of-fold probabilities
  calibrate the classifier (:class:`cxrlib.tb.calibration.InnerCalibrated`) and
  choose the thresholds of the named operating points (:mod:`cxrlib.tb.operating`),
  which are then applied, unchanged, to the outer test fold. Neither ever sees a
  test fold's labels.
* :func:`cv_table` -- one row per cross-validated pipeline, for comparisons.

One fit (calibrated or not) is :func:`cxrlib.tb.fitting.fit_classifier`; transfer between
sites is in :mod:`cxrlib.tb.transfer`.

The metrics (AUC with intervals, threshold metrics) are those of :mod:`cxrlib.tb.metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from tqdm import tqdm

from cxrlib.tb.calibration import brier_table, reliability_table
from cxrlib.tb.classifiers import check_features, check_labels
from cxrlib.tb.fitting import check_inner, classifier_name, fit_classifier, limit_blas_threads
from cxrlib.tb.metrics import auc_with_ci, binary_metrics
from cxrlib.tb.operating import (
    OPERATING_RULES,
    choose_thresholds,
    parse_operating_point,
    rates_table,
)

__all__ = [
    "CVResult",
    "THRESHOLD_COLUMNS",
    "cross_validate",
    "cv_table",
]

#: Columns of :attr:`CVResult.thresholds`: one row per repeat, outer fold and rule.
THRESHOLD_COLUMNS = (
    "repeat",
    "fold",
    "operating_point",
    "threshold",
    "inner_sensitivity",
    "inner_specificity",
    "inner_meets_target",
    "inner_degenerate",
)


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
        repeat (every sample is in exactly one test fold per repeat); calibrated
        when ``calibration`` is not ``"none"``.
    folds : numpy.ndarray
        ``int64 (R, N)`` the test fold of each sample in each repeat.
    classifier : str
    params : dict
    n_splits, n_repeats, seed : int
    calibration : str
        ``"none"``, ``"sigmoid"`` or ``"isotonic"``.
    inner_splits : int or None
        Folds of the inner cross-validation (None: there was none).
    uncalibrated : numpy.ndarray or None
        ``float64 (R, N)`` the same out-of-fold probabilities before calibration
        (None without an inner cross-validation).
    thresholds : pandas.DataFrame or None
        The nested thresholds, one row per repeat, outer fold and rule
        (:data:`THRESHOLD_COLUMNS`): each chosen on the inner out-of-fold
        probabilities of that fold's training part, with the sensitivity and
        specificity it had there (``inner_meets_target`` False: the WHO target was
        missed already inside). None without an inner cross-validation.
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
    calibration: str = "none"
    inner_splits: int | None = None
    uncalibrated: np.ndarray | None = None
    thresholds: pd.DataFrame | None = None

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

    # ------------------------------------------------------------- operating points

    def sample_thresholds(self, rule: str) -> np.ndarray:
        """``float64 (R, N)``: the nested threshold of a rule that called each sample.

        A sample's threshold is the one chosen for its outer test fold, on the inner
        out-of-fold probabilities of that fold's training part.
        """
        if self.thresholds is None:
            raise ValueError("this cross-validation chose no nested thresholds (inner_splits=None)")
        if rule not in OPERATING_RULES:
            raise ValueError(f"rule must be one of {list(OPERATING_RULES)}, got {rule!r}")
        rows = self.thresholds[self.thresholds["operating_point"] == rule]
        table = np.full((self.n_repeats, self.n_splits), np.nan)
        table[rows["repeat"].to_numpy(int), rows["fold"].to_numpy(int)] = rows["threshold"]
        repeats = np.arange(self.folds.shape[0])[:, None]
        return table[repeats, self.folds]

    def calls(self, operating_point: str | float) -> np.ndarray:
        """``bool (R, N)`` TB calls of the out-of-fold probabilities at an operating point.

        ``"who"`` and ``"youden"`` use the nested thresholds of each fold
        (:meth:`sample_thresholds`); a number is a fixed threshold.
        """
        name, value = parse_operating_point(operating_point)
        if value is None:
            return self.proba >= self.sample_thresholds(name)
        return self.proba >= value

    def operating_table(
        self, points: Sequence[str | float] = ("who", "youden", 0.5), ci: float = 0.95
    ) -> pd.DataFrame:
        """Sensitivity and specificity per site at each operating point, with intervals.

        Parameters
        ----------
        points : sequence, default ("who", "youden", 0.5)
            Operating points (:func:`cxrlib.tb.operating.parse_operating_point`).
        ci : float, default 0.95

        Returns
        -------
        pandas.DataFrame
            One row per operating point and site (sites sorted, then ``"all"``):
            ``operating_point``, ``site``, ``threshold`` (the fixed value, or the mean
            of the nested thresholds), ``threshold_min``, ``threshold_max``,
            ``folds_missing_target`` (outer folds whose inner choice already missed
            the WHO target; 0 for a fixed threshold), then the columns of
            :func:`cxrlib.tb.operating.rates_table` (``sensitivity`` with
            ``sensitivity_low`` / ``_high``, the same for ``specificity``,
            ``meets_target``, ``ci_excludes_target``, ``ci_above_target``).
        """
        parts = []
        for point in points:
            name, value = parse_operating_point(point)
            table = rates_table(self.y, self.calls(point), self.strata, ci=ci).reset_index()
            if value is None:
                chosen = self.thresholds[self.thresholds["operating_point"] == name]
                values = chosen["threshold"].to_numpy(np.float64)
                missing = int((~chosen["inner_meets_target"].astype(bool)).sum())
            else:
                values, missing = np.array([value]), 0
            table.insert(0, "operating_point", name)
            table.insert(2, "threshold", float(values.mean()))
            table.insert(3, "threshold_min", float(values.min()))
            table.insert(4, "threshold_max", float(values.max()))
            table.insert(5, "folds_missing_target", missing)
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    # ------------------------------------------------------------------ calibration

    def brier(self, n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
        """Brier score per site of the out-of-fold probabilities, before and after calibration.

        Returns
        -------
        pandas.DataFrame
            :func:`cxrlib.tb.calibration.brier_table` of :attr:`proba` (all repeats),
            and, when there are uncalibrated probabilities, its ``brier``,
            ``brier_low`` and ``brier_high`` columns of :attr:`uncalibrated` as
            ``uncalibrated_brier``, ``uncalibrated_brier_low``, ``uncalibrated_brier_high``.
        """
        table = brier_table(self.y, self.proba, self.strata, n_boot=n_boot, seed=seed, ci=ci)
        if self.uncalibrated is not None:
            raw = brier_table(
                self.y, self.uncalibrated, self.strata, n_boot=n_boot, seed=seed, ci=ci
            )
            for key in ("brier", "brier_low", "brier_high"):
                table[f"uncalibrated_{key}"] = raw[key]
        return table

    def reliability(
        self, n_bins: int = 10, strategy: str = "uniform", *, calibrated: bool = True
    ) -> pd.DataFrame:
        """Reliability-diagram data per site of the repeat-averaged probabilities.

        ``calibrated=False`` uses :attr:`uncalibrated` (ValueError when there is none).
        See :func:`cxrlib.tb.calibration.reliability_table` for the columns.
        """
        if calibrated:
            p = self.mean_proba
        elif self.uncalibrated is None:
            raise ValueError("this cross-validation kept no uncalibrated probabilities")
        else:
            p = self.uncalibrated.mean(axis=0)
        return reliability_table(self.y, p, self.strata, n_bins=n_bins, strategy=strategy)


def site_values(strata: Any, n: int) -> np.ndarray:
    """``object (n,)`` site names as strings (``"all"`` when ``strata`` is None)."""
    if strata is None:
        return np.full(n, "all", dtype=object)
    values = np.asarray(strata, dtype=object).ravel()
    if values.size != n:
        raise ValueError(f"strata has {values.size} values but X has {n} rows")
    return values.astype(str).astype(object)


#: scikit-learn's messages for an inner cross-validation with too few samples of a class.
_INNER_TOO_SMALL = re.compile(r"n_splits=(\d+)|Requesting (\d+)-fold cross-validation")


def _inner_cv_error(
    classifier: Any, y_train: np.ndarray, fold: int, repeat: int, n_splits: int, error: Exception
) -> ValueError:
    """A message for a training part too small for an inner cross-validation.

    The tuned classifiers (``logreg`` with ``C="auto"``, ``svm``'s calibration) split
    their training folds once more (5 folds), and so does the calibration
    (``inner_splits``); scikit-learn's message names that internal ``n_splits``, not the
    number of folds the caller chose.
    """
    found = _INNER_TOO_SMALL.search(str(error))
    inner = next((g for g in found.groups() if g), "several") if found else "several"
    normal, tb = np.bincount(y_train, minlength=2)[:2].tolist()
    if "calibration and thresholds" in str(error):
        what = (
            f"the inner {inner}-fold cross-validation that calibrates classifier "
            f"{classifier_name(classifier)!r} and chooses its thresholds (inner_splits / "
            "--inner-splits)"
        )
    else:
        what = (
            f"classifier {classifier_name(classifier)!r}, which tunes itself with its own "
            f"{inner}-fold cross-validation on them"
        )
    return ValueError(
        f"{n_splits}-fold cross-validation leaves {normal} normal and {tb} TB radiographs "
        f"to train on in fold {fold + 1} (repeat {repeat + 1}), too few for {what} (at "
        f"least {inner} of each class); use more labelled radiographs or more folds "
        "(--splits / n_splits)"
    )


def _given_folds(folds: Any, n: int) -> np.ndarray:
    array = np.asarray(folds)
    if array.ndim != 2 or array.shape[1] != n or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"folds must be an int array of shape (R, {n}), got {array.shape}")
    k = int(array.max()) + 1
    for row in array:
        if array.min() < 0 or np.unique(row).size != k:
            raise ValueError(f"every row of folds must use each fold 0..{k - 1}")
    return array.astype(np.int64)


def _splits(
    X: np.ndarray, y: np.ndarray, sites: np.ndarray, n_splits: int, n_repeats: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    combined = np.array([f"{s}|{label}" for s, label in zip(sites, y, strict=True)])
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    return list(splitter.split(X, combined))


def _threshold_rows(repeat: int, fold: int, y: np.ndarray, oof: np.ndarray) -> list[dict]:
    rows = []
    for rule, chosen in choose_thresholds(y, oof).items():
        rows.append(
            {
                "repeat": repeat,
                "fold": fold,
                "operating_point": rule,
                "threshold": chosen["threshold"],
                "inner_sensitivity": chosen["sensitivity"],
                "inner_specificity": chosen["specificity"],
                "inner_meets_target": chosen["meets_target"],
                "inner_degenerate": chosen["degenerate"],
            }
        )
    return rows


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
    calibration: str = "none",
    inner_splits: int | None = None,
    folds: Any = None,
    progress: bool = False,
    blas_threads: int | None = 1,
) -> CVResult:
    """Repeated stratified k-fold cross-validation with out-of-fold probabilities.

    Folds come from :class:`sklearn.model_selection.RepeatedStratifiedKFold` on
    the combined stratum ``site | label``. In each fold a fresh classifier
    (:func:`cxrlib.tb.classifiers.make_classifier`, whose scaler is part of the
    pipeline) is fitted on the training folds only and predicts the test fold.
    With ``inner_splits`` it is wrapped in
    :class:`~cxrlib.tb.calibration.InnerCalibrated`: an inner cross-validation of
    the training folds calibrates it (``calibration``), and the thresholds of the
    rules ``"who"`` and ``"youden"`` (:func:`cxrlib.tb.operating.choose_threshold`)
    are chosen on its inner out-of-fold probabilities, to be applied to the test fold.

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
        Seed of the fold assignment, of the inner folds and of the classifier.
    params : mapping, optional
        Classifier parameters (``make_classifier(name, **params)``, or
        ``set_params`` on an estimator).
    calibration : {"none", "sigmoid", "isotonic"}, default "none"
        Calibration on the inner folds (anything but ``"none"`` needs ``inner_splits``).
    inner_splits : int, optional
        Folds of the inner cross-validation of each outer training part; None (the
        default): none, no calibration and no nested thresholds (the fastest, for
        comparing pipelines by AUC).
    folds : array_like of int, shape (R, N), optional
        The test fold of each sample in each repeat (e.g. :attr:`CVResult.folds` of
        another run), instead of drawing them; ``n_splits`` and ``n_repeats`` follow.
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
        For bad ``n_splits`` / ``n_repeats`` / ``inner_splits`` / ``folds``, or
        mismatched lengths.
    """
    X = check_features(X, "cross_validate")
    y = check_labels(y, X.shape[0], "cross_validate")
    sites = site_values(strata, X.shape[0])
    method, inner = check_inner(calibration, inner_splits)
    if folds is not None:
        given = _given_folds(folds, y.size)
        n_repeats, n_splits = given.shape[0], int(given.max()) + 1
        splits = [
            (np.flatnonzero(row != k), np.flatnonzero(row == k))
            for row in given
            for k in range(n_splits)
        ]
    for name, value, low in (("n_splits", n_splits, 2), ("n_repeats", n_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if np.bincount(y).min() < n_splits:
        raise ValueError(
            f"n_splits={n_splits} needs at least {n_splits} samples of each class, got "
            f"{np.bincount(y).tolist()} (normal, TB)"
        )
    if folds is None:
        splits = _splits(X, y, sites, n_splits, n_repeats, seed)
    proba = np.full((n_repeats, y.size), np.nan)
    raw = np.full((n_repeats, y.size), np.nan) if inner else None
    fold_of = np.full((n_repeats, y.size), -1, dtype=np.int64)
    chosen: list[dict] = []
    bar = tqdm(total=n_splits * n_repeats, desc="Cross-validation", disable=not progress)
    with bar, limit_blas_threads(blas_threads):
        for index, (train, test) in enumerate(splits):
            repeat, fold = divmod(index, n_splits)
            try:
                model = fit_classifier(
                    classifier,
                    X[train],
                    y[train],
                    seed=seed + repeat,
                    params=params,
                    calibration=method,
                    inner_splits=inner,
                )
            except ValueError as error:
                if not _INNER_TOO_SMALL.search(str(error)):
                    raise
                raise _inner_cv_error(
                    classifier, y[train], fold, repeat, n_splits, error
                ) from error
            proba[repeat, test] = np.asarray(model.predict_proba(X[test]))[:, 1]
            if inner:
                raw[repeat, test] = model.predict_uncalibrated(X[test])
                chosen += _threshold_rows(repeat, fold, y[train], model.oof_proba_)
            fold_of[repeat, test] = fold
            bar.update()
    return CVResult(
        y=y,
        strata=sites,
        proba=proba,
        folds=fold_of,
        classifier=classifier_name(classifier),
        params=dict(params or {}),
        n_splits=int(n_splits),
        n_repeats=int(n_repeats),
        seed=int(seed),
        calibration=method,
        inner_splits=inner,
        uncalibrated=raw,
        thresholds=pd.DataFrame(chosen, columns=list(THRESHOLD_COLUMNS)) if inner else None,
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
