"""The TB chapter's experiments: pipelines compared, predicted against true masks, literature.

* :func:`compare_pipelines` cross-validates every extractor x classifier pair
  (:func:`format_comparison` makes the table readable, :func:`pipeline_label` names a row);
* :func:`compare_masks` measures what the predicted lung masks cost against the
  ground-truth ones;
* :data:`PUBLISHED` holds the published numbers the chapter compares with, and
  :func:`interval_relation` says where one lies relative to an interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxrlib.data.imageio import read_mask
from cxrlib.preprocess import resize_mask
from cxrlib.seg.metrics import dice as dice_score
from cxrlib.tb.crossval import CVResult, cross_validate
from cxrlib.tb.feature_sets import FeatureUnavailable, extract_combined, feature_unavailable
from cxrlib.tb.metrics import classification_report_table
from cxrlib.tb.result import TBRunResult

__all__ = [
    "ANY_CLASSIFIER",
    "COMPARISON_COLUMNS",
    "PUBLISHED",
    "compare_masks",
    "compare_pipelines",
    "format_comparison",
    "interval_relation",
    "pipeline_label",
    "reports_by_extractor",
]

#: Published numbers the TB chapter compares with (see ``book/references.bib``).
PUBLISHED: dict[str, float] = {
    # Jaeger et al. 2014: hand-crafted lung features + SVM, ROC AUC per set
    "jaeger2014_mc_auc": 0.87,
    "jaeger2014_chn_auc": 0.90,
    # ImageNet DenseNet-121, 10-fold cross-validation (Idiap bob.med.tb baselines)
    "densenet121_auc": 0.95,
    # the original project: pretrained-CNN features + MLP on 160 test images
    "original_accuracy_inceptionresnetv2": 0.84,
    "original_accuracy_resnet50": 0.89,
    "original_accuracy_vgg16": 0.90,
    "original_test_images": 160,
    # WHO target product profile for a TB triage test (2014)
    "who_min_sensitivity": 0.90,
    "who_min_specificity": 0.70,
}

#: The classifier of a :func:`compare_pipelines` row whose extractor could not run.
ANY_CLASSIFIER = "any"

#: Columns of a :func:`compare_pipelines` table.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "extractor",
    "classifier",
    "n",
    "n_features",
    "auc",
    "auc_low",
    "auc_high",
    "accuracy",
    "sensitivity",
    "specificity",
    "status",
)


def compare_pipelines(
    X_by_extractor: Mapping[str, Any],
    y: Any,
    strata: Any = None,
    classifiers: Sequence[str] = ("logreg", "svm", "gboost", "mlp"),
    *,
    n_splits: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
    n_boot: int = 2000,
    threshold: float = 0.5,
    calibration: str = "none",
    inner_splits: int | None = None,
    progress: bool = False,
    return_results: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[tuple[str, str], Any]]:
    """Cross-validate every extractor x classifier pair; one row each, best AUC first.

    Parameters
    ----------
    X_by_extractor : mapping
        ``name -> X`` (``(N, D)`` array), ``name -> (X, feature names)``, or
        ``name -> FeatureUnavailable`` / an exception (listed with its status, not run).
    y : array_like, shape (N,)
        Labels 0/1.
    strata : array_like, shape (N,), optional
        Site of each radiograph (folds are stratified by site and label).
    classifiers : sequence of str
        :func:`cxrlib.tb.classifiers.make_classifier` names.
    n_splits, n_repeats, seed
        See :func:`cxrlib.tb.crossval.cross_validate`.
    n_boot : int, default 2000
        Bootstrap resamples of the AUC interval.
    threshold : float, default 0.5
    calibration, inner_splits
        See :func:`cxrlib.tb.crossval.cross_validate` (default: no inner
        cross-validation, the fastest way to compare pipelines by AUC).
    progress : bool, default False
        A progress bar over the pipelines.
    return_results : bool, default False
        Also return the :class:`cxrlib.tb.crossval.CVResult` of every pipeline run.

    Returns
    -------
    pandas.DataFrame
        Columns ``extractor``, ``classifier``, ``n``, ``n_features``, ``auc``,
        ``auc_low``, ``auc_high``, ``accuracy``, ``sensitivity``, ``specificity``,
        ``status`` (``"ok"`` or why the pipeline did not run; its numbers are NaN);
        sorted by AUC (descending). An unavailable extractor gets one row, last, with
        the classifier ``"any"``.
    dict, optional
        ``(extractor, classifier) -> CVResult`` when ``return_results``.
    """
    classifiers = list(classifiers)
    if not classifiers:
        raise ValueError("classifiers must name at least one classifier")
    rows, results = [], {}
    pairs = [(e, c) for e in X_by_extractor for c in classifiers]
    bar = tqdm(total=len(pairs), desc="Pipelines", disable=not progress)
    with bar:
        for name, value in X_by_extractor.items():
            if isinstance(value, Exception):
                value = feature_unavailable(name, value)
            if isinstance(value, FeatureUnavailable):
                row = {"extractor": name, "classifier": ANY_CLASSIFIER, "status": value.status}
                rows.append(row)
                bar.update(len(classifiers))
                continue
            X = value[0] if isinstance(value, tuple) else value
            X = np.asarray(X)
            for clf in classifiers:
                cv = cross_validate(
                    X,
                    y,
                    strata,
                    clf,
                    n_splits=n_splits,
                    n_repeats=n_repeats,
                    seed=seed,
                    calibration=calibration,
                    inner_splits=inner_splits,
                )
                summary = cv.summary(threshold=threshold, n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        "extractor": name,
                        "classifier": clf,
                        "n": summary["n"],
                        "n_features": int(X.shape[1]),
                        **{k: summary[k] for k in ("auc", "auc_low", "auc_high")},
                        **{k: summary[k] for k in ("accuracy", "sensitivity", "specificity")},
                        "status": "ok",
                    }
                )
                results[(name, clf)] = cv
                bar.update()
    table = pd.DataFrame(rows).reindex(columns=list(COMPARISON_COLUMNS))
    table["available"] = table["status"] == "ok"
    table = table.sort_values(["available", "auc"], ascending=[False, False], kind="stable")
    table = table.drop(columns="available").reset_index(drop=True)
    table = table.astype({"n": "Int64", "n_features": "Int64"})
    return (table, results) if return_results else table


def reports_by_extractor(
    results: Mapping[tuple[str, str], CVResult], classifier: str, threshold: float = 0.5
) -> pd.DataFrame:
    """The classification report of each feature extractor with one classifier.

    The original project's table format (:func:`cxrlib.tb.metrics.classification_report_table`)
    for the out-of-fold probabilities, averaged over the repeats, of every pipeline of
    ``results`` (:func:`compare_pipelines` with ``return_results=True``) that used
    ``classifier``.

    Parameters
    ----------
    results : mapping of (extractor, classifier) -> CVResult
    classifier : str
        The classifier whose pipelines are reported (the original project used an MLP).
    threshold : float, default 0.5
        TB when the probability is at least this.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(extractor, row)``, rows as in the report (``normal``, ``tb``,
        ``accuracy``, ``macro avg``, ``weighted avg``); columns ``precision``, ``recall``,
        ``f1-score``, ``support``. Extractors in the order of ``results``.

    Raises
    ------
    ValueError
        When no pipeline of ``results`` used ``classifier``.
    """
    reports = {
        extractor: classification_report_table(cv.y, cv.mean_proba, threshold)
        for (extractor, name), cv in results.items()
        if name == classifier
    }
    if not reports:
        used = sorted({name for _, name in results})
        raise ValueError(f"no pipeline used the classifier {classifier!r} (used: {used})")
    return pd.concat(reports, names=["extractor", "row"])


def pipeline_label(extractor: str, classifier: str) -> str:
    """``"extractor + classifier"``, or ``"extractor (any classifier)"`` for an unavailable one."""
    if classifier == ANY_CLASSIFIER:
        return f"{extractor} (any classifier)"
    return f"{extractor} + {classifier}"


def format_comparison(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A readable version of a :func:`compare_pipelines` table.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`compare_pipelines` (possibly several concatenated).
    digits : int, default 3

    Returns
    -------
    pandas.DataFrame
        Indexed by ``pipeline`` (:func:`pipeline_label`); columns ``n``,
        ``features``, ``AUC (95% CI)`` (e.g. ``"0.921 [0.897, 0.941]"``),
        ``accuracy``, ``sensitivity``, ``specificity`` (strings; ``"-"`` where the
        pipeline did not run) and ``status``.
    """

    def number(value: Any) -> str:
        return "-" if pd.isna(value) else f"{float(value):.{digits}f}"

    rows = []
    for row in table.itertuples(index=False):
        ok = row.status == "ok"
        auc = f"{number(row.auc)} [{number(row.auc_low)}, {number(row.auc_high)}]"
        rows.append(
            {
                "pipeline": pipeline_label(row.extractor, row.classifier),
                "n": "-" if pd.isna(row.n) else str(int(row.n)),
                "features": "-" if pd.isna(row.n_features) else str(int(row.n_features)),
                "AUC (95% CI)": auc if ok else "-",
                "accuracy": number(row.accuracy),
                "sensitivity": number(row.sensitivity),
                "specificity": number(row.specificity),
                "status": row.status,
            }
        )
    columns = ["pipeline", "n", "features", "AUC (95% CI)", "accuracy", "sensitivity"]
    columns += ["specificity", "status"]
    return pd.DataFrame(rows, columns=columns).set_index("pipeline")


