"""The record of a resumable segment run: which images are done, with what settings.

A segment run writes, next to its masks, a ``manifest/`` folder:

``manifest/job.json``
    The settings that decide the masks (:class:`SegmentJob`: the model file's SHA-256,
    its input size, threshold, post-processing, overlays, DICOM-SEG). A rerun with other
    settings is refused (:class:`ManifestMismatchError`) unless it overwrites.
``manifest/part-*.parquet``
    One small table per finished batch (:data:`RECORD_COLUMNS`), written atomically
    after the batch's masks are in place: a row exists only for an image whose outputs
    are complete. Any process may add parts concurrently (Dask workers do).
``manifest/done.parquet``
    The parts compacted into one table at the end of a run (:meth:`Manifest.compact`).

An image counts as done when a row names it with the same size and modification time
as the file in the folder now, and its mask (and overlay, DICOM-SEG) exists; anything
else is segmented again. A kill at any moment therefore loses at most the batches that
had not finished, and leaves nothing half-written (all writes are atomic).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlib.atomic import atomic_write_bytes
from cxrlib.errors import CxrlibError
from cxrlib.runs import differences, read_json, write_json
from cxrlib.seg.quality import FLAG_BELOW, QUALITY_METHOD

__all__ = [
    "MANIFEST_DIR",
    "RECORD_COLUMNS",
    "Manifest",
    "ManifestMismatchError",
    "SegmentJob",
    "source_identity",
]

MANIFEST_DIR = "manifest"
RECORD_COLUMNS = (
    "file",
    "source_size",
    "source_mtime_ns",
    "lung_area_fraction",
    "right_lung_area_fraction",
    "left_lung_area_fraction",
    "quality",
    "flag",
    "flag_reason",
    "mask_path",
    "overlay_path",
    "dicom_seg_path",
    "runtime",
    "seconds",
)
"""Columns of a manifest part: the image, its identity, its outputs and their cost.

``quality``, ``flag`` and ``flag_reason`` are the mask's quality estimate
(:func:`cxrlib.seg.quality.assess_mask`); ``seconds`` is the image's share of its
batch's wall time (reading to writing)."""

_DONE = "done.parquet"
_JOB = "job.json"


class ManifestMismatchError(CxrlibError, ValueError):
    """The output folder holds a segment run made with other settings."""


@dataclass(frozen=True)
class SegmentJob:
    """The settings that decide a segment run's outputs (stored in ``job.json``).

    Attributes
    ----------
    model_sha256 : str
        SHA-256 of the ``.keras`` model file.
    input_size : (int, int)
        The model's input ``(H, W)``.
    threshold : float
    postprocess : bool
    overlays : bool
    dicom_seg : bool
        Whether DICOM inputs also get a DICOM-SEG file.
    flag_below : float
        Quality estimate below which a mask is flagged.
    quality_method : str
        The quality estimate's name and version
        (:data:`cxrlib.seg.quality.QUALITY_METHOD`).
    """

    model_sha256: str
    input_size: tuple[int, int]
    threshold: float
    postprocess: bool
    overlays: bool
    dicom_seg: bool = False
    flag_below: float = FLAG_BELOW
    quality_method: str = QUALITY_METHOD

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``input_size`` as a list)."""
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        return data


def source_identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(size in bytes, modification time in ns)`` of an input image."""
    stat = os.stat(path)
    return int(stat.st_size), int(stat.st_mtime_ns)


