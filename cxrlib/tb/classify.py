"""Classify a folder of radiographs with a finished TB run: :func:`classify`.

Any names, any depth, offline: every radiograph is segmented with the run's own
segmentation model (through an inference runtime, :mod:`cxrlib.seg.runtime`), featurised
like the run and scored by its calibrated classifier, and called TB or normal at a named
operating point (:meth:`TBPredictor.operating_point`). The work runs in this process or,
in chunks of :data:`~cxrlib.tb.inputs.CHUNK` radiographs, on a Dask cluster
(:func:`cxrlib.seg.cluster.dask_client`: a local one, or a running scheduler), each worker
loading the run once. The CSV is written once, atomically, when every chunk is done:
an interrupted run leaves no partial table.

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
from cxrlib.seg.scheduling import choose_scheduler, worker_threads
from cxrlib.tb.inputs import CHUNK
from cxrlib.tb.predictor import TBPredictor, load_predictor

__all__ = [
    "CLASSIFY_COLUMNS",
    "DEFAULT_OPERATING_POINT",
    "ClassifyReport",
    "classify",
    "classify_paths",
    "classify_shard",
]

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
    runtime: str = "keras"
    scheduler: str = "inline"

    def summary(self) -> str:
        """A short human-readable description."""
        n_tb = int(self.table["prediction"].sum()) if len(self.table) else 0
        lines = [
            f"classified {len(self.table)} radiograph(s) into {self.out_csv}: {n_tb} TB, "
            f"{len(self.table) - n_tb} normal at operating point {self.operating_point!r} "
            f"(threshold {self.threshold:.4g}; probabilities calibrated: {self.calibration}) "
            f"({self.seconds:.1f} s; masks by {self.runtime}, {self.scheduler})"
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


def classify_paths(
    predictor: TBPredictor,
    paths: list[str],
    images_dir: str | os.PathLike[str],
    point: tuple[str, float],
    *,
    n_jobs: int | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows of :data:`CLASSIFY_COLUMNS` for some radiographs, and those skipped.

    Parameters
    ----------
    predictor : TBPredictor
    paths : list of str
        Image files (read, segmented and featurised together).
    images_dir : path
        The folder ``file`` is written relative to.
    point : (str, float)
        Name and threshold of the operating point (:meth:`TBPredictor.operating_point`).
    n_jobs : int, optional
        Worker processes of the hand-crafted features.

    Returns
    -------
    rows : list of dict
    skipped : list of (file, reason)
    """
    root = Path(images_dir)
    name, threshold = point
    inputs = predictor.prepare(paths)
    skipped = [(_relative(p, root), reason) for p, reason in inputs.skipped]
    rows: list[dict[str, Any]] = []
    if len(inputs.kept):
        probs = predictor.score(inputs.images, inputs.masks, n_jobs=n_jobs)
        for index, p in zip(inputs.kept, probs, strict=True):
            rows.append(
                {
                    "file": _relative(paths[index], root),
                    "probability": float(p),
                    "prediction": int(p >= threshold),
                    "operating_point": name,
                    "threshold": threshold,
                }
            )
    return rows, skipped


def classify_shard(
    run_dir: str,
    runtime: str,
    threads: int | None,
    paths: list[str],
    images_dir: str,
    point: tuple[str, float],
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """:func:`classify_paths` on a Dask worker, which loads the run once per process."""
    from cxrlib.seg.cluster import once_per_process

    predictor = once_per_process(
        ("tb", run_dir, runtime, threads),
        lambda: load_predictor(run_dir, runtime, threads=threads),
    )
    return classify_paths(predictor, paths, images_dir, point, n_jobs=1)


def _on_dask(
    scheduler: str,
    n_workers: int | None,
    run_dir: Path,
    predictor: TBPredictor,
    chunks: list[list[str]],
    images_dir: Path,
    point: tuple[str, float],
    tick: Any,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from cxrlib.seg.cluster import dask_client, gather_tasks

    if predictor.runtime != "keras":  # once here, not in every worker at the same time
        from cxrlib.seg.runtime import export_model

        export_model(predictor.seg_source, predictor.runtime)
    threads = worker_threads(scheduler, n_workers)
    run = str(run_dir.resolve())
    tasks = [(run, predictor.runtime, threads, c, str(images_dir), point) for c in chunks]
    with dask_client(scheduler, n_workers) as client:
        return gather_tasks(client, classify_shard, tasks, on_progress=tick)


def classify(
    run_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    operating_point: str | float = DEFAULT_OPERATING_POINT,
    progress: bool = True,
    n_jobs: int | None = None,
    runtime: str = "auto",
    scheduler: str = "auto",
    n_workers: int | None = None,
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
        to ``images_dir``, rows in file order; ``prediction`` 1 = TB when
        ``probability >= threshold``).
    operating_point : str or float, default "who"
        ``"who"``, ``"youden"`` (thresholds saved with the run) or a threshold in
        (0, 1) (see the module).
    progress : bool, default True
    n_jobs : int, optional
        Worker processes of the hand-crafted features (in-process runs).
    runtime : {"auto", "keras", "onnx", "openvino"}, default "auto"
        Inference runtime of the lung masks (:func:`cxrlib.seg.runtime.load_predictor`;
        ``"auto"``: the fastest installed). Masks agree with Keras's to the runtime's
        tolerance, so probabilities agree closely but not always to the last digit.
    scheduler : str, default "auto"
        ``"inline"`` (this process), ``"local"`` (a local Dask cluster), ``"config"``
        or a Dask scheduler address; ``"auto"`` as :func:`cxrlib.seg.scheduling.choose_scheduler`.
    n_workers : int, optional
        Worker processes of a local cluster (default one per two cores).

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
    cxrlib.seg.runtime.RuntimeChoiceError, cxrlib.seg.runtime.RuntimeNotInstalledError
        Unknown runtime, or its package is not installed.
    cxrlib.seg.cluster.ClusterError
        The Dask scheduler cannot be reached.
    """
    start = time.perf_counter()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist or is not a folder")
    predictor = load_predictor(run_dir, runtime)
    point = predictor.operating_point(operating_point)
    paths, skipped = _images_to_classify(images_dir)
    where = choose_scheduler(scheduler, len(paths))
    chunks = [paths[begin : begin + CHUNK] for begin in range(0, len(paths), CHUNK)]
    bar = tqdm(total=len(paths), desc="Classifying", unit="img", disable=not progress)
    with bar:
        if where == "inline":
            rows: list[dict[str, Any]] = []
            for chunk in chunks:
                chunk_rows, chunk_skipped = classify_paths(
                    predictor, chunk, images_dir, point, n_jobs=n_jobs
                )
                rows += chunk_rows
                skipped += chunk_skipped
                bar.update(len(chunk))
        else:
            rows, remote_skipped = _on_dask(
                where,
                n_workers,
                Path(run_dir),
                predictor,
                chunks,
                images_dir,
                point,
                bar.update,
            )
            skipped += remote_skipped
    order = {_relative(p, images_dir): k for k, p in enumerate(paths)}
    rows.sort(key=lambda row: order.get(row["file"], len(order)))
    table = pd.DataFrame(rows, columns=list(CLASSIFY_COLUMNS))
    out_csv = Path(out_csv)
    if out_csv.parent and not out_csv.parent.exists():
        out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out_csv, table)
    skipped.sort()
    seconds = time.perf_counter() - start
    name, threshold = point
    return ClassifyReport(
        out_csv,
        table,
        skipped,
        threshold,
        seconds,
        name,
        predictor.calibration,
        predictor.runtime,
        where,
    )
