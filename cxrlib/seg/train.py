"""Train a lung-segmentation network (U-Net or ResUNet) and score it, load-or-train.

:func:`train_segmentation` runs the whole chain of the book's segmentation
chapter and writes everything into one run folder::

    scan (cxrlib.data.datasets) -> split BEFORE augmentation, rows with masks only
    (cxrlib.data.splits) -> arrays at the model size (cxrlib.preprocess) ->
    SegmentationSequence (augments the training split only) -> model.fit ->
    best checkpoint -> Dice / IoU / HD95 per site with bootstrap CIs

Files written into ``run_dir`` (each atomically: temporary file + rename):

``model.keras``
    The best model (highest validation Dice), reloadable with
    :func:`cxrlib.seg.inference.load_segmentation_model`.
``config.json``
    The :class:`~cxrlib.seg.train_config.TrainConfig`, the resolved filters and the
    library versions.
``key.json``
    The run's key (see *Load-or-train* below) and its status.
``split.csv``
    ``id, site, label, split`` of every image with a mask.
``history.csv`` / ``history.json``
    One row per epoch: losses, Dice, IoU, learning rate.
``metrics.json``
    ``{"scores": {split: {resolution: {postprocess: {site: {...}}}}}, "timings":
    {...}}``: validation and test Dice / IoU (mean and 95 % bootstrap CI) and
    median HD95 per site (and ``"all"``), without (``"raw"``) and with
    (``"postprocessed"``, :func:`cxrlib.seg.postprocess.postprocess_mask`)
    post-processing, at the model size (``"model"``) and at each image's original
    resolution (``"original"``: the probability map is upsampled to the original
    size, thresholded and compared with the original mask); the timings include
    ``train_images_per_s``. The validation split also selected the best epoch:
    quote the test scores.
``per_image.csv``
    The per-image scores behind ``metrics.json``.

Load-or-train
    The key is the SHA-256 of the configuration, the cxrlib training format and
    the identity (path, size, modification time) of every image and mask file
    used. A second call with the same key finds ``key.json`` marked ``done`` and
    returns the saved run without training
    (:attr:`cxrlib.seg.results.TrainResult.trained` is False).
    A different key raises :class:`RunDirError` unless ``overwrite=True``, which
    deletes the previous run's files (never other files in the folder) and
    retrains: a trained model is never replaced by accident.

Interruption
    ``keras.callbacks.BackupAndRestore`` keeps the training state in
    ``run_dir/backup``. Calling again with the same key after an interruption
    resumes at the last finished epoch.

CPU recipe
    :func:`cxrlib.seg.train_config.cpu_recipe` is the configuration ``cxrlib train-seg``
    uses by default.

Mixed precision
    ``precision="auto"`` (the default) picks the fastest policy of this machine
    (:mod:`cxrlib.precision`); the policy is set as the global
    Keras policy while the model is built and trained, and the previous policy is
    restored afterwards; the models compute their final sigmoid and the losses in
    float32.

The configuration lives in :mod:`cxrlib.seg.train_config`, the result, the scoring and the
reading of finished run folders in :mod:`cxrlib.seg.results`; the run store (key, atomic
files) is :mod:`cxrlib.runs`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.atomic import atomic_write
from cxrlib.errors import CxrlibError
from cxrlib.precision import cpu_supports_bf16, precision_scope
from cxrlib.runs import clear_run, differences, read_json, run_key, versions, write_csv, write_json
from cxrlib.seg.results import (
    TrainResult,
    read_history,
    read_run_files,
    score_predictions,
    summaries_to_dict,
)
from cxrlib.seg.train_config import TrainConfig

__all__ = [
    "TRAIN_FORMAT_VERSION",
    "RUN_FILES",
    "RunDirError",
    "TrainingError",
    "train_segmentation",
]

logger = logging.getLogger(__name__)

#: What trains (part of the run key: keep it when moving the function).
_WHAT = "cxrlib.seg.train.train_segmentation"

#: Bump when the files or the training procedure change: old runs get a new key.
TRAIN_FORMAT_VERSION = 1
#: Files a run writes into its folder (deleted by ``overwrite=True``).
RUN_FILES: tuple[str, ...] = (
    "model.keras",
    "config.json",
    "key.json",
    "split.csv",
    "history.csv",
    "history.json",
    "metrics.json",
    "per_image.csv",
    "best.weights.h5",
)
_BACKUP = "backup"


class RunDirError(CxrlibError, ValueError):
    """The run folder holds a different run (another key) and ``overwrite`` is False."""


class TrainingError(CxrlibError, RuntimeError):
    """Training produced no usable model (e.g. the loss became NaN in the first epoch)."""


# --------------------------------------------------------------------------- data


def _load_table(data: str | os.PathLike[str] | pd.DataFrame, progress: bool) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        missing = [c for c in ("id", "site", "label", "image_path", "mask_path") if c not in data]
        if missing:
            raise ValueError(
                f"the dataset table lacks column(s) {missing} "
                "(see cxrlib.data.datasets.scan_dataset)"
            )
        return data.copy()
    from cxrlib.data.datasets import scan_dataset

    return scan_dataset(data, progress=progress).table


def _split(table: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """Split the rows that have masks (BEFORE any augmentation); check sizes."""
    from cxrlib.data.splits import check_no_leakage, split_table

    split = split_table(
        table,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        require_mask=True,
    ).reset_index(drop=True)
    check_no_leakage(split)
    counts = split["split"].value_counts()
    if counts.get("train", 0) < 1 or counts.get("val", 0) < 1:
        raise ValueError(
            f"too few images with lung masks to split: {len(split)} with masks gave "
            f"{counts.get('train', 0)} train and {counts.get('val', 0)} validation images; "
            "need at least one of each (about 3 per site and label)"
        )
    return split


def _run_key(config: TrainConfig, table: pd.DataFrame) -> dict[str, Any]:
    """The run's key inputs and their hash under ``"key"`` (:func:`cxrlib.runs.run_key`)."""
    return run_key(_WHAT, TRAIN_FORMAT_VERSION, config.to_dict(), table)


