"""What a TB run produced: :class:`TBRunResult`, and :func:`load_run` to read a run folder.

The result holds the radiographs used, their features and the (calibrated) out-of-fold
probabilities of the cross-validation with its nested thresholds, and derives from them the
chapter's numbers: AUC with its interval, reports, ROC curves, Brier scores and reliability
tables, operating points chosen inside the folds, per-site and cross-site tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.runs import read_json
from cxrlib.tb.config import TBConfig
from cxrlib.tb.crossval import THRESHOLD_COLUMNS, CVResult
from cxrlib.tb.inputs import TBInputs
from cxrlib.tb.metrics import (
    classification_report_table,
    confusion_matrix_table,
    operating_points,
    per_site_metrics,
    roc_with_ci,
)
from cxrlib.tb.predictor import TBPredictor, load_predictor
from cxrlib.tb.rundir import (
    RUN_MARKER,
    TBRunError,
    check_tb_run,
    listed,
    mask_value,
    read_stored_config,
)
from cxrlib.tb.transfer import TRANSFER_COLUMNS, cross_site

__all__ = ["TBRunResult", "load_run"]


@dataclass
class TBRunResult:
    """What :func:`train_tb` produced (or found in the run folder).

    Attributes
    ----------
    run_dir : pathlib.Path
    config : TBConfig
    key : str
    trained : bool
        False when a finished run with the same key was reused.
    table : pandas.DataFrame
        The radiographs used, in feature-row order (``id``, ``site``, ``label``,
        ``image_path``, ``mask_path``).
    X : numpy.ndarray
        ``float32 (N, D)`` features.
    feature_names : list of str
    cv : cxrlib.tb.crossval.CVResult
        Out-of-fold probabilities of the cross-validation.
    seg_model_path : pathlib.Path
        The segmentation model used (inside the run folder).
    seg_result : cxrlib.seg.results.TrainResult or None
        The segmentation training, when this run trained its model.
    skipped : list of (str, str)
        Radiographs left out, with the reason.
    timings : dict
        Seconds per step.
    inputs : TBInputs or None
        Images and predicted masks (in memory after training; None when reused:
        see :meth:`load_inputs`).
    final_operating_points : dict
        The thresholds saved with the final classifier (what ``cxrlib classify``
        uses): rule -> :func:`cxrlib.tb.operating.choose_threshold` output on the
        final model's inner out-of-fold probabilities of all radiographs. Empty for a
        run made before calibration.
    """

    run_dir: Path
    config: TBConfig
    key: str
    trained: bool
    table: pd.DataFrame
    X: np.ndarray
    feature_names: list[str]
    cv: CVResult
    seg_model_path: Path
    seg_result: Any = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    inputs: TBInputs | None = None
    final_operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        """``int64 (N,)`` labels."""
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def sites(self) -> np.ndarray:
        """``object (N,)`` site of each radiograph."""
        return self.table["site"].astype(str).to_numpy(dtype=object)

    @property
    def probability(self) -> np.ndarray:
        """``float64 (N,)`` out-of-fold TB probability (mean over the repeats)."""
        return self.cv.mean_proba

    def summary(self, n_boot: int = 2000) -> dict[str, Any]:
        """AUC with CI, accuracy, sensitivity, specificity (see ``CVResult.summary``)."""
        config = self.config
        return self.cv.summary(threshold=config.threshold, n_boot=n_boot, seed=config.seed)

    def classification_report(self) -> pd.DataFrame:
        """Scikit-learn's classification report of the out-of-fold predictions."""
        return classification_report_table(self.y, self.probability, self.config.threshold)

    def confusion_matrix(self) -> pd.DataFrame:
        """Confusion matrix of the out-of-fold predictions at the threshold."""
        return confusion_matrix_table(self.y, self.probability, self.config.threshold)

    def roc(self, n_boot: int = 2000) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
        """ROC curve ``(fpr, tpr, auc, (low, high))`` of the out-of-fold probabilities."""
        return roc_with_ci(self.y, self.probability, n_boot=n_boot, seed=self.config.seed)

    def operating_points(self) -> pd.DataFrame:
        """WHO operating points (sensitivity >= 0.90, specificity >= 0.70), in-sample.

        The thresholds are tuned on the very out-of-fold probabilities they are scored
        on, pooled over the sites: an optimistic description of the ROC curve. The
        honest numbers are :meth:`nested_operating_points`.
        """
        return operating_points(self.y, self.probability)

    def nested_operating_points(
        self, points: tuple[str | float, ...] = ("who", "youden", 0.5), ci: float = 0.95
    ) -> pd.DataFrame:
        """Sensitivity and specificity per site at thresholds chosen inside the folds.

        :meth:`cxrlib.tb.crossval.CVResult.operating_table`: each outer fold's threshold
        was chosen on inner out-of-fold probabilities of its training part and applied to
        its test fold; rates with Wilson intervals and the WHO verdict per site and pooled.

        Raises
        ------
        ValueError
            For a run without nested thresholds (``calibration`` ``"none"`` made before
            format 3).
        """
        return self.cv.operating_table(points, ci=ci)

    def fold_thresholds(self) -> pd.DataFrame:
        """The nested thresholds, one row per repeat, outer fold and rule (may be empty)."""
        if self.cv.thresholds is None:
            return pd.DataFrame(columns=list(THRESHOLD_COLUMNS))
        return self.cv.thresholds.copy()

    def brier(self, n_boot: int = 2000) -> pd.DataFrame:
        """Brier score per site with intervals, calibrated and (if kept) uncalibrated."""
        return self.cv.brier(n_boot=n_boot, seed=self.config.seed)

    def reliability(
        self, n_bins: int = 10, strategy: str = "uniform", *, calibrated: bool = True
    ) -> pd.DataFrame:
        """Reliability-diagram data per site (:meth:`cxrlib.tb.crossval.CVResult.reliability`)."""
        return self.cv.reliability(n_bins, strategy, calibrated=calibrated)

    def per_site(self, n_boot: int = 1000) -> pd.DataFrame:
        """AUC (with CI), accuracy, sensitivity and specificity per site and overall."""
        return per_site_metrics(
            self.y,
            self.probability,
            self.sites,
            threshold=self.config.threshold,
            n_boot=n_boot,
            seed=self.config.seed,
        )

    def roc_curves(
        self, n_boot: int = 2000
    ) -> dict[str, tuple[np.ndarray, np.ndarray, float, tuple[float, float]]]:
        """ROC curves with AUC intervals of all radiographs and of each site.

        Returns
        -------
        dict
            ``"all"`` first, then each site with both labels:
            ``(fpr, tpr, auc, (low, high))`` as :func:`cxrlib.tb.metrics.roc_with_ci`.
        """
        curves = {"all": self.roc(n_boot=n_boot)}
        for site in sorted(set(self.sites)):
            keep = self.sites == site
            if np.unique(self.y[keep]).size == 2:
                curves[site] = roc_with_ci(
                    self.y[keep], self.probability[keep], n_boot=n_boot, seed=self.config.seed
                )
        return curves

    def cross_site(self, n_boot: int = 2000) -> pd.DataFrame:
        """Train on one site, test on the other, at the fixed threshold: one row per pair.

        The rows of :meth:`transfer` at ``config.threshold`` (0.5), with the columns
        ``train_site``, ``test_site``, ``n_train``, ``n_test``, ``auc``, ``auc_low``,
        ``auc_high``, ``accuracy``, ``sensitivity``, ``specificity`` and ``threshold``.
        A threshold fixed in advance is often degenerate at the other site (all or none
        called TB): :meth:`transfer` adds the thresholds chosen on the training site.
        """
        table = self.transfer(n_boot=n_boot)
        fixed = table[table["operating_point"] == f"{self.config.threshold:g}"]
        columns = ["train_site", "test_site", "n_train", "n_test", "auc", "auc_low", "auc_high"]
        columns += ["accuracy", "sensitivity", "specificity", "threshold"]
        return fixed[columns].reset_index(drop=True)

    def transfer(self, n_boot: int = 2000, *, site_standardize: bool = False) -> pd.DataFrame:
        """Train on one site, test on the other, for every ordered pair of sites.

        The classifier is calibrated like the run's on the training site's inner folds,
        and the thresholds of ``"who"`` and ``"youden"`` are chosen on that site's own
        inner out-of-fold probabilities, then applied unchanged to the test site
        (:func:`cxrlib.tb.transfer.cross_site`); ``"0.5"`` is the fixed threshold.
        ``site_standardize=True`` first standardises each site's features with its own
        statistics (:func:`cxrlib.tb.transfer.standardize_per_site`, no labels), which
        undoes a shift between the sites that otherwise makes any threshold learnt at
        one site call all or none of the other's radiographs TB.

        Returns
        -------
        pandas.DataFrame
            One row per pair and operating point (:data:`cxrlib.tb.transfer.TRANSFER_COLUMNS`:
            sites, operating point, threshold, sizes, AUC with CI, the training site's
            own sensitivity and specificity at the threshold, and the test site's
            accuracy, sensitivity and specificity with Wilson intervals); empty with
            these columns when fewer than two sites have both labels.
        """
        usable = [
            s for s in sorted(set(self.sites)) if np.unique(self.y[self.sites == s]).size == 2
        ]
        parts = []
        for train_site in usable:
            for test_site in usable:
                if train_site == test_site:
                    continue
                result = cross_site(
                    self.X,
                    self.y,
                    self.sites,
                    self.config.classifier,
                    train_site,
                    test_site,
                    seed=self.config.seed,
                    threshold=self.config.threshold,
                    calibration=self.config.calibration,
                    inner_splits=self.config.inner_splits,
                    points=("who", "youden", self.config.threshold),
                    site_standardize=site_standardize,
                    n_boot=n_boot,
                )
                parts.append(result.operating_table())
        if not parts:
            return pd.DataFrame(columns=list(TRANSFER_COLUMNS))
        return pd.concat(parts, ignore_index=True)

    def predictor(self) -> TBPredictor:
        """The fitted pipeline saved in the run folder (:func:`load_predictor`)."""
        return load_predictor(self.run_dir)

    def load_inputs(self, progress: bool = False) -> TBInputs:
        """Images and predicted masks of :attr:`table` (recomputed if not in memory)."""
        if self.inputs is None:
            predictor = self.predictor()
            inputs = predictor.prepare(self.table["image_path"].tolist(), progress=progress)
            if len(inputs.kept) != len(self.table):
                raise TBRunError(
                    f"{len(self.table) - len(inputs.kept)} radiograph(s) of the run could not "
                    f"be prepared again: {listed(inputs.skipped)}"
                )
            self.inputs = inputs
        return self.inputs


