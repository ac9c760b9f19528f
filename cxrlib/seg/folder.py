"""Segment every radiograph of a folder: mask PNGs, overlays, ``lungs.csv`` and Parquet.

:func:`segment_folder` segments every image in a folder with a model loaded by
:func:`cxrlib.seg.runtime.load_predictor` (Keras, ONNX Runtime or OpenVINO): for each
input it writes a 0/255 mask PNG at the input's own resolution, an overlay PNG
(:func:`cxrlib.seg.outputs.overlay_image`), for DICOM inputs optionally a DICOM-SEG
file, and one row of ``lungs.csv`` / ``lungs.parquet``
(:func:`cxrlib.seg.outputs.lung_areas`).

Folder rules
    Only the files directly inside ``images_dir`` are segmented (not recursive: masks
    are written flat into ``out_dir``, so sub-folders could collide; sub-folders are
    listed as skipped). Files without an image suffix (and not DICOM by content) and
    images that cannot be decoded are listed in :attr:`SegmentReport.skipped` with the
    reason and never stop the run. The mask of ``name.ext`` is ``out_dir/name.png``
    (``name.ext.png`` if two inputs share a stem); its overlay is
    ``out_dir/overlays/name.png``; its DICOM-SEG ``out_dir/dicom-seg/name.dcm``.

Resumable
    Finished batches are recorded in ``out_dir/manifest/``
    (:class:`cxrlib.seg.manifest.Manifest`); a rerun segments only the images that
    are not recorded (or changed since), so a killed run loses at most its unfinished
    batches. Every file is written atomically.

Where it runs (``scheduler``)
    ``"inline"``: in this process (reading ahead and writing behind in threads);
    ``"local"``: a local Dask cluster of worker processes; an address or ``"config"``:
    a running Dask cluster (:mod:`cxrlib.seg.cluster`); ``"auto"``: a local cluster
    for big jobs on machines with cores to spare, else inline
    (:func:`cxrlib.seg.scheduling.choose_scheduler`).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxrlib.atomic import atomic_write_bytes
from cxrlib.data.imageio import is_image_file
from cxrlib.lock import run_lock
from cxrlib.runs import remove_stale_temporaries, sha256_file
from cxrlib.seg.manifest import RECORD_COLUMNS, Manifest, SegmentJob
from cxrlib.seg.outputs import lung_areas, overlay_image, overlay_indices
from cxrlib.seg.pipeline import DICOM_SEG_DIR, OVERLAYS_DIR, SegmentOptions, segment_files
from cxrlib.seg.quality import FLAG_BELOW, check_flag_below
from cxrlib.seg.scheduling import choose_scheduler, worker_threads

__all__ = [
    "LUNGS_COLUMNS",
    "SegmentReport",
    "lung_areas",
    "overlay_image",
    "overlay_indices",
    "segment_folder",
]

LUNGS_COLUMNS = (
    "file",
    "lung_area_fraction",
    "right_lung_area_fraction",
    "left_lung_area_fraction",
    "quality",
    "flag",
    "flag_reason",
)
"""Columns of ``lungs.csv``; ``lungs.parquet`` has every column of the manifest.

