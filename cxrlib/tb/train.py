"""Train a TB classifier end to end on a dataset folder: :func:`train_tb` (load-or-train).

:func:`train_tb` runs the whole chain of the book's TB chapter and writes everything into
one run folder (:mod:`cxrlib.tb.rundir` lists its files)::

    scan (cxrlib.data.datasets), labelled radiographs only
    -> lung masks PREDICTED by a segmentation model for every radiograph
       (a given model, or one trained with cxrlib.seg.train.train_segmentation)
    -> features (cxrlib.tb.features; hand-crafted lung features by default)
    -> repeated stratified cross-validation (cxrlib.tb.crossval): out-of-fold
       probabilities, calibrated on inner folds of each training part, AUC with a
       bootstrap CI, Brier scores, report, per site; the thresholds of the operating
       points "who" and "youden" chosen inside each training part (nested) and scored
       on its test fold
    -> the final classifier, fitted and calibrated the same way on every radiograph,
       with thresholds chosen by the same rules on its inner out-of-fold probabilities

Load-or-train
    The run's key (:func:`cxrlib.runs.run_key`) is the SHA-256 of the configuration, the
    identity (path, size, modification time) of every labelled image file and the
    segmentation model (the given file's SHA-256, or the configuration it is trained
    with; then the mask files it is trained on are part of the key too). Calling again
    with the same key returns the saved run (``TBRunResult.trained`` is False); another
    key raises :class:`~cxrlib.tb.rundir.TBRunError` unless ``overwrite=True``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cxrlib.atomic import atomic_write
from cxrlib.data.datasets import scan_dataset
from cxrlib.lock import run_lock
from cxrlib.runs import (
    clear_run,
    differences,
    read_json,
    run_key,
    sha256_file,
    versions,
    write_csv,
    write_json,
)
from cxrlib.seg.inference import load_segmentation_model
from cxrlib.seg.train import train_segmentation
from cxrlib.tb.config import TBConfig
from cxrlib.tb.crossval import CVResult, cross_validate
from cxrlib.tb.feature_sets import extract_combined
from cxrlib.tb.fitting import fit_classifier
from cxrlib.tb.inputs import find_seg_model, prepare_inputs, seg_model_equalize
from cxrlib.tb.operating import choose_thresholds
from cxrlib.tb.result import TBRunResult, load_run
from cxrlib.tb.rundir import (
    RUN_MARKER,
    RUN_TYPE,
    SEG_RUN_NAME,
    TB_FORMAT_VERSION,
    TB_RUN_FILES,
    TBRunError,
    describe_foreign,
    listed,
    mask_text,
)

__all__ = ["train_tb"]

logger = logging.getLogger(__name__)

#: The ``what`` of a TB run's key.
_WHAT = "cxrlib.tb.train.train_tb"
#: Packages whose versions tb_config.json records.
_PACKAGES = ("numpy", "pandas", "scikit-learn", "keras")


def _labelled_table(data_dir: str | os.PathLike[str], progress: bool) -> pd.DataFrame:
    table = scan_dataset(data_dir, progress=progress).table
    labelled = table[table["label"].notna()].reset_index(drop=True)
    if labelled.empty:
        raise ValueError(
            f"{data_dir} holds {len(table)} radiograph(s) but none with a label: TB training "
            "needs normal and TB radiographs whose names end in _0 (normal) or _1 (TB), e.g. "
            "CHNCXR_0001_0.png"
        )
    counts = labelled["label"].astype(int).value_counts()
    if len(counts) < 2:
        only = "normal" if int(counts.index[0]) == 0 else "TB"
        raise ValueError(
            f"{data_dir}: TB training needs both normal and TB radiographs, but all "
            f"{len(labelled)} labelled radiographs are {only}"
        )
    labelled["label"] = labelled["label"].astype(int)
    return labelled


def _seg_source(config: TBConfig, seg_model: Path | None) -> dict[str, Any]:
    if seg_model is not None:
        return {"given": str(seg_model), "sha256": sha256_file(seg_model)}
    return {"trained": config.seg_config().to_dict()}


def _obtain_seg_model(
    data: pd.DataFrame,
    config: TBConfig,
    run_dir: Path,
    seg_model: Path | None,
    *,
    overwrite: bool,
    progress: bool,
    n_jobs: int | None,
) -> tuple[str, Any, str | None]:
    """Copy the given model into the run, or train one.

    Returns ``(path relative to run_dir, TrainResult or None, input equalization)``.
    """
    if seg_model is not None:
        target = run_dir / "seg_model.keras"
        atomic_write(target, lambda tmp: shutil.copyfile(seg_model, tmp), ".keras")
        return target.name, None, seg_model_equalize(seg_model)
    result = train_segmentation(
        data,
        config.seg_config(),
        run_dir / SEG_RUN_NAME,
        overwrite=overwrite,
        progress=progress,
        n_jobs=n_jobs,
    )
    rel = f"{SEG_RUN_NAME}/model.keras"
    return rel, result, seg_model_equalize(run_dir / rel)


def _cv_metrics(result: TBRunResult, n_boot: int) -> dict[str, Any]:
    report = result.classification_report()
    nested = result.nested_operating_points()
    return {
        "summary": result.summary(n_boot=n_boot),
        "threshold": result.config.threshold,
        "calibration": result.config.calibration,
        "classification_report": report.to_dict(orient="index"),
        "confusion_matrix": result.confusion_matrix().to_dict(orient="index"),
        "operating_points": result.operating_points().to_dict(orient="index"),
        "nested_operating_points": nested.to_dict(orient="records"),
        "brier": result.brier(n_boot=n_boot).to_dict(orient="index"),
        "per_site": result.per_site().to_dict(orient="index"),
        "n_splits": result.config.n_splits,
        "n_repeats": result.config.n_repeats,
        "inner_splits": result.config.inner_splits,
    }


def _oof_table(table: pd.DataFrame, cv: CVResult) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "id": table["id"].astype(str).to_numpy(),
            "site": table["site"].astype(str).to_numpy(),
            "label": table["label"].to_numpy(np.int64),
            "file": table["image_path"].astype(str).to_numpy(),
            "probability": cv.mean_proba,
        }
    )
    masks = [mask_text(v) for v in table["mask_path"]]
    for r in range(cv.proba.shape[0]):
        out[f"proba_r{r}"] = cv.proba[r]
        out[f"fold_r{r}"] = cv.folds[r]
        if cv.uncalibrated is not None:
            out[f"uncalibrated_r{r}"] = cv.uncalibrated[r]
    out["mask_file"] = masks
    return out


def _save_features(path: Path, X: np.ndarray, names: list[str], ids: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                X=X.astype(np.float32),
                feature_names=np.asarray(names, dtype=str),
                ids=np.asarray(ids, dtype=str),
            )

    atomic_write(path, write, ".npz")


def _save_classifier(path: Path, model: Any) -> None:
    atomic_write(path, lambda tmp: joblib.dump(model, tmp), ".joblib")


def _check_run_dir(run_dir: Path, key: dict[str, Any], overwrite: bool) -> bool:
    """True when ``run_dir`` already holds the finished run of this key."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TBRunError(f"run_dir {run_dir} exists and is not a folder")
    marker = read_json(run_dir / RUN_MARKER)
    if isinstance(marker, dict) and marker.get("run_type") == RUN_TYPE:
        if marker.get("key") == key["key"] and marker.get("status") == "done":
            return True
        if marker.get("key") != key["key"] and not overwrite:
            raise TBRunError(
                f"{run_dir} holds another TB run ({differences(marker, key)}); pass "
                "overwrite=True (cxrlib train-tb --overwrite) or choose another RUN_DIR"
            )
        clear_run(run_dir, TB_RUN_FILES)
        return False
    foreign = describe_foreign(run_dir) if run_dir.is_dir() else None
    if foreign:
        raise TBRunError(f"{run_dir} is {foreign}; choose another RUN_DIR for the TB run")
    return False