def interval_relation(value: float, low: float, high: float) -> str:
    """Where ``value`` lies relative to the interval ``[low, high]``, in words.

    Returns
    -------
    str
        ``"below"``, ``"inside"`` or ``"above"`` (``"undefined"`` for NaN bounds).
    """
    if any(pd.isna(v) for v in (value, low, high)):
        return "undefined"
    if float(value) < float(low):
        return "below"
    if float(value) > float(high):
        return "above"
    return "inside"


def compare_masks(
    result: TBRunResult,
    classifiers: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    n_jobs: int | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predicted against ground-truth lung masks: their overlap, and the classifier's AUC.

    On the radiographs of ``result`` that have a ground-truth mask, the run's
    features are computed again with the ground-truth masks, and both feature sets
    (ground truth, predicted) are cross-validated like the run (its calibration and
    inner folds included).

    Parameters
    ----------
    result : TBRunResult
    classifiers : sequence of str, optional
        Default: the run's classifier.
    n_boot : int, default 2000
    n_jobs : int, optional
        Worker processes of the hand-crafted features.
    progress : bool, default False

    Returns
    -------
    table : pandas.DataFrame
        :func:`compare_pipelines` rows named ``"<features>, ground-truth masks"``
        and ``"<features>, predicted masks"`` (empty when fewer than
        ``n_splits`` radiographs of each class have a mask).
    dice : pandas.DataFrame
        ``id``, ``site``, ``dice`` of each predicted mask against its ground truth
        (at the feature size).
    """
    config = result.config
    has_mask = result.table["mask_path"].notna().to_numpy()
    rows = np.flatnonzero(has_mask)
    inputs = result.load_inputs()
    size = inputs.images.shape[1:]
    truth = np.zeros((len(rows), *size), bool)
    for k, i in enumerate(rows):
        source = result.table["mask_path"].iloc[i]
        mask = read_mask(list(source) if isinstance(source, tuple | list) else source)
        truth[k] = resize_mask(mask, size)
    scores = [dice_score(inputs.masks[i], truth[k]) for k, i in enumerate(rows)]
    dice = pd.DataFrame(
        {
            "id": result.table["id"].iloc[rows].astype(str).to_numpy(),
            "site": result.table["site"].iloc[rows].astype(str).to_numpy(),
            "dice": np.asarray(scores, np.float64),
        }
    )
    y = result.y[rows]
    counts = np.bincount(y, minlength=2)
    name = "+".join(config.features)
    if counts.min() < config.n_splits:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS)), dice
    keep = truth.any(axis=(1, 2))
    X_truth, _ = extract_combined(
        config.features,
        inputs.images[rows][keep],
        truth[keep],
        options=config.feature_options,
        seg_model=result.seg_model_path,
        n_jobs=n_jobs,
        progress=progress,
    )
    sets = {
        f"{name}, ground-truth masks": X_truth,
        f"{name}, predicted masks": result.X[rows][keep],
    }
    table = compare_pipelines(
        sets,
        y[keep],
        result.sites[rows][keep],
        list(classifiers or [config.classifier]),
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
        n_boot=n_boot,
        threshold=config.threshold,
        calibration=config.calibration,
        inner_splits=result.cv.inner_splits,
    )
    return table, dice
