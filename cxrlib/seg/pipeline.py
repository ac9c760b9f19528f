"""Segment a list of radiographs in batches: read ahead, predict, write behind, record.

:func:`segment_files` is the work of one process (the whole run in-process, or one
shard of it on a Dask worker, :mod:`cxrlib.seg.cluster`). For each batch it decodes
the images in a thread pool while the previous batch is predicted, writes each image's
mask PNG (and overlay, DICOM-SEG) in a second pool, and once every output of a batch is
in place records the batch in the run's :class:`~cxrlib.seg.manifest.Manifest`: a
killed run loses at most the batches that were not finished.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrlib.atomic import atomic_write_bytes
from cxrlib.data.imageio import ImageReadError, is_dicom_file, read_image
from cxrlib.seg.manifest import Manifest, source_identity
from cxrlib.seg.outputs import OVERLAY_PALETTE, lung_areas, overlay_indices, png_bytes
from cxrlib.seg.postprocess import postprocess_mask
from cxrlib.seg.quality import FLAG_BELOW, assess_mask

if TYPE_CHECKING:  # the runtimes import more than a worker's pipeline needs at import time
    from cxrlib.seg.runtime import MaskPredictor

__all__ = ["SegmentOptions", "segment_files"]

OVERLAYS_DIR = "overlays"
DICOM_SEG_DIR = "dicom-seg"


@dataclass(frozen=True)
class SegmentOptions:
    """How images become outputs.

    Attributes
    ----------
    batch_size : int
        Images per prediction call and per manifest record.
    postprocess : bool
        Keep the two largest components, fill holes (:func:`postprocess_mask`).
    threshold : float
        Probability above which a pixel is lung.
    overlays : bool
        Also write ``overlays/<name>.png``.
    dicom_seg : bool
        Also write ``dicom-seg/<name>.dcm`` for DICOM inputs (:mod:`cxrlib.seg.dicomseg`).
    io_threads : int or None
        Threads for reading and for writing (each); None: ``min(4, cores)``.
    flag_below : float
        Masks whose quality estimate is below this are flagged
        (:func:`cxrlib.seg.quality.assess_mask`).
    """

    batch_size: int = 16
    postprocess: bool = True
    threshold: float = 0.5
    overlays: bool = True
    dicom_seg: bool = False
    io_threads: int | None = None
    flag_below: float = FLAG_BELOW


@dataclass
class _Loaded:
    path: Path
    image: np.ndarray | None  # (H, W) float32 original
    resized: np.ndarray | None  # (h, w) float32
    error: str | None = None


def _load_one(path: Path, size: tuple[int, int]) -> _Loaded:
    from cxrlib.preprocess import resize_image

    try:
        image = read_image(path)
    except ImageReadError as error:
        return _Loaded(path, None, None, error.reason)
    return _Loaded(path, image, resize_image(image, size, method="area"))


def _finish_one(
    loaded: _Loaded, probs: np.ndarray, out_dir: Path, out_name: str, options: SegmentOptions
) -> dict[str, Any]:
    from cxrlib.preprocess import resize_image

    image = loaded.image
    assert image is not None
    plane = probs[..., 0]
    if plane.shape != image.shape:
        plane = resize_image(plane, image.shape, method="area")
    mask = plane > options.threshold
    if options.postprocess:
        mask = postprocess_mask(mask)
    quality = assess_mask(plane, mask, options.flag_below)
    atomic_write_bytes(out_dir / out_name, png_bytes(mask.astype(np.uint8) * 255))
    overlay = dicom_seg = None
    if options.overlays:
        overlay = f"{OVERLAYS_DIR}/{out_name}"
        indices = overlay_indices(image, mask)
        atomic_write_bytes(out_dir / overlay, png_bytes(indices, palette=OVERLAY_PALETTE))
    if options.dicom_seg and is_dicom_file(loaded.path):
        from cxrlib.seg.dicomseg import write_dicom_seg

        dicom_seg = f"{DICOM_SEG_DIR}/{Path(out_name).stem}.dcm"
        write_dicom_seg(loaded.path, mask, out_dir / dicom_seg)
    total, right, left = lung_areas(mask)
    size, mtime = source_identity(loaded.path)
    return {
        "file": loaded.path.name,
        "source_size": size,
        "source_mtime_ns": mtime,
        "lung_area_fraction": total,
        "right_lung_area_fraction": right,
        "left_lung_area_fraction": left,
        "quality": quality.estimate,
        "flag": quality.flag,
        "flag_reason": quality.reason,
        "mask_path": out_name,
        "overlay_path": overlay,
        "dicom_seg_path": dicom_seg,
    }


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def segment_files(
    predictor: MaskPredictor,
    files: Sequence[Path],
    names: dict[str, str],
    out_dir: Path,
    options: SegmentOptions,
    manifest: Manifest,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Segment ``files`` and record each finished batch in ``manifest``.

    Parameters
    ----------
    predictor : cxrlib.seg.runtime.MaskPredictor
        A loaded model (:func:`cxrlib.seg.runtime.load_predictor`).
    files : sequence of pathlib.Path
        The images (all inside one folder).
    names : dict
        Output mask name per input file name (``name.ext -> name.png``).
    out_dir : pathlib.Path
        Where masks go (``overlays/`` and ``dicom-seg/`` below it).
    options : SegmentOptions
    manifest : Manifest
        Receives one part per finished batch.
    on_progress : callable, optional
        Called with a count each time images are finished or skipped.

    Returns
    -------
    rows : list of dict
        One row per segmented image (:data:`cxrlib.seg.manifest.RECORD_COLUMNS`).
    skipped : list of (str, str)
        ``(file name, reason)`` of the images that could not be decoded.
    """
    size = tuple(predictor.input_size)
    n_threads = options.io_threads or min(4, os.cpu_count() or 1)
    prefetch = 2
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    tick = on_progress or (lambda _: None)
    with (
        ThreadPoolExecutor(n_threads, thread_name_prefix="cxr-read") as readers,
        ThreadPoolExecutor(n_threads, thread_name_prefix="cxr-write") as writers,
    ):
        chunks = iter(list(_batches(list(files), options.batch_size)))
        queue = deque(
            [readers.submit(_load_one, p, size) for p in chunk]
            for chunk in islice(chunks, prefetch)
        )
        # batches being written: (start time, futures); recorded in order once complete
        writing: deque[tuple[float, list[Future[dict[str, Any]]]]] = deque()

        def record_oldest() -> None:
            started, futures = writing.popleft()
            batch = [future.result() for future in futures]
            share = (time.perf_counter() - started) / max(1, len(batch))
            for row in batch:
                row["runtime"], row["seconds"] = predictor.runtime, share
            manifest.record(batch)
            rows.extend(batch)
            tick(len(batch))

        while queue:
            started = time.perf_counter()
            futures = queue.popleft()
            next_chunk = next(chunks, None)
            if next_chunk is not None:
                queue.append([readers.submit(_load_one, p, size) for p in next_chunk])
            loaded = [f.result() for f in futures]
            good = [item for item in loaded if item.error is None]
            for item in loaded:
                if item.error is not None:
                    skipped.append((item.path.name, f"unreadable image: {item.error}"))
            tick(len(loaded) - len(good))
            if good:
                x = np.stack([item.resized for item in good])[..., None].astype(np.float32)
                probs = predictor.predict(x)
                writing.append(
                    (
                        started,
                        [
                            writers.submit(
                                _finish_one, item, prob, out_dir, names[item.path.name], options
                            )
                            for item, prob in zip(good, probs, strict=True)
                        ],
                    )
                )
            while len(writing) > prefetch:  # bounded memory; records stay in batch order
                record_oldest()
        while writing:
            record_oldest()
    return rows, skipped