def _clear_run(run_dir: Path) -> None:
    clear_run(run_dir, RUN_FILES, [_BACKUP])


# --------------------------------------------------------------------------- callbacks


def _timing_callback() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds spent on training batches per epoch (validation excluded)."""

        def __init__(self) -> None:
            super().__init__()
            self.train_seconds: list[float] = []
            self._start = 0.0
            self._train_done: float | None = None

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()
            self._train_done = None

        def on_test_begin(self, logs: Any = None) -> None:
            if self._train_done is None:
                self._train_done = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            end = self._train_done if self._train_done is not None else time.perf_counter()
            self.train_seconds.append(end - self._start)

    return EpochTimer()


def _best_so_far(history_csv: Path, monitor: str) -> float | None:
    if not history_csv.is_file():
        return None
    try:
        values = pd.read_csv(history_csv)[monitor].dropna()
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return None
    return float(values.max()) if len(values) else None


def _learning_rate_logger() -> Any:
    import keras

    class LearningRateLogger(keras.callbacks.Callback):
        """Add the optimizer's current learning rate to the epoch logs."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is not None and "learning_rate" not in logs:
                value = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(value))

    return LearningRateLogger()


def _callbacks(run_dir: Path, config: TrainConfig, resuming: bool, timer: Any) -> list[Any]:
    import keras

    history_csv = run_dir / "history.csv"
    best = _best_so_far(history_csv, "val_dice") if resuming else None
    schedule = []
    if config.lr_schedule == "plateau":
        schedule.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=0.5,
                patience=max(1, config.patience // 2),
                min_lr=config.min_learning_rate,
            )
        )
    return [
        keras.callbacks.TerminateOnNaN(),
        timer,
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.weights.h5"),
            monitor="val_dice",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
        ),
        *schedule,
        _learning_rate_logger(),
        keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=config.patience),
        keras.callbacks.CSVLogger(str(history_csv), append=resuming),
        # after the CSV row: an interruption in between repeats (not loses) an epoch
        keras.callbacks.BackupAndRestore(str(run_dir / _BACKUP), delete_checkpoint=True),
    ]


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    import keras

    rate: Any = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate,
            decay_steps=max(1, config.epochs * steps_per_epoch),
            alpha=config.min_learning_rate / config.learning_rate,
        )
    return keras.optimizers.Adam(rate)


def _make_training_sequence(
    images: np.ndarray,
    masks: np.ndarray,
    ids: Sequence[str],
    held_out_ids: Sequence[str],
    config: TrainConfig,
) -> Any:
    """The training batches: augmented, shuffled, refusing validation/test ids."""
    from cxrlib.seg.augment import SegmentationSequence

    return SegmentationSequence(
        images,
        masks,
        batch_size=config.batch_size,
        augment=config.augment,
        shuffle=True,
        seed=config.seed,
        ids=list(ids),
        validation_ids=list(held_out_ids),
    )