``quality`` estimates the mask's Dice without a reference (:mod:`cxrlib.seg.quality`),
``flag`` marks masks to look at (estimate below ``flag_below`` or a shape that is not
two lungs), ``flag_reason`` says why."""

_SHARD_BATCHES = 4  # batches per Dask task: the unit a killed worker redoes
_FLAGS_SHOWN = 10  # flagged masks listed by SegmentReport.summary


@dataclass
class SegmentReport:
    """What :func:`segment_folder` did.

    Attributes
    ----------
    out_dir : pathlib.Path
    model_size : (int, int)
        The model's input ``(H, W)``.
    table : pandas.DataFrame
        One row per segmented image of the folder, this run's and earlier runs' (the
        columns of :data:`cxrlib.seg.manifest.RECORD_COLUMNS`, output paths absolute).
    skipped : list of (str, str)
        ``(file name, reason)`` of every entry of the folder not segmented.
    seconds : float
        Wall time from the end of the set-up to the last write.
    cpu_seconds : float
        CPU time of this process over the whole call (worker processes not counted).
    setup_seconds : float
        Wall time before the first image: checking the model, exporting it for another
        runtime (once per model), reading the manifest, loading the model or starting
        a cluster.
    resumed : int
        Images an earlier run had finished (not segmented again).
    runtime : str
        The inference runtime used.
    scheduler : str
        Where it ran (``"inline"``, ``"local"`` or the cluster's address).
    """

    out_dir: Path
    model_size: tuple[int, int]
    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    setup_seconds: float = 0.0
    resumed: int = 0
    runtime: str = "keras"
    scheduler: str = "inline"

    @property
    def n_images(self) -> int:
        """Number of images segmented (now or by an earlier run)."""
        return len(self.table)

    @property
    def n_segmented(self) -> int:
        """Images segmented by this call."""
        return self.n_images - self.resumed

    @property
    def flagged(self) -> pd.DataFrame:
        """The rows whose mask is flagged (``file``, ``quality``, ``flag_reason``)."""
        rows = self.table[self.table["flag"].astype(bool)]
        return rows[["file", "quality", "flag_reason"]].reset_index(drop=True)

    @property
    def images_per_s(self) -> float:
        """Images segmented by this call per second, set-up not included."""
        return self.n_segmented / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """A short human-readable description."""
        resumed = f", {self.resumed} already done" if self.resumed else ""
        lines = [
            f"segmented {self.n_segmented} image(s) into {self.out_dir}{resumed} "
            f"({self.images_per_s:.1f} images/s, set-up {self.setup_seconds:.1f} s, "
            f"{self.runtime} runtime, {self.scheduler}, model "
            f"{self.model_size[0]}x{self.model_size[1]})"
        ]
        flagged = self.flagged
        if len(flagged):
            lines.append(f"flagged {len(flagged)} of {self.n_images} mask(s) for review:")
            lines.extend(
                f"  {row.file}: {row.flag_reason}"
                for row in flagged.head(_FLAGS_SHOWN).itertuples(index=False)
            )
            if len(flagged) > _FLAGS_SHOWN:
                lines.append(f"  ... and {len(flagged) - _FLAGS_SHOWN} more (the flag column)")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} of {self.n_images + len(self.skipped)}:")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        return "\n".join(lines)


def _list_folder(images_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    files, skipped = [], []
    for entry in sorted(images_dir.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            skipped.append((entry.name, "folder (sub-folders are not searched)"))
        elif not is_image_file(entry, sniff=True):
            skipped.append((entry.name, f"not an image file (suffix {entry.suffix or 'none'!r})"))
        else:
            files.append(entry)
    return files, skipped


def _output_names(files: Sequence[Path]) -> list[str]:
    stems = [f.stem for f in files]
    shared = {s for s in stems if stems.count(s) > 1}
    return [f"{f.name}.png" if f.stem in shared else f"{f.stem}.png" for f in files]


def _validate(
    images_dir: Path, out_dir: Path, batch_size: object, threshold: float, flag_below: float
) -> None:
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist or is not a folder")
    if out_dir.resolve() == images_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the images folder; choose another folder")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    check_flag_below(flag_below)


def segment_folder(
    model_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    postprocess: bool = True,
    threshold: float = 0.5,
    overlays: bool = True,
    dicom_seg: bool = False,
    flag_below: float = FLAG_BELOW,
    precision: str | None = None,
    runtime: str = "auto",
    scheduler: str = "inline",
    n_workers: int | None = None,
    io_threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SegmentReport:
    """Segment every image directly inside a folder (resumable).

    Parameters
    ----------
    model_path : path
        A ``.keras`` segmentation model (:func:`cxrlib.seg.inference.load_segmentation_model`).
    images_dir : path
        Folder of radiographs (PNG/JPEG/TIFF/BMP/DICOM, any size); not searched
        recursively.
    out_dir : path
        Output folder (created); must differ from ``images_dir``.
    batch_size : int, default 16
    postprocess : bool, default True
        Keep the two largest components and fill holes
        (:func:`cxrlib.seg.postprocess.postprocess_mask`).
    threshold : float, default 0.5
    overlays : bool, default True
        Write ``out_dir/overlays/<name>.png``.
    dicom_seg : bool, default False
        For DICOM inputs also write ``out_dir/dicom-seg/<name>.dcm`` (highdicom).
    flag_below : float, default :data:`cxrlib.seg.quality.FLAG_BELOW`
        Flag masks whose quality estimate (``quality`` column) is below this.
    precision : str, optional
        Inference precision; None: as saved (:func:`cxrlib.seg.runtime.load_predictor`).
    runtime : {"auto", "keras", "onnx", "openvino"}, default "auto"
        ``"auto"``: the fastest installed (:func:`cxrlib.seg.runtime.resolve_runtime`).
    scheduler : str, default "inline"
        ``"inline"``, ``"local"``, ``"auto"``, ``"config"`` or a Dask scheduler address
        (module docstring).
    n_workers : int, optional
        Worker processes of a local cluster (:func:`cxrlib.seg.cluster.local_workers`).
    io_threads : int, optional
        Threads for reading and for writing (each) per process; default ``min(4, cores)``.
    overwrite : bool, default False
        Replace the outputs of a segment run with other settings in ``out_dir``.
    progress : bool, default True

    Returns
    -------
    SegmentReport
        Also written: ``out_dir/lungs.csv`` (:data:`LUNGS_COLUMNS`) and
        ``out_dir/lungs.parquet`` (every column), one row per segmented image in
        file-name order.

    Raises
    ------
    ModelFileError
        Bad model file.
    ManifestMismatchError
        ``out_dir`` holds a run with other settings and ``overwrite`` is False.
    ValueError
        Missing ``images_dir``, ``out_dir`` equal to it, bad ``batch_size`` or ``threshold``.
    """
    from cxrlib.seg.inference import check_model_file, model_file_input_size
    from cxrlib.seg.runtime import export_model, load_predictor, resolve_runtime

    start, cpu_start = time.perf_counter(), time.process_time()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    _validate(images_dir, out_dir, batch_size, threshold, flag_below)
    model_path = check_model_file(model_path).resolve()
    runtime = resolve_runtime(runtime)
    options = SegmentOptions(
        batch_size, postprocess, threshold, overlays, dicom_seg, io_threads, flag_below
    )
    files, skipped = _list_folder(images_dir)
    names = dict(zip([f.name for f in files], _output_names(files), strict=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    # One segment run per output folder; what a killed run's atomic writes left behind
    # (hidden .NAME.XXXXXXXX.part files) is removed before writing again.
    with run_lock(out_dir):
        outputs = [*names.values(), "lungs.csv", "lungs.parquet"]
        for folder in (out_dir, out_dir / OVERLAYS_DIR):
            remove_stale_temporaries(folder, outputs)
        dicom_names = [f"{Path(n).stem}.dcm" for n in names.values()]
        remove_stale_temporaries(out_dir / DICOM_SEG_DIR, dicom_names)
        manifest = Manifest(out_dir)
        remove_stale_temporaries(manifest.folder, ["done.parquet", "job.json"])
        size = model_file_input_size(model_path)
        job = SegmentJob(
            sha256_file(model_path), size, threshold, postprocess, overlays, dicom_seg, flag_below
        )
        manifest.start(job, overwrite=overwrite)
        done = manifest.done(files)
        todo = [f for f in files if f.name not in set(done["file"])]
        where = choose_scheduler(scheduler, len(todo))
        bar = tqdm(total=len(todo), desc="Segmenting", unit="img", disable=not progress)
        with bar:
            if where == "inline":
                predictor = load_predictor(
                    model_path, runtime, precision=precision, max_batch=batch_size
                )
                setup = time.perf_counter() - start
                _, new_skips = segment_files(
                    predictor, todo, names, out_dir, options, manifest, on_progress=bar.update
                )
            else:
                if runtime != "keras":  # once here, not in every worker at the same time
                    export_model(model_path, runtime)
                setup, new_skips = _run_on_dask(
                    where, n_workers, model_path, runtime, precision, todo, names, out_dir,
                    options, bar.update, start,
                )  # fmt: skip
        table = _finish(manifest, files, out_dir)
    skipped = sorted(skipped + new_skips)
    seconds = time.perf_counter() - start - setup
    cpu_seconds = time.process_time() - cpu_start
    return SegmentReport(
        out_dir, size, table, skipped, seconds, cpu_seconds, setup, len(done), runtime, where
    )


def _run_on_dask(
    where: str,
    n_workers: int | None,
    model_path: Path,
    runtime: str,
    precision: str | None,
    todo: list[Path],
    names: dict[str, str],
    out_dir: Path,
    options: SegmentOptions,
    tick: object,
    start: float,
) -> tuple[float, list[tuple[str, str]]]:
    from cxrlib.seg.cluster import PredictorSpec, dask_client, run_shards

    threads = worker_threads(where, n_workers)
    spec = PredictorSpec(str(model_path), runtime, precision, threads, options.batch_size)
    per_shard = options.batch_size * _SHARD_BATCHES
    shards = [todo[i : i + per_shard] for i in range(0, len(todo), per_shard)]
    with dask_client(where, n_workers) as client:
        setup = time.perf_counter() - start
        _, skipped = run_shards(
            client,
            spec,
            shards,
            names,
            out_dir,
            options,
            on_progress=tick,  # type: ignore[arg-type]
        )
    return setup, skipped


def _finish(manifest: Manifest, files: Sequence[Path], out_dir: Path) -> pd.DataFrame:
    """Compact the manifest; write ``lungs.csv`` and ``lungs.parquet`` for ``files``."""
    manifest.compact()
    table = manifest.done(files)
    table = table.sort_values("file", kind="stable").reset_index(drop=True)
    atomic_write_bytes(
        out_dir / "lungs.csv", table[list(LUNGS_COLUMNS)].to_csv(index=False).encode("utf-8")
    )
    buffer = io.BytesIO()
    table[list(RECORD_COLUMNS)].to_parquet(buffer, index=False)
    atomic_write_bytes(out_dir / "lungs.parquet", buffer.getvalue())
    absolute = table.copy()
    for column in ("mask_path", "overlay_path", "dicom_seg_path"):
        absolute[column] = [
            None if not isinstance(v, str) else str(out_dir / v) for v in absolute[column]
        ]
    return absolute
