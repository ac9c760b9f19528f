"""TB run folders: their files, their marker, and the checks that a folder holds a TB run.

Files of a run folder (each written atomically: temporary file + rename):

``cxrlib_run.json``
    The marker: ``{"run_type": "cxrlib-tb-run", "status": "done", "key": ...}``.
    :func:`cxrlib.tb.classify.classify` refuses folders without it and names the command
    that made them.
``tb_model.joblib``
    The fitted classifier: a :class:`~cxrlib.tb.calibration.InnerCalibrated` around the
    :func:`cxrlib.tb.classifiers.make_classifier` pipeline (format 3; before, the bare
    pipeline).
``tb_config.json``
    The :class:`~cxrlib.tb.config.TBConfig`, the feature names and dimension, the
    segmentation model (a path relative to the run folder), counts, skipped files,
    timings, versions; ``calibration`` and ``operating_points`` (format 3: rule ->
    ``threshold``, ``sensitivity``, ``specificity``, ``meets_target``, ``degenerate``,
    chosen on the final model's inner out-of-fold probabilities of all radiographs),
    which ``cxrlib classify --operating-point`` uses.
``cv_metrics.json``
    Cross-validation summary (AUC with CI, accuracy, sensitivity, specificity),
    classification report, confusion matrix, WHO operating points (in-sample), per-site
    table; format 3 adds ``brier`` (per site, before and after calibration) and
    ``nested_operating_points`` (per site and operating point, thresholds chosen
    inside the folds).
``oof_predictions.csv``
    One row per radiograph: ``id, site, label, file, probability`` (mean over the
    repeats), ``proba_r<k>``, ``fold_r<k>`` (and, format 3, ``uncalibrated_r<k>``) of
    every repeat and ``mask_file`` (the ground-truth mask, if any: a path or a JSON
    list of paths).
``fold_thresholds.csv``
    Format 3: the nested thresholds, one row per repeat, outer fold and rule
    (:data:`cxrlib.tb.crossval.THRESHOLD_COLUMNS`).
``features.npz``
    ``X`` (``float32 (N, D)``), ``feature_names`` and ``ids``.
``segmentation/`` or ``seg_model.keras``
    The segmentation run trained for this TB run, or a copy of the given model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrlib.errors import CxrlibError
from cxrlib.runs import read_json
from cxrlib.tb.config import TBConfig

__all__ = [
    "RUN_MARKER",
    "RUN_TYPE",
    "SEG_RUN_NAME",
    "TB_FORMAT_VERSION",
    "TB_RUN_FILES",
    "TBRunError",
    "check_tb_run",
    "describe_foreign",
    "listed",
    "mask_text",
    "mask_value",
    "read_stored_config",
]

#: Name of the marker file that identifies a TB run folder.
RUN_MARKER = "cxrlib_run.json"
#: The ``run_type`` written in the marker.
RUN_TYPE = "cxrlib-tb-run"
#: Bump when the files or the procedure change: old runs get a new key (2: the key of
#: :func:`cxrlib.runs.run_key`; 3: calibrated probabilities, nested thresholds).
TB_FORMAT_VERSION = 3
#: Files a TB run writes into its folder (deleted by ``overwrite=True``).
TB_RUN_FILES: tuple[str, ...] = (
    RUN_MARKER,
    "tb_model.joblib",
    "tb_config.json",
    "cv_metrics.json",
    "oof_predictions.csv",
    "features.npz",
    "fold_thresholds.csv",
    "seg_model.keras",
)
#: Sub-folder of a TB run where its segmentation model is trained.
SEG_RUN_NAME = "segmentation"

_MAX_LISTED = 10


class TBRunError(CxrlibError, ValueError):
    """A run folder is not a (finished) TB run, holds another run, or does not fit the data."""


def listed(items: Sequence[Any]) -> str:
    """The first items of a list, comma-separated, and how many more there are."""
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def describe_foreign(run_dir: Path) -> str | None:
    """What made ``run_dir`` when it is not a TB run (None: nothing recognisable)."""
    key = read_json(run_dir / "key.json")
    if isinstance(key, dict) and "train_segmentation" in str(key.get("what", "")):
        return "a segmentation run, not a TB run (made by cxrlib train-seg)"
    if (run_dir / "model.keras").is_file() and (run_dir / "config.json").is_file():
        return "a segmentation run, not a TB run (made by cxrlib train-seg)"
    if (run_dir / "lungs.csv").is_file():
        return "a folder of segmented masks, not a TB run (made by cxrlib segment)"
    return None


def check_tb_run(run_dir: str | os.PathLike[str]) -> Path:
    """Return ``run_dir`` if it holds a finished TB run, else raise :class:`TBRunError`."""
    path = Path(run_dir)
    if not path.exists():
        raise TBRunError(f"RUN_DIR {path} does not exist; make one with cxrlib train-tb")
    if not path.is_dir():
        raise TBRunError(f"RUN_DIR {path} is not a folder")
    marker = read_json(path / RUN_MARKER)
    if not isinstance(marker, dict) or marker.get("run_type") != RUN_TYPE:
        foreign = describe_foreign(path)
        if foreign:
            raise TBRunError(f"RUN_DIR {path} is {foreign}")
        raise TBRunError(
            f"RUN_DIR {path} is not a TB run (no {RUN_MARKER} marker): pass a folder made "
            "by cxrlib train-tb"
        )
    if marker.get("status") != "done":
        raise TBRunError(
            f"RUN_DIR {path} holds an unfinished TB run (status {marker.get('status')!r}); "
            "run cxrlib train-tb again to finish it"
        )
    missing = [n for n in ("tb_model.joblib", "tb_config.json") if not (path / n).is_file()]
    if missing:
        raise TBRunError(f"RUN_DIR {path} is a TB run but lacks {missing}; retrain it")
    return path


def read_stored_config(path: Path) -> tuple[dict[str, Any], TBConfig]:
    """``tb_config.json`` of a TB run folder and its :class:`TBConfig`.

    Runs made before format 3 did not calibrate and have no ``calibration`` field: their
    config reads as ``calibration="none"`` (not the current default), so that what the
    run did is what it says.

    Raises
    ------
    TBRunError
        If the file is missing or unreadable.
    """
    stored = read_json(path / "tb_config.json")
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise TBRunError(f"{path / 'tb_config.json'} is not a readable TB configuration")
    values = {"calibration": "none", **stored["config"]}
    try:
        return stored, TBConfig.from_dict(values)
    except ValueError as error:
        raise TBRunError(f"{path / 'tb_config.json'}: {error}") from error


def mask_text(value: Any) -> str:
    """A table's ``mask_path`` as CSV text: "" (none), a path, or a JSON list of paths."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, tuple | list):
        return json.dumps([os.fspath(v) for v in value])
    return os.fspath(value)


def mask_value(text: Any) -> Any:
    """Inverse of :func:`mask_text`."""
    if not isinstance(text, str) or not text:
        return None
    return tuple(json.loads(text)) if text.startswith("[") else text