def _predict(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    from cxrlib.seg.inference import predict_masks

    return predict_masks(model, images, batch_size=batch_size)


# --------------------------------------------------------------------------- training


def _check_precision(precision: str) -> None:
    if precision != "mixed_bfloat16" or cpu_supports_bf16() is not False:
        return
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return
    warnings.warn(
        "precision='mixed_bfloat16' on a CPU without AVX512_BF16/AMX: bfloat16 is emulated "
        "and training is slower than float32; pass precision='float32'",
        stacklevel=3,
    )


def _fit(
    run_dir: Path,
    config: TrainConfig,
    split: pd.DataFrame,
    loaded: Any,
    progress: bool,
    resuming: bool,
    make_sequence: Callable[..., Any],
) -> dict[str, Any]:
    """Build, compile and fit; save ``model.keras`` from the best checkpoint."""
    import keras

    from cxrlib.seg.losses import DiceCoefficient, IoU, get_loss
    from cxrlib.seg.models import build_model

    is_train = (split["split"] == "train").to_numpy()
    is_val = (split["split"] == "val").to_numpy()
    held_out = split.loc[~is_train, "id"].astype(str).tolist()
    train_seq = make_sequence(
        loaded.images[is_train],
        loaded.masks[is_train],
        split.loc[is_train, "id"].astype(str).tolist(),
        held_out,
        config,
    )
    val_data = (loaded.images[is_val], loaded.masks[is_val].astype(np.float32))
    timer = _timing_callback()
    keras.utils.set_random_seed(config.seed)
    with precision_scope(config.precision):
        model = build_model(
            config.model,
            input_shape=(config.img_size, config.img_size, 1),
            filters=config.resolved_filters,
        )
        model.compile(
            optimizer=_optimizer(config, len(train_seq)),
            loss=get_loss(config.loss),
            metrics=[DiceCoefficient(threshold=config.threshold), IoU(threshold=config.threshold)],
        )
        start = time.perf_counter()
        model.fit(
            train_seq,
            validation_data=val_data,
            validation_batch_size=config.batch_size,
            epochs=config.epochs,
            callbacks=_callbacks(run_dir, config, resuming, timer),
            verbose=2 if progress else 0,
        )
        fit_seconds = time.perf_counter() - start
        best = run_dir / "best.weights.h5"
        if not best.is_file():
            raise TrainingError(
                f"training in {run_dir} saved no checkpoint (the loss was probably NaN from the "
                "first epoch); try a lower learning_rate or precision='float32'"
            )
        model.load_weights(str(best))
        _save_model_atomic(model, run_dir / "model.keras")
    best.unlink(missing_ok=True)
    seconds = timer.train_seconds
    n_train = int(is_train.sum())
    steady = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "fit_seconds": fit_seconds,
        "epochs_this_call": len(seconds),
        "train_images": n_train,
        "train_seconds_per_epoch": seconds,
        "train_images_per_s": n_train * len(seconds) / sum(seconds) if seconds else None,
        "train_images_per_s_steady": n_train * len(steady) / sum(steady) if steady else None,
    }


def _save_model_atomic(model: Any, path: Path) -> None:
    atomic_write(path, model.save, ".keras")


def _evaluate(
    model: Any, config: TrainConfig, split: pd.DataFrame, loaded: Any
) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    frames = []
    for name in ("val", "test"):
        rows = (split["split"] == name).to_numpy()
        if not rows.any():
            continue
        probs = _predict(model, loaded.images[rows], config.batch_size)
        scores = score_predictions(
            probs,
            split.loc[rows].reset_index(drop=True),
            loaded.masks[rows],
            threshold=config.threshold,
            postprocess_k=config.postprocess_k,
            fill_holes=config.fill_holes,
        )
        scores.insert(0, "split", name)
        frames.append(scores)
    return pd.concat(frames, ignore_index=True), time.perf_counter() - start


def _is_done(run_dir: Path, key: str) -> bool:
    stored = read_json(run_dir / "key.json")
    if not stored or stored.get("key") != key or stored.get("status") != "done":
        return False
    return all((run_dir / n).is_file() for n in ("model.keras", "metrics.json", "split.csv"))


