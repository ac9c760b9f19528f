"""The training state of a segmentation run, every file written atomically.

:func:`cxrlib.seg.train.train_segmentation` trains with these callbacks instead of Keras'
``CSVLogger``, ``ModelCheckpoint``, ``BackupAndRestore`` and ``TerminateOnNaN``, which write
their files in place (a kill while they write leaves a half-written file that every later
run trips over):

:func:`history_log`
    Rewrites ``history.csv`` (one row per epoch) after every epoch.
:func:`divergence_guard`
    Raises :class:`TrainingError` when the training loss, the validation loss or a
    validation metric is not finite, or when the validation Dice collapses
    (:class:`DivergenceWatch`).
:func:`best_weights`
    Saves ``best.weights.h5`` whenever the validation Dice improves.
:class:`Backup` / :func:`backup_callback`
    ``backup/epoch-NNNN.weights.h5`` (model and optimizer state after epoch N) and
    ``backup/state.json`` (``{"epoch": N, "weights": name, "best": best Dice}``), written
    in that order: the state only ever names a complete weights file. An unreadable backup
    (also one left by Keras' ``BackupAndRestore``: ``latest.weights.h5``) is reported in
    one line naming the file and discarded; training then starts again.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlib.atomic import atomic_write
from cxrlib.errors import CxrlibError
from cxrlib.runs import read_json, write_csv, write_json

__all__ = [
    "TrainingError",
    "BEST_WEIGHTS",
    "BACKUP",
    "HISTORY",
    "COLLAPSE_BEST",
    "COLLAPSE_FRACTION",
    "COLLAPSE_EPOCHS",
    "notice",
    "save_weights",
    "check_weights_file",
    "DivergenceWatch",
    "history_divergence",
    "Backup",
    "Resume",
    "history_log",
    "divergence_guard",
    "best_weights",
    "backup_callback",
    "epoch_timer",
    "learning_rate_logger",
]

logger = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"
BACKUP = "backup"
HISTORY = "history.csv"
_STATE = "state.json"
_LEGACY_WEIGHTS = "latest.weights.h5"
_LEGACY_STATE = "training_metadata.json"
#: The validation Dice *collapses* when, after reaching at least ``COLLAPSE_BEST``, it stays
#: below ``COLLAPSE_FRACTION`` of its best value for ``COLLAPSE_EPOCHS`` epochs in a row.
COLLAPSE_BEST = 0.5
COLLAPSE_FRACTION = 0.1
COLLAPSE_EPOCHS = 3
#: Logged values that must stay finite, and their names in messages.
_WATCHED = {
    "loss": "training loss",
    "dice": "training Dice",
    "iou": "training IoU",
    "val_loss": "validation loss",
    "val_dice": "validation Dice",
    "val_iou": "validation IoU",
}
#: What :func:`history_divergence` checks in a finished run's history.
_HISTORY_WATCHED = ("loss", "val_loss", "val_dice")


class TrainingError(CxrlibError, RuntimeError):
    """Training produced no usable model (NaN losses or metrics, a collapsed Dice)."""


def notice(message: str) -> None:
    """Tell the user what a run did about its folder: one line on stderr (and the log)."""
    logger.info(message)
    print(f"cxrlib: {message}", file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def save_weights(model: Any, path: Path) -> None:
    """``model.save_weights`` to ``path`` atomically (the name must end in ``.weights.h5``)."""
    atomic_write(path, lambda tmp: model.save_weights(tmp), ".weights.h5")


def check_weights_file(path: Path) -> str | None:
    """None when ``path`` is a complete HDF5 file (every dataset readable), else why not."""
    import h5py

    def read(_name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError, ...
        return _reason(error)
    return None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: nothing to check


class DivergenceWatch:
    """Follow a training epoch by epoch; :meth:`epoch` says when it has diverged.

    A training has diverged when a watched value (losses, Dice, IoU) is not finite, or when
    the validation Dice *collapses*: after reaching at least ``COLLAPSE_BEST`` it stays below
    ``COLLAPSE_FRACTION`` of its best value for ``COLLAPSE_EPOCHS`` epochs in a row (a
    one-epoch dip of a small, noisy validation set is not a collapse).

    Parameters
    ----------
    best : float, optional
        The best validation Dice of earlier epochs (a resumed training).
    watched : sequence of str
        The logged values that must be finite (default: losses, Dice and IoU).
    """

    def __init__(self, best: float | None = None, watched: Any = tuple(_WATCHED)) -> None:
        self.best = best
        self.watched = tuple(watched)
        self.low = 0

    def epoch(self, logs: dict[str, Any]) -> str | None:
        """Take one epoch's logs; return why the training diverged, or None."""
        for name in self.watched:
            if name in logs and not _finite(logs[name]):
                return f"the {_WATCHED[name]} is {float(logs[name])}"
        dice = logs.get("val_dice")
        if dice is None or not _finite(dice):
            return None
        dice = float(dice)
        best = self.best
        if best is not None and best >= COLLAPSE_BEST and dice < COLLAPSE_FRACTION * best:
            self.low += 1
            if self.low >= COLLAPSE_EPOCHS:
                return (
                    f"the validation Dice collapsed from {best:.3f} to {dice:.3f} "
                    f"({self.low} epochs in a row)"
                )
        else:
            self.low = 0
        self.best = dice if best is None else max(best, dice)
        return None


