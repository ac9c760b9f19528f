"""The run folder of a segmentation training: its files and what a new call does with them.

:func:`cxrlib.seg.train.train_segmentation` holds the folder's lock
(:func:`cxrlib.lock.run_lock`) and then

* refuses a folder holding another kind of run (:func:`refuse_foreign`),
* removes the temporary files an interrupted run left (:func:`remove_stale`),
* decides from ``key.json`` whether to reuse the run, finish it (training had finished:
  ``status`` ``fitted``) or train, clearing what cannot be reused (:func:`prepare`),
* records a failed run (:func:`mark_failed`: ``status`` ``failed`` and the error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlib.errors import CxrlibError
from cxrlib.runs import clear_run, differences, read_json, remove_stale_temporaries, write_json
from cxrlib.seg.checkpoints import (
    BACKUP,
    BEST_WEIGHTS,
    HISTORY,
    Backup,
    check_weights_file,
    history_divergence,
    notice,
)
from cxrlib.seg.results import read_history

__all__ = [
    "RUN_FILES",
    "RunDirError",
    "clear_training_state",
    "finished_model",
    "mark_failed",
    "prepare",
    "refuse_foreign",
    "remove_stale",
    "reusable",
]

#: Files a run writes into its folder (deleted by ``overwrite=True``).
RUN_FILES: tuple[str, ...] = (
    "model.keras",
    "config.json",
    "key.json",
    "split.csv",
    HISTORY,
    "history.json",
    "metrics.json",
    "per_image.csv",
    BEST_WEIGHTS,
)
_BACKUP = BACKUP
#: Files of other kinds of runs: a segmentation run never goes into their folders.
_FOREIGN = {
    "cxrlib_run.json": "a TB run (made by cxrlib train-tb)",
    "tb_config.json": "a TB run (made by cxrlib train-tb)",
    "tb_model.joblib": "a TB run (made by cxrlib train-tb)",
    "lungs.csv": "a folder of segmented masks (made by cxrlib segment)",
}


class RunDirError(CxrlibError, ValueError):
    """The run folder holds a different run (another key) and ``overwrite`` is False."""


def _clear_run(run_dir: Path) -> None:
    clear_run(run_dir, RUN_FILES, [_BACKUP])


def clear_training_state(run_dir: Path) -> None:
    """Forget a training that cannot be resumed: backup, checkpoint, history."""
    clear_run(run_dir, (HISTORY, BEST_WEIGHTS), [_BACKUP])


def _is_done(run_dir: Path, key: str) -> bool:
    stored = read_json(run_dir / "key.json")
    if not isinstance(stored, dict) or stored.get("key") != key or stored.get("status") != "done":
        return False
    return all((run_dir / n).is_file() for n in ("model.keras", "metrics.json", "split.csv"))


def reusable(run_dir: Path, key: str) -> bool:
    """Whether ``run_dir`` holds the finished, not diverged run of ``key`` (read only)."""
    return _is_done(run_dir, key) and history_divergence(read_history(run_dir / HISTORY)) is None


def refuse_foreign(run_dir: Path) -> None:
    """Raise :class:`RunDirError` when ``run_dir`` holds another kind of run (a TB run...)."""
    for name, what in _FOREIGN.items():
        if (run_dir / name).exists():
            raise RunDirError(
                f"{run_dir} holds {what} ({name}), not a segmentation run; choose another "
                "run folder (cxrlib train-seg --out)"
            )


def remove_stale(run_dir: Path) -> None:
    """Delete the temporary files of interrupted atomic writes (call under the lock)."""
    stale = remove_stale_temporaries(run_dir, RUN_FILES)
    backup = run_dir / _BACKUP
    if backup.is_dir():
        stale += [p for p in backup.glob(".*") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
    if stale:
        names = ", ".join(str(p.relative_to(run_dir)) for p in stale)
        notice(
            f"removed {len(stale)} temporary file(s) of an interrupted run in {run_dir}: {names}"
        )


def prepare(run_dir: Path, key_inputs: dict[str, Any], overwrite: bool) -> str:
    """What to do with ``run_dir``: "reuse", "finish" (training had finished), "train"."""
    key = key_inputs["key"]
    stored = read_json(run_dir / "key.json")
    if isinstance(stored, dict) and stored.get("key") == key:
        status = stored.get("status")
        if _is_done(run_dir, key):
            reason = history_divergence(read_history(run_dir / HISTORY))
            if reason is None:
                return "reuse"
            notice(f"not reusing the run in {run_dir}: its training diverged ({reason})")
            _clear_run(run_dir)
        elif status == "failed":
            error = stored.get("error") or "no reason recorded"
            notice(f"the last run in {run_dir} failed ({error}); training it again")
            _clear_run(run_dir)
        elif overwrite:
            notice(f"overwrite: discarding the unfinished run in {run_dir}")
            _clear_run(run_dir)
        elif status == "fitted":
            return "finish"
        return "train"
    if isinstance(stored, dict):
        if not overwrite:
            raise RunDirError(
                f"{run_dir} holds another run ({differences(stored, key_inputs)}); pass "
                "overwrite=True (cxrlib train-seg --overwrite) or choose another run folder"
            )
        _clear_run(run_dir)
    elif (run_dir / "model.keras").exists():
        if not overwrite:
            raise RunDirError(
                f"{run_dir} holds a model.keras without key.json; pass overwrite=True or "
                "choose another run folder"
            )
        _clear_run(run_dir)
    clear_training_state(run_dir)  # a backup without key.json is nobody's to resume
    return "train"


def mark_failed(run_dir: Path, key_inputs: dict[str, Any], error: BaseException) -> None:
    """Record ``status: failed`` and the error; delete the backup and the checkpoint."""
    Backup(run_dir / _BACKUP).discard()
    (run_dir / BEST_WEIGHTS).unlink(missing_ok=True)
    status = {"key": key_inputs["key"], "status": "failed", "error": str(error)}
    write_json(run_dir / "key.json", {**status, **key_inputs})


def finished_model(run_dir: Path) -> str | None:
    """How a finished training's model is recovered: "model", "best" or None (retrain)."""
    from cxrlib.seg.inference import ModelFileError, load_segmentation_model

    model_path = run_dir / "model.keras"
    if model_path.is_file():
        try:
            load_segmentation_model(model_path)
        except ModelFileError as error:
            notice(f"discarding the unreadable {model_path} ({error})")
            model_path.unlink(missing_ok=True)
        else:
            notice(f"training in {run_dir} had finished: scoring its saved model.keras")
            return "model"
    best = run_dir / BEST_WEIGHTS
    reason = check_weights_file(best) if best.is_file() else "missing"
    if reason is None:
        notice(
            f"training in {run_dir} had finished: rebuilding model.keras from {BEST_WEIGHTS} "
            "instead of retraining"
        )
        return "best"
    notice(
        f"training in {run_dir} had finished but left no readable model.keras or "
        f"{BEST_WEIGHTS} ({reason}): training again"
    )
    clear_training_state(run_dir)
    return None