def train_tb(
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    config: TBConfig | None = None,
    *,
    seg_model: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    n_jobs: int | None = None,
    n_boot: int = 2000,
) -> TBRunResult:
    """Train (or reuse) a TB classifier on a dataset folder and cross-validate it.

    Parameters
    ----------
    data_dir : path
        A dataset folder (:func:`cxrlib.data.datasets.scan_dataset`); radiographs with a
        label (file name ending in ``_0`` / ``_1``) are used, with or without masks.
    run_dir : path
        Folder for the run's files (created).
    config : TBConfig, optional
        Default ``TBConfig()``: hand-crafted features (with asymmetry) at 512 px + the
        ``"ensemble"`` of logistic regression and gradient boosting.
    seg_model : path, optional
        A ``.keras`` segmentation model (or a ``cxrlib train-seg`` run folder),
        copied into the run. None: a model is trained on the radiographs with
        masks in ``data_dir`` (:meth:`TBConfig.seg_config`) into
        ``run_dir/segmentation`` (load-or-train).
    overwrite : bool, default False
        Replace another TB run in ``run_dir`` (and another segmentation run in
        ``run_dir/segmentation``).
    progress : bool, default True
    n_jobs : int, optional
        Worker processes for loading and hand-crafted features (default: all cores).
    n_boot : int, default 2000
        Bootstrap resamples of the AUC intervals in ``cv_metrics.json``.

    Returns
    -------
    TBRunResult

    Raises
    ------
    ValueError
        No labelled radiographs, or only one class; too few per class for the folds.
    TBRunError
        ``run_dir`` holds another run (TB or segmentation).
    cxrlib.lock.RunLockedError
        Another process is running in ``run_dir``.
    cxrlib.tb.features.cnn.WeightsUnavailableError
        An ImageNet extractor was asked for and its weights are not on disk.
    """
    start = time.perf_counter()
    config = TBConfig() if config is None else config
    if not isinstance(config, TBConfig):
        raise ValueError(f"config must be a TBConfig, got {type(config).__name__}")
    run_dir = Path(run_dir)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"dataset folder {data_dir} does not exist or is not a folder")
    seg_path = find_seg_model(seg_model) if seg_model is not None else None
    table = _labelled_table(data_dir, progress)
    counts = table["label"].value_counts()
    if counts.min() < config.n_splits:
        raise ValueError(
            f"{data_dir}: {config.n_splits}-fold cross-validation needs at least "
            f"{config.n_splits} radiographs of each class, got {int(counts.get(0, 0))} normal "
            f"and {int(counts.get(1, 0))} TB"
        )
    key = run_key(
        _WHAT,
        TB_FORMAT_VERSION,
        config.to_dict(),
        table,
        masks=seg_path is None,  # the masks matter when the run trains its own model
        segmentation=_seg_source(config, seg_path),
    )
    if run_dir.exists() and not run_dir.is_dir():
        raise TBRunError(f"run_dir {run_dir} exists and is not a folder")
    if run_dir.is_dir() and not os.access(run_dir, os.W_OK) and not overwrite:
        if _check_run_dir(run_dir, key, overwrite):  # a read-only finished run: no lock
            return load_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # one run at a time in the folder
        if _check_run_dir(run_dir, key, overwrite):
            logger.info("reusing the TB run in %s (same key %s)", run_dir, key["key"][:12])
            return load_run(run_dir)
        return _train_locked(
            run_dir,
            data_dir,
            config,
            table,
            key,
            seg_path,
            overwrite=overwrite,
            progress=progress,
            n_jobs=n_jobs,
            n_boot=n_boot,
            start=start,
        )


