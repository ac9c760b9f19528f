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
``best.weights.h5``, ``backup/``, ``cxrlib.lock``
    While the run trains: the best checkpoint, the state after the last finished epoch,
    the folder's lock (deleted when the run ends).

Load-or-train
    The key is the SHA-256 of the configuration, the cxrlib training format and
    the identity (path, size, modification time) of every image and mask file
    used. A second call with the same key finds ``key.json`` marked ``done`` and
    returns the saved run without training
    (:attr:`cxrlib.seg.results.TrainResult.trained` is False).
    A different key raises :class:`RunDirError` unless ``overwrite=True``, which
    deletes the previous run's files (never other files in the folder) and
    retrains: a trained model is never replaced by accident. A folder holding another
    kind of run (a TB run, segmented masks) is always refused.

One run per folder
    The run holds the folder's lock (:func:`cxrlib.lock.run_lock`): a second process gets a
    clear error naming the owner; a dead owner's lock is taken over with a warning.

Divergence
    Non-finite losses or metrics, or a collapsing validation Dice
    (:mod:`cxrlib.seg.checkpoints`), end the run with :class:`TrainingError`; ``key.json``
    says ``failed``, :func:`cxrlib.seg.inference.load_segmentation_model` refuses the
    folder's model and the next call with the same key trains again.

Interruption
    Every file is written atomically, the training state included (``backup/`` after
    every epoch, ``best.weights.h5``, ``history.csv``: :mod:`cxrlib.seg.checkpoints`).
    Calling again with the same key removes what the interrupted run left and resumes at
    the last finished epoch, or, when training had finished (``key.json`` says
    ``fitted``), scores ``model.keras`` or rebuilds it from ``best.weights.h5``
    (:mod:`cxrlib.seg.train_rundir`); an unreadable backup is reported and discarded.
    Each says so in one line on stderr. ``overwrite=True`` discards an unfinished run.

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
from cxrlib.lock import run_lock
from cxrlib.precision import cpu_supports_bf16, precision_scope
from cxrlib.runs import read_json, run_key, versions, write_csv, write_json
from cxrlib.seg import checkpoints, train_rundir
from cxrlib.seg.checkpoints import (
    BACKUP,
    BEST_WEIGHTS,
    HISTORY,
    Backup,
    TrainingError,
    check_weights_file,
    notice,
)
from cxrlib.seg.results import (
    TrainResult,
    evaluate_model,
    read_history,
    read_run_files,
    summaries_to_dict,
)
from cxrlib.seg.train_config import TrainConfig
from cxrlib.seg.train_rundir import RUN_FILES, RunDirError

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


# --------------------------------------------------------------------------- callbacks


def _callbacks(
    run_dir: Path,
    config: TrainConfig,
    timer: Any,
    rows: list[dict[str, Any]] | None = None,
    best: float | None = None,
) -> list[Any]:
    """The training callbacks; ``rows`` and ``best`` continue a resumed run's history."""
    import keras

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
    best_weights = checkpoints.best_weights(run_dir / BEST_WEIGHTS, best)
    return [
        *([timer] if timer is not None else []),
        *schedule,
        checkpoints.learning_rate_logger(),
        checkpoints.history_log(run_dir / HISTORY, rows),
        # after the history row (kept for the diagnosis), before any checkpoint
        checkpoints.divergence_guard(run_dir, best),
        best_weights,
        keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=config.patience),
        # last: an interruption before it repeats (not loses) an epoch
        checkpoints.backup_callback(Backup(run_dir / BACKUP), best_weights),
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


def _compiled_model(config: TrainConfig, steps_per_epoch: int) -> Any:
    """A fresh, compiled model (call inside the run's precision scope)."""
    import keras

    from cxrlib.seg.losses import DiceCoefficient, IoU, get_loss
    from cxrlib.seg.models import build_model

    keras.utils.set_random_seed(config.seed)
    model = build_model(
        config.model,
        input_shape=(config.img_size, config.img_size, 1),
        filters=config.resolved_filters,
    )
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=get_loss(config.loss),
        metrics=[DiceCoefficient(threshold=config.threshold), IoU(threshold=config.threshold)],
    )
    return model


