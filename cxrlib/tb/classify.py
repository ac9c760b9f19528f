"""Classify a folder of radiographs with a finished TB run: :func:`classify`.

Any names, any depth, offline: every radiograph is segmented with the run's own
segmentation model, featurised like the run and scored by its calibrated classifier, and
called TB or normal at a named operating point (:meth:`TBPredictor.operating_point`):

``"who"`` (default)
    The threshold chosen, on the inner out-of-fold probabilities of all training
    radiographs, to reach a sensitivity of 0.90 with the highest specificity: the WHO
    target for a triage test, which must not miss TB.
``"youden"``
    The threshold that maximised sensitivity + specificity there.
a number in (0, 1)
    A fixed threshold (``0.5``: the only choice for runs made before calibration).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from cxrlib.data.datasets import DatasetError, scan_dataset
from cxrlib.runs import write_csv
from cxrlib.tb.inputs import CHUNK
from cxrlib.tb.predictor import load_predictor

__all__ = ["CLASSIFY_COLUMNS", "DEFAULT_OPERATING_POINT", "ClassifyReport", "classify"]

#: Columns of the table :func:`classify` writes.
CLASSIFY_COLUMNS = ("file", "probability", "prediction", "operating_point", "threshold")
#: The operating point of :func:`classify` (and ``cxrlib classify``) by default.
DEFAULT_OPERATING_POINT = "who"


@dataclass
class ClassifyReport:
    """What :func:`classify` did.

    Attributes
    ----------
    out_csv : pathlib.Path
    table : pandas.DataFrame
        The rows written (:data:`CLASSIFY_COLUMNS`): ``file`` (relative to the images
        folder), ``probability`` (the TB probability, calibrated unless the run's
        calibration is ``"none"``), ``prediction`` (1 = TB, 0 = normal),
        ``operating_point`` and ``threshold`` (the same in every row).
    skipped : list of (str, str)
        ``(file, reason)`` of the files not classified (not images, unreadable,
        no lungs found, duplicates).
    threshold : float
    seconds : float
    operating_point : str
        ``"who"``, ``"youden"`` or the fixed threshold as text.
    calibration : str
        The run's calibration (``"none"``: the probabilities are not calibrated).
    """

    out_csv: Path
    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.5
    seconds: float = 0.0
    operating_point: str = "0.5"
    calibration: str = "none"

    def summary(self) -> str:
        """A short human-readable description."""
        n_tb = int(self.table["prediction"].sum()) if len(self.table) else 0
        lines = [
            f"classified {len(self.table)} radiograph(s) into {self.out_csv}: {n_tb} TB, "
            f"{len(self.table) - n_tb} normal at operating point {self.operating_point!r} "
            f"(threshold {self.threshold:.4g}; probabilities calibrated: {self.calibration}) "
            f"({self.seconds:.1f} s)"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _images_to_classify(images_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    try:
        scan = scan_dataset(images_dir)
    except DatasetError as error:
        raise ValueError(f"no radiographs to classify in {images_dir}: {error}") from None
    skipped = [
        (_relative(s.path, images_dir), s.reason)
        for s in scan.report.skipped
        if s.kind not in ("clutter",)
    ]
    skipped += [
        (_relative(d.path, images_dir), f"duplicate of {_relative(d.kept, images_dir)}")
        for d in scan.report.duplicates
    ]
    paths = sorted(scan.table["image_path"].astype(str), key=lambda p: _relative(p, images_dir))
    return paths, skipped


def classify(
    run_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    operating_point: str | float = DEFAULT_OPERATING_POINT,
    progress: bool = True,
    n_jobs: int | None = None,
) -> ClassifyReport:
    """Write the TB probability and call of every radiograph in a folder, with a TB run.

    Parameters
    ----------
    run_dir : path
        A folder made by :func:`train_tb` (``cxrlib train-tb``).
    images_dir : path
        Radiographs at any depth, any names (a dataset folder works too: its
        masks and readings are not classified).
    out_csv : path
        CSV written atomically with :data:`CLASSIFY_COLUMNS`:
        ``file,probability,prediction,operating_point,threshold`` (``file`` relative
        to ``images_dir``; ``prediction`` 1 = TB when ``probability >= threshold``).
    operating_point : str or float, default "who"
        ``"who"``, ``"youden"`` (thresholds saved with the run) or a threshold in
        (0, 1) (see the module).
    progress : bool, default True
    n_jobs : int, optional
        Worker processes of the hand-crafted features.

    Returns
    -------
    ClassifyReport
        Unreadable images and images without lungs are skipped and listed.

    Raises
    ------
    TBRunError
        ``run_dir`` is not a finished TB run (the message says what it is), the
        features do not fit the model, or the run (made before calibration) has no
        threshold for a named operating point.
    ValueError
        ``images_dir`` is missing or holds no radiograph; a bad ``operating_point``.
    """
    start = time.perf_counter()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist or is not a folder")
    predictor = load_predictor(run_dir)
    name, threshold = predictor.operating_point(operating_point)
    paths, skipped = _images_to_classify(images_dir)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), desc="Classifying", unit="img", disable=not progress)
    with bar:
        for begin in range(0, len(paths), CHUNK):
            part = paths[begin : begin + CHUNK]
            inputs = predictor.prepare(part)
            skipped += [(_relative(p, images_dir), reason) for p, reason in inputs.skipped]
            if len(inputs.kept):
                probs = predictor.score(inputs.images, inputs.masks, n_jobs=n_jobs)
                for index, p in zip(inputs.kept, probs, strict=True):
                    rows.append(
                        {
                            "file": _relative(part[index], images_dir),
                            "probability": float(p),
                            "prediction": int(p >= threshold),
                            "operating_point": name,
                            "threshold": threshold,
                        }
                    )
            bar.update(len(part))
    table = pd.DataFrame(rows, columns=list(CLASSIFY_COLUMNS))
    out_csv = Path(out_csv)
    if out_csv.parent and not out_csv.parent.exists():
        out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out_csv, table)
    skipped.sort()
    seconds = time.perf_counter() - start
    return ClassifyReport(out_csv, table, skipped, threshold, seconds, name, predictor.calibration)