def history_divergence(history: pd.DataFrame) -> str | None:
    """Why a run's ``history.csv`` shows a diverged training (None: it does not)."""
    watch = DivergenceWatch(watched=_HISTORY_WATCHED)
    for row in history.to_dict(orient="records"):
        reason = watch.epoch(row)
        if reason:
            return f"{reason} in epoch {int(row.get('epoch', 0)) + 1}"
    return None


# --------------------------------------------------------------------------- backup


class Resume:
    """A readable backup: ``epoch`` epochs done, their weights, the best validation Dice."""

    def __init__(self, epoch: int, weights: Path, best: float | None) -> None:
        self.epoch, self.weights, self.best = epoch, weights, best


class Backup:
    """The ``backup/`` folder of a run (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def discard(self) -> None:
        """Delete the backup folder."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)

    def _unreadable(self, path: Path, reason: str) -> None:
        notice(
            f"discarding the unreadable training backup {path} ({reason}); "
            "training starts again from the first epoch"
        )
        self.discard()

    def read(self) -> Resume | None:
        """The backup's state when it is complete and readable; else discard it (None)."""
        if not self.folder.is_dir():
            return None
        state_path = self.folder / _STATE
        if state_path.exists():
            state = read_json(state_path)
            if not isinstance(state, dict) or not isinstance(state.get("weights"), str):
                self._unreadable(state_path, "not a backup state")
                return None
            weights = self.folder / state["weights"]
        elif (self.folder / _LEGACY_STATE).exists() or (self.folder / _LEGACY_WEIGHTS).exists():
            state = read_json(self.folder / _LEGACY_STATE)  # Keras' BackupAndRestore
            weights = self.folder / _LEGACY_WEIGHTS
            if not isinstance(state, dict):
                self._unreadable(self.folder / _LEGACY_STATE, "missing or not JSON")
                return None
        else:
            self.discard()  # nothing in it worth keeping (e.g. only temporary files)
            return None
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or epoch < 0:
            self._unreadable(state_path, f"epoch {epoch!r}")
            return None
        if not weights.is_file():
            self._unreadable(weights, "missing")
            return None
        reason = check_weights_file(weights)
        if reason:
            self._unreadable(weights, reason)
            return None
        best = state.get("best")
        return Resume(epoch, weights, float(best) if _finite(best) and best is not None else None)

    def load_into(self, model: Any, resume: Resume) -> bool:
        """Load the backup's weights into a compiled ``model``; on failure discard it."""
        try:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(str(resume.weights))
        except Exception as error:  # another model, a damaged file: start again
            self._unreadable(resume.weights, _reason(error))
            return False
        return True

    def save(self, model: Any, epochs_done: int, best: float | None) -> None:
        """Back up the state after ``epochs_done`` epochs (weights first, then the state)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epochs_done:04d}.weights.h5"
        save_weights(model, self.folder / name)
        write_json(self.folder / _STATE, {"epoch": epochs_done, "weights": name, "best": best})
        for old in self.folder.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
        (self.folder / _LEGACY_STATE).unlink(missing_ok=True)


# --------------------------------------------------------------------------- callbacks
# Keras is imported only when the callbacks are made: importing this module stays cheap.


@functools.cache
def _classes() -> dict[str, type]:
    import keras

    class HistoryLog(keras.callbacks.Callback):
        """Rewrite ``history.csv`` atomically after every epoch (earlier ``rows`` first)."""

        def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
            super().__init__()
            self.path = Path(path)
            self.rows = list(rows)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            values = {name: float(value) for name, value in sorted((logs or {}).items())}
            self.rows.append({"epoch": epoch, **values})
            write_csv(self.path, pd.DataFrame(self.rows))

    class DivergenceGuard(keras.callbacks.Callback):
        """Raise :class:`TrainingError` when training diverges (:class:`DivergenceWatch`)."""

        def __init__(self, run_dir: Path, best: float | None) -> None:
            super().__init__()
            self.run_dir = Path(run_dir)
            self.watch = DivergenceWatch(best)
            self.epoch = 0

        def _fail(self, reason: str) -> None:
            raise TrainingError(
                f"training in {self.run_dir} diverged: {reason}; the run is marked failed. "
                "Try a lower learning rate (--learning-rate) or precision float32"
            )

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not _finite(loss):
                self._fail(f"the training loss is {float(loss)} in epoch {self.epoch + 1}")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            reason = self.watch.epoch(logs or {})
            if reason:
                self._fail(f"{reason} in epoch {epoch + 1}")

    class BestWeights(keras.callbacks.Callback):
        """Save ``best.weights.h5`` atomically when the validation Dice beats ``best``."""

        def __init__(self, path: Path, best: float | None) -> None:
            super().__init__()
            self.path = Path(path)
            self.best = best

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            dice = (logs or {}).get("val_dice")
            if dice is None or not _finite(dice):
                return
            if self.best is None or float(dice) > self.best:
                save_weights(self.model, self.path)
                self.best = float(dice)

    class BackupCallback(keras.callbacks.Callback):
        """Back up the training state after every epoch (see :class:`Backup`)."""

        def __init__(self, backup: Backup, best: BestWeights) -> None:
            super().__init__()
            self.backup = backup
            self.best = best
            self.backup_dir = str(backup.folder)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.backup.save(self.model, epoch + 1, self.best.best)

    return {
        "HistoryLog": HistoryLog,
        "DivergenceGuard": DivergenceGuard,
        "BestWeights": BestWeights,
        "BackupCallback": BackupCallback,
    }


def history_log(path: Path, rows: list[dict[str, Any]] | None = None) -> Any:
    """A callback that rewrites ``history.csv`` atomically after every epoch."""
    return _classes()["HistoryLog"](path, rows or [])


def divergence_guard(run_dir: Path, best: float | None = None) -> Any:
    """A callback that raises :class:`TrainingError` when training diverges."""
    return _classes()["DivergenceGuard"](run_dir, best)


def best_weights(path: Path, best: float | None = None) -> Any:
    """A callback that saves ``path`` atomically when the validation Dice beats ``best``."""
    return _classes()["BestWeights"](path, best)


def backup_callback(backup: Backup, best: Any) -> Any:
    """A callback that backs up the training state after every epoch (``best``: BestWeights)."""
    return _classes()["BackupCallback"](backup, best)


def epoch_timer() -> Any:
    """A callback that records the seconds of training batches per epoch (``train_seconds``)."""
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


def learning_rate_logger() -> Any:
    """A callback that adds the optimizer's learning rate to the epoch logs."""
    import keras

    class LearningRateLogger(keras.callbacks.Callback):
        """Add the optimizer's current learning rate to the epoch logs."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is not None and "learning_rate" not in logs:
                value = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(value))

    return LearningRateLogger()