def _training_data(
    config: TrainConfig, split: pd.DataFrame, loaded: Any, make_sequence: Callable[..., Any]
) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    is_train = (split["split"] == "train").to_numpy()
    is_val = (split["split"] == "val").to_numpy()
    train_seq = make_sequence(
        loaded.images[is_train],
        loaded.masks[is_train],
        split.loc[is_train, "id"].astype(str).tolist(),
        split.loc[~is_train, "id"].astype(str).tolist(),
        config,
    )
    return train_seq, (loaded.images[is_val], loaded.masks[is_val].astype(np.float32))


def _resume_state(run_dir: Path, may_resume: bool) -> Any:
    """The readable backup to resume from (None: start afresh, old state cleared)."""
    resume = Backup(run_dir / BACKUP).read() if may_resume else None
    if resume is None:
        train_rundir.clear_training_state(run_dir)
        return None
    best = run_dir / BEST_WEIGHTS
    if resume.best is not None and (not best.is_file() or check_weights_file(best)):
        best.unlink(missing_ok=True)  # lost or damaged: the next best epoch saves it again
        resume.best = None
    return resume


def _fit(
    run_dir: Path,
    config: TrainConfig,
    split: pd.DataFrame,
    loaded: Any,
    progress: bool,
    may_resume: bool,
    make_sequence: Callable[..., Any],
) -> dict[str, Any]:
    """Build, compile and fit (resuming from ``backup/`` when it is readable)."""
    train_seq, val_data = _training_data(config, split, loaded, make_sequence)
    timer = checkpoints.epoch_timer()
    resume = _resume_state(run_dir, may_resume)
    with precision_scope(config.precision):
        model = _compiled_model(config, len(train_seq))
        if resume is not None and not Backup(run_dir / BACKUP).load_into(model, resume):
            train_rundir.clear_training_state(run_dir)
            resume, model = None, _compiled_model(config, len(train_seq))
        rows: list[dict[str, Any]] = []
        if resume is not None:
            history = read_history(run_dir / HISTORY)
            if "epoch" in history and len(history):
                rows = history[history["epoch"] < resume.epoch].to_dict(orient="records")
            notice(f"resuming the training in {run_dir} after epoch {resume.epoch}")
        start = time.perf_counter()
        model.fit(
            train_seq,
            validation_data=val_data,
            validation_batch_size=config.batch_size,
            epochs=config.epochs,
            initial_epoch=resume.epoch if resume is not None else 0,
            callbacks=_callbacks(
                run_dir, config, timer, rows, resume.best if resume is not None else None
            ),
            verbose=2 if progress else 0,
        )
        fit_seconds = time.perf_counter() - start
    if not (run_dir / BEST_WEIGHTS).is_file():
        raise TrainingError(
            f"training in {run_dir} saved no checkpoint (no epoch had a finite validation "
            "Dice); try a lower learning_rate or precision='float32'"
        )
    seconds = timer.train_seconds
    n_train = int((split["split"] == "train").sum())
    steady = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "fit_seconds": fit_seconds,
        "epochs_this_call": len(seconds),
        "train_images": n_train,
        "train_seconds_per_epoch": seconds,
        "train_images_per_s": n_train * len(seconds) / sum(seconds) if seconds else None,
        "train_images_per_s_steady": n_train * len(steady) / sum(steady) if steady else None,
        "resumed_after_epoch": resume.epoch if resume is not None else None,
    }


def _save_model_atomic(model: Any, path: Path) -> None:
    atomic_write(path, model.save, ".keras")