def train_segmentation(
    data: str | os.PathLike[str] | pd.DataFrame,
    config: TrainConfig | None = None,
    run_dir: str | os.PathLike[str] = "runs/segmentation",
    *,
    overwrite: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    n_jobs: int | None = None,
) -> TrainResult:
    """Train (or reuse) a segmentation model and score it on validation and test.

    Parameters
    ----------
    data : path or pandas.DataFrame
        A dataset folder (scanned with :func:`cxrlib.data.datasets.scan_dataset`) or its
        table (columns ``id``, ``site``, ``label``, ``image_path``, ``mask_path``).
        Only rows with a mask are used.
    config : TrainConfig, optional
        Defaults to ``TrainConfig()``; see also :func:`cxrlib.seg.train_config.cpu_recipe`.
    run_dir : path
        Folder for the run's files (created).
    overwrite : bool, default False
        If ``run_dir`` holds a run with another key: delete its files and retrain
        (True) or raise :class:`RunDirError` (False).
    progress : bool, default True
        Progress bars and one Keras log line per epoch.
    cache_dir : path, "auto", None or False
        Array cache of :func:`cxrlib.preprocess.load_arrays`.
    n_jobs : int, optional
        Processes that decode and resize images (default: all cores).

    Returns
    -------
    TrainResult
        ``metrics`` is ``{split: {resolution: {postprocess: {site: {...}}}}}``
        with ``split`` in ``"val"``/``"test"``, ``resolution`` in
        ``"model"``/``"original"``, ``postprocess`` in ``"raw"``/``"postprocessed"``
        and ``site`` each site plus ``"all"`` (n, Dice/IoU mean with 95 %
        bootstrap CI, median HD95 in pixels).

    Raises
    ------
    ValueError
        Bad config, too few masks, unreadable files (the message names them).
    RunDirError
        ``run_dir`` holds another run and ``overwrite`` is False.
    TrainingError
        No usable checkpoint (NaN loss).
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir {run_dir} exists and is not a folder")
    start = time.perf_counter()
    table = _load_table(data, progress)
    split = _split(table, config)
    key_inputs = _run_key(config, split)
    key = key_inputs["key"]
    if _is_done(run_dir, key):
        logger.info("reusing the trained model in %s (same key %s)", run_dir, key[:12])
        return read_run_files(run_dir, config, key)
    stored = read_json(run_dir / "key.json")
    if stored is not None and stored.get("key") != key:
        if not overwrite:
            raise RunDirError(
                f"{run_dir} holds another run ({differences(stored, key_inputs)}); pass "
                "overwrite=True (cxrlib train-seg --overwrite) or choose another run folder"
            )
        _clear_run(run_dir)
    elif stored is None and (run_dir / "model.keras").exists():
        if not overwrite:
            raise RunDirError(
                f"{run_dir} holds a model.keras without key.json; pass overwrite=True or "
                "choose another run folder"
            )
        _clear_run(run_dir)
    resuming = (run_dir / _BACKUP).is_dir() and stored is not None and stored.get("key") == key
    if not resuming:
        for name in ("history.csv", "best.weights.h5"):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "key.json", {"key": key, "status": "training", **key_inputs})
    out_split = split[["id", "site", "label", "split"]].copy()
    write_csv(run_dir / "split.csv", out_split)

    from cxrlib.preprocess import load_arrays

    load_start = time.perf_counter()
    loaded = load_arrays(
        split,
        size=config.img_size,
        equalize=config.equalize,
        cache_dir=cache_dir,
        n_jobs=n_jobs,
        progress=progress,
    )
    load_seconds = time.perf_counter() - load_start
    _check_precision(config.precision)  # imports keras: after the worker processes
    write_json(
        run_dir / "config.json",
        {
            **config.to_dict(),
            "resolved_filters": list(config.resolved_filters),
            "versions": versions("keras", "tensorflow", "tensorflow-cpu"),
        },
    )
    fit_timings = _fit(run_dir, config, split, loaded, progress, resuming, _make_training_sequence)
    history = read_history(run_dir / "history.csv")
    write_json(run_dir / "history.json", history.to_dict(orient="records"))

    from cxrlib.seg.inference import load_segmentation_model

    model = load_segmentation_model(run_dir / "model.keras")
    per_image, eval_seconds = _evaluate(model, config, split, loaded)
    write_csv(run_dir / "per_image.csv", per_image)
    scores = summaries_to_dict(per_image, seed=config.seed)
    timings = {
        **fit_timings,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
        "total_seconds": time.perf_counter() - start,
        "resumed": resuming,
    }
    write_json(run_dir / "metrics.json", {"scores": scores, "timings": timings})
    write_json(run_dir / "key.json", {"key": key, "status": "done", **key_inputs})
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / "model.keras",
        config=config,
        key=key,
        trained=True,
        resumed=resuming,
        epochs_run=len(history),
        history=history,
        split=out_split.reset_index(drop=True),
        metrics=scores,
        timings=timings,
    )