def _cv_from_table(oof: pd.DataFrame, config: TBConfig, thresholds: Any) -> CVResult:
    repeats = sorted(int(c.split("_r")[1]) for c in oof.columns if c.startswith("proba_r"))
    raw = None
    if all(f"uncalibrated_r{r}" in oof for r in repeats):
        raw = np.stack([oof[f"uncalibrated_r{r}"].to_numpy(np.float64) for r in repeats])
    nested = thresholds is not None
    return CVResult(
        y=oof["label"].to_numpy(np.int64),
        strata=oof["site"].astype(str).to_numpy(dtype=object),
        proba=np.stack([oof[f"proba_r{r}"].to_numpy(np.float64) for r in repeats]),
        folds=np.stack([oof[f"fold_r{r}"].to_numpy(np.int64) for r in repeats]),
        classifier=config.classifier,
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
        calibration=config.calibration,
        inner_splits=config.inner_splits if nested else None,
        uncalibrated=raw,
        thresholds=thresholds,
    )


def load_run(run_dir: str | os.PathLike[str]) -> TBRunResult:
    """Read a finished TB run folder back into a :class:`TBRunResult` (``trained=False``)."""
    path = check_tb_run(run_dir)
    stored, config = read_stored_config(path)
    try:
        oof = pd.read_csv(
            path / "oof_predictions.csv",
            dtype={"id": str, "site": str, "file": str, "mask_file": str},
            keep_default_na=False,
        )
        with np.load(path / "features.npz", allow_pickle=False) as data:
            X = data["X"].astype(np.float32)
            names = [str(n) for n in data["feature_names"]]
        thresholds = None
        if (path / "fold_thresholds.csv").is_file():
            thresholds = pd.read_csv(path / "fold_thresholds.csv", dtype={"operating_point": str})
    except (OSError, ValueError, KeyError) as error:
        raise TBRunError(f"TB run {path} has unreadable result files ({error})") from error
    table = oof[["id", "site", "label", "file"]].rename(columns={"file": "image_path"})
    masks = oof["mask_file"] if "mask_file" in oof else [None] * len(oof)
    table["mask_path"] = pd.Series([mask_value(v) for v in masks], dtype=object)
    marker = read_json(path / RUN_MARKER) or {}
    return TBRunResult(
        run_dir=path,
        config=config,
        key=str(marker.get("key", "")),
        trained=False,
        table=table,
        X=X,
        feature_names=names,
        cv=_cv_from_table(oof, config, thresholds),
        seg_model_path=path / stored["seg_model"],
        skipped=[tuple(s) for s in stored.get("skipped", [])],
        timings=stored.get("timings", {}),
        final_operating_points=dict(stored.get("operating_points", {})),
    )