def _train_locked(
    run_dir: Path,
    data_dir: Path,
    config: TBConfig,
    table: pd.DataFrame,
    key: dict[str, Any],
    seg_path: Path | None,
    *,
    overwrite: bool,
    progress: bool,
    n_jobs: int | None,
    n_boot: int,
    start: float,
) -> TBRunResult:
    """The TB run proper, while :func:`train_tb` holds the folder's lock."""
    marker = {"run_type": RUN_TYPE, "format": TB_FORMAT_VERSION, "key": key["key"]}
    write_json(run_dir / RUN_MARKER, {**marker, "status": "training", **key})

    timings: dict[str, float] = {}
    tick = time.perf_counter()
    seg_rel, seg_result, seg_equalize = _obtain_seg_model(
        table, config, run_dir, seg_path, overwrite=overwrite, progress=progress, n_jobs=n_jobs
    )
    timings["segmentation_seconds"] = time.perf_counter() - tick

    model = load_segmentation_model(run_dir / seg_rel)
    tick = time.perf_counter()
    inputs = prepare_inputs(
        table["image_path"].tolist(),
        model,
        config.image_size,
        mask_threshold=config.mask_threshold,
        seg_equalize=seg_equalize,
        progress=progress,
    )
    timings["masks_seconds"] = time.perf_counter() - tick
    if inputs.skipped:
        warnings.warn(
            f"{len(inputs.skipped)} radiograph(s) left out: {listed(inputs.skipped)}",
            stacklevel=2,
        )
    used = table.iloc[inputs.kept].reset_index(drop=True)
    used = used[["id", "site", "label", "image_path", "mask_path"]]

    tick = time.perf_counter()
    X, names = extract_combined(
        config.features,
        inputs.images,
        inputs.masks,
        options=config.feature_options,
        seg_model=model,
        n_jobs=n_jobs,
        progress=progress,
    )
    timings["features_seconds"] = time.perf_counter() - tick

    tick = time.perf_counter()
    y = used["label"].to_numpy(np.int64)
    cv = cross_validate(
        X,
        y,
        used["site"].astype(str).to_numpy(),
        config.classifier,
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
        calibration=config.calibration,
        inner_splits=config.inner_splits,
        progress=progress,
    )
    timings["cv_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    # one BLAS thread, as in cross_validate: the matrices are small, and on a busy
    # machine more threads made this fit several times slower
    with threadpool_limits(limits=1, user_api="blas"):
        final = fit_classifier(
            config.classifier,
            X,
            y,
            seed=config.seed,
            calibration=config.calibration,
            inner_splits=config.inner_splits,
        )
    # the same rules as inside every outer fold, on the final model's inner folds
    final_points = choose_thresholds(y, final.oof_proba_)
    timings["fit_seconds"] = time.perf_counter() - tick

    result = TBRunResult(
        run_dir=run_dir,
        config=config,
        key=key["key"],
        trained=True,
        table=used,
        X=X,
        feature_names=names,
        cv=cv,
        seg_model_path=run_dir / seg_rel,
        seg_result=seg_result,
        skipped=inputs.skipped,
        timings=timings,
        inputs=inputs,
        final_operating_points=final_points,
    )
    _save_classifier(run_dir / "tb_model.joblib", final)
    _save_features(run_dir / "features.npz", X, names, used["id"].astype(str).tolist())
    write_csv(run_dir / "oof_predictions.csv", _oof_table(used, cv))
    write_csv(run_dir / "fold_thresholds.csv", cv.thresholds)
    write_json(run_dir / "cv_metrics.json", _cv_metrics(result, n_boot))
    timings["total_seconds"] = time.perf_counter() - start
    by_site = used.groupby(["site", "label"]).size()
    write_json(
        run_dir / "tb_config.json",
        {
            "config": config.to_dict(),
            "features": list(config.features),
            "n_features": int(X.shape[1]),
            "feature_names": names,
            "seg_model": seg_rel,
            "seg_equalize": seg_equalize,
            "calibration": config.calibration,
            "operating_points": final_points,
            "seg_model_source": str(seg_path) if seg_path else "trained for this run",
            "data_dir": str(data_dir.resolve()),
            "n_images": len(used),
            "by_site_label": {f"{s}|{lab}": int(n) for (s, lab), n in by_site.items()},
            "skipped": [list(s) for s in inputs.skipped],
            "timings": timings,
            "versions": versions(*_PACKAGES),
        },
    )
    write_json(run_dir / RUN_MARKER, {**marker, "status": "done", **key})
    return result