def _model_from_best(
    run_dir: Path, config: TrainConfig, split: pd.DataFrame, loaded: Any, make_sequence: Any
) -> None:
    """Write ``model.keras`` from ``best.weights.h5``, then delete the checkpoint."""
    train_seq, _ = _training_data(config, split, loaded, make_sequence)
    with precision_scope(config.precision):
        model = _compiled_model(config, len(train_seq))
        model.optimizer.build(model.trainable_variables)
        model.load_weights(str(run_dir / BEST_WEIGHTS))
        _save_model_atomic(model, run_dir / "model.keras")
    (run_dir / BEST_WEIGHTS).unlink(missing_ok=True)


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
        If ``run_dir`` holds a run with another key, or an unfinished run of this key:
        delete its files and train afresh (True) or raise :class:`RunDirError` / resume
        (False).
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
        ``run_dir`` holds another run and ``overwrite`` is False, or another kind of run.
    cxrlib.lock.RunLockedError
        Another process is training into ``run_dir``.
    TrainingError
        Training diverged (non-finite losses or metrics, collapsed Dice) or saved no
        checkpoint; ``key.json`` says ``failed``.
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
    if run_dir.is_dir():
        train_rundir.refuse_foreign(run_dir)
        if not os.access(run_dir, os.W_OK) and train_rundir.reusable(run_dir, key):
            return read_run_files(run_dir, config, key)  # a read-only finished run: no lock
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        train_rundir.remove_stale(run_dir)
        action = train_rundir.prepare(run_dir, key_inputs, overwrite)
        if action == "reuse":
            logger.info("reusing the trained model in %s (same key %s)", run_dir, key[:12])
            return read_run_files(run_dir, config, key)
        try:
            return _train(
                run_dir, config, split, key_inputs, action, progress, cache_dir, n_jobs, start
            )
        except TrainingError as error:
            train_rundir.mark_failed(run_dir, key_inputs, error)
            raise


def _train(
    run_dir: Path,
    config: TrainConfig,
    split: pd.DataFrame,
    key_inputs: dict[str, Any],
    action: str,
    progress: bool,
    cache_dir: str | os.PathLike[str] | bool | None,
    n_jobs: int | None,
    start: float,
) -> TrainResult:
    key = key_inputs["key"]
    stored = read_json(run_dir / "key.json")
    stored = stored if isinstance(stored, dict) else {}
    may_resume = stored.get("key") == key
    if action == "train":
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
    recovered = train_rundir.finished_model(run_dir) if action == "finish" else None
    if recovered is None:
        fit_timings = _fit(
            run_dir, config, split, loaded, progress, may_resume, _make_training_sequence
        )
        fitted = {"key": key, "status": "fitted", "fit_timings": fit_timings, **key_inputs}
        write_json(run_dir / "key.json", fitted)  # best.weights.h5 is final now
        Backup(run_dir / BACKUP).discard()
        recovered = "best"
    else:
        fit_timings = {**(stored.get("fit_timings") or {}), "recovered_from": recovered}
    if recovered == "best":
        _model_from_best(run_dir, config, split, loaded, _make_training_sequence)
    history = read_history(run_dir / HISTORY)
    write_json(run_dir / "history.json", history.to_dict(orient="records"))

    from cxrlib.seg.inference import load_segmentation_model

    model = load_segmentation_model(run_dir / "model.keras")
    per_image, eval_seconds = evaluate_model(model, config, split, loaded)
    write_csv(run_dir / "per_image.csv", per_image)
    scores = summaries_to_dict(per_image, seed=config.seed)
    resumed = action == "finish" or fit_timings.get("resumed_after_epoch") is not None
    timings = {
        **fit_timings,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
        "total_seconds": time.perf_counter() - start,
        "resumed": resumed,
    }
    write_json(run_dir / "metrics.json", {"scores": scores, "timings": timings})
    write_json(run_dir / "key.json", {"key": key, "status": "done", **key_inputs})
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / "model.keras",
        config=config,
        key=key,
        trained=True,
        resumed=resumed,
        epochs_run=len(history),
        history=history,
        split=out_split.reset_index(drop=True),
        metrics=scores,
        timings=timings,
    )