class Manifest:
    """The ``manifest/`` folder of one segment output folder.

    Parameters
    ----------
    out_dir : path
        The segment run's output folder.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / MANIFEST_DIR

    # ------------------------------------------------------------------ job

    def start(self, job: SegmentJob, *, overwrite: bool = False) -> bool:
        """Record ``job``; refuse a folder that holds another job's outputs.

        Parameters
        ----------
        job : SegmentJob
        overwrite : bool, default False
            Forget another job's records (its masks are rewritten as images are done).

        Returns
        -------
        bool
            True when earlier records of the same job are kept (a resumed run).

        Raises
        ------
        ManifestMismatchError
            The folder holds a run with other settings and ``overwrite`` is False; the
            message names the folder and the differences.
        """
        stored = read_json(self.folder / _JOB)
        new = job.to_dict()
        if isinstance(stored, dict) and stored == new:
            return True
        if isinstance(stored, dict) and not overwrite:
            changed = differences({"config": stored}, {"config": new})
            older = (
                ", written by an older cxrlib without mask quality scores"
                if "quality_method" not in stored
                else ""
            )
            raise ManifestMismatchError(
                f"{self.out_dir} holds masks of another segment run{older} ({changed}); "
                "choose another output folder or pass --overwrite to replace them"
            )
        self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / _JOB, new)
        return False

    def job(self) -> SegmentJob | None:
        """The recorded job, or None."""
        stored = read_json(self.folder / _JOB)
        if not isinstance(stored, dict):
            return None
        stored = dict(stored)
        stored["input_size"] = tuple(stored["input_size"])
        return SegmentJob(**stored)

    def clear(self) -> None:
        """Forget every record (the job file, the parts and the compacted table)."""
        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            if entry.is_file() and (entry.suffix == ".parquet" or entry.name == _JOB):
                entry.unlink(missing_ok=True)

    # ------------------------------------------------------------------ records

    def record(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        """Write one part with ``rows`` (atomically); None when ``rows`` is empty.

        Call it only after every output the rows name is written.
        """
        if not rows:
            return None
        table = pd.DataFrame(list(rows), columns=list(RECORD_COLUMNS))
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        path = self.folder / f"part-{uuid.uuid4().hex}.parquet"
        return atomic_write_bytes(path, buffer.getvalue())

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        done = [self.folder / _DONE] if (self.folder / _DONE).is_file() else []
        parts = sorted(
            (p for p in self.folder.glob("part-*.parquet") if p.is_file()),
            key=lambda p: p.stat().st_mtime_ns,
        )
        return done + parts

    def records(self) -> pd.DataFrame:
        """Every recorded row, the newest per file (columns :data:`RECORD_COLUMNS`)."""
        tables = [pd.read_parquet(path) for path in self._files()]
        tables = [t for t in tables if len(t)]
        if not tables:
            return pd.DataFrame(columns=list(RECORD_COLUMNS))
        table = pd.concat(tables, ignore_index=True)
        table = table.drop_duplicates("file", keep="last")
        return table.sort_values("file", kind="stable").reset_index(drop=True)

    def done(self, files: Iterable[Path]) -> pd.DataFrame:
        """The recorded rows of ``files`` that are still valid (same file, outputs present).

        Parameters
        ----------
        files : iterable of pathlib.Path
            The inputs of this run (their names are the ``file`` column).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`RECORD_COLUMNS`, one row per input that needs no new work.
        """
        records = self.records()
        if records.empty:
            return records
        by_name = {Path(f).name: Path(f) for f in files}
        keep = []
        for index, row in zip(records.index, records.itertuples(index=False), strict=True):
            path = by_name.get(row.file)
            if path is None or not path.is_file():
                continue
            if source_identity(path) != (int(row.source_size), int(row.source_mtime_ns)):
                continue
            outputs = (row.mask_path, row.overlay_path, row.dicom_seg_path)
            if all(not isinstance(o, str) or (self.out_dir / o).is_file() for o in outputs):
                keep.append(index)
        return records.loc[keep].reset_index(drop=True)

    def compact(self) -> pd.DataFrame:
        """Merge the parts into ``done.parquet`` (atomically), delete them; return the rows."""
        parts = [p for p in self._files() if p.name != _DONE]
        table = self.records()
        if not parts:
            return table
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        atomic_write_bytes(self.folder / _DONE, buffer.getvalue())
        for part in parts:
            part.unlink(missing_ok=True)
        return table
