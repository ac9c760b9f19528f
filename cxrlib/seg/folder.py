"""Segment every radiograph of a folder: mask PNGs, overlays and ``lungs.csv``.

:func:`segment_folder` segments every image in a folder with a model loaded by
:func:`cxrlib.seg.inference.load_segmentation_model`: for each input it writes a 0/255
mask PNG at the input's own resolution, an overlay PNG (:func:`overlay_image`) and one
row of ``lungs.csv`` (:func:`lung_areas`).

Folder rules (:func:`segment_folder`)
    Only the files directly inside ``images_dir`` are segmented (not
    recursive: masks are written flat into ``out_dir``, so sub-folders could
    collide; sub-folders are listed as skipped). Files without an image suffix
    (:func:`cxrlib.data.imageio.is_image_file`) and images that cannot be decoded are
    listed in :attr:`SegmentReport.skipped` with the reason and never stop the
    run. The mask of ``name.ext`` is ``out_dir/name.png`` (``name.ext.png`` if
    two inputs share a stem); its overlay is ``out_dir/overlays/name.png``.

Lung areas (``lungs.csv``)
    ``lung_area_fraction`` is the mask's share of the image area.
    The mask's connected components are assigned to a side by the column of
    their centroid: on a posterior-anterior radiograph the patient's **right**
    lung is on the image's **left** half. ``right_lung_area_fraction +
    left_lung_area_fraction == lung_area_fraction``.

Speed
    Reading and resizing the next batch (a thread pool) overlaps with the
    prediction of the current one, and the up-sampling, post-processing and PNG
    writing of finished batches run in a second pool, so the network is rarely
    idle.
"""

from __future__ import annotations

import io
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from cxrlib.data.imageio import ImageReadError, atomic_write_bytes, is_image_file, read_image
from cxrlib.lock import run_lock
from cxrlib.runs import remove_stale_temporaries
from cxrlib.seg.inference import (
    load_segmentation_model,
    model_input_size,
    predict_masks,
    set_model_precision,
)
from cxrlib.seg.postprocess import postprocess_mask

__all__ = [
    "LUNGS_COLUMNS",
    "SegmentReport",
    "lung_areas",
    "overlay_indices",
    "overlay_image",
    "segment_folder",
]

LUNGS_COLUMNS = (
    "file",
    "lung_area_fraction",
    "right_lung_area_fraction",
    "left_lung_area_fraction",
)


# --------------------------------------------------------------------------- outputs


_EIGHT = np.ones((3, 3), bool)


def _labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=_EIGHT)
    return labels, int(count)


def lung_areas(mask: np.ndarray) -> tuple[float, float, float]:
    """Lung area fractions of one mask: total, patient's right, patient's left.

    Parameters
    ----------
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    (total, right, left) : tuple of float
        Shares of the image area. Each 8-connected component goes to the side of
        its centroid: the image's left half is the patient's right lung.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    labels, count = _labels(mask)
    if count == 0:
        return 0.0, 0.0, 0.0
    height, width = mask.shape
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:]
    columns = np.tile(np.arange(width, dtype=np.float64), height)
    centroids = np.bincount(flat, weights=columns, minlength=count + 1)[1:] / sizes
    on_image_left = centroids < (width - 1) / 2.0
    area = float(mask.size)
    right, left = float(sizes[on_image_left].sum()), float(sizes[~on_image_left].sum())
    return (right + left) / area, right / area, left / area


def _overlay_palette() -> list[int]:
    grey = [2 * i + 1 for i in range(128)]
    palette = [value for g in grey for value in (g, g, g)]
    tint = np.array([26, 230, 77], np.float64)
    for g in grey[:127]:
        palette.extend(int(round(0.65 * g + 0.35 * t)) for t in tint)
    palette.extend([255, 217, 0])  # outline
    return palette


_PALETTE = _overlay_palette()


def overlay_indices(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Palette indices of the overlay: 128 grey levels, 127 tinted levels, an outline.

    Parameters
    ----------
    image : ndarray, float, shape (H, W), values in [0, 1]
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    ndarray, uint8, shape (H, W)
        0..127 grey outside the lungs, 128..254 tinted inside, 255 the outline.
    """
    mask = np.asarray(mask, dtype=bool)
    grey = (np.clip(np.asarray(image, np.float32), 0, 1) * 255.0).astype(np.uint8) >> 1
    index = grey.copy()
    index[mask] = 128 + np.minimum(grey[mask], 126)
    width = max(1, min(mask.shape) // 512)
    inner = mask.copy()
    for _ in range(width):  # erode with a 4-neighbour cross (border pixels stay inside)
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    index[mask & ~inner] = 255
    return index


def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey radiograph with the lung mask tinted green and outlined in yellow.

    Parameters
    ----------
    image : ndarray, float, shape (H, W), values in [0, 1]
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)
    """
    palette = np.asarray(_PALETTE, np.uint8).reshape(-1, 3)
    return palette[overlay_indices(image, mask)]


def _png_bytes(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """Encode a uint8 (H, W) array (or palette indices) as PNG, fast (zlib level 1)."""
    picture = Image.fromarray(array)
    if palette is not None:
        picture.putpalette(palette)  # an "L" image becomes a palette ("P") image
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --------------------------------------------------------------------------- folder


@dataclass
class SegmentReport:
    """What :func:`segment_folder` did.

    Attributes
    ----------
    out_dir : pathlib.Path
    model_size : (int, int)
        The model's input ``(H, W)``.
    table : pandas.DataFrame
        The rows of ``lungs.csv`` (``file``, ``lung_area_fraction``,
        ``right_lung_area_fraction``, ``left_lung_area_fraction``) plus
        ``mask_path`` and ``overlay_path``.
    skipped : list of (str, str)
        ``(file name, reason)`` of every entry of the folder not segmented.
    seconds : float
        Wall time from the first read to the last write.
    cpu_seconds : float
        CPU time of this process (all threads) over the same span: on a shared
        machine, ``n_images / cpu_seconds`` tells the cost better than the wall time.
    """

    out_dir: Path
    model_size: tuple[int, int]
    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def n_images(self) -> int:
        """Number of images segmented."""
        return len(self.table)

    @property
    def images_per_s(self) -> float:
        """Images segmented per second, end to end."""
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """A short human-readable description."""
        lines = [
            f"segmented {self.n_images} image(s) into {self.out_dir} "
            f"({self.images_per_s:.1f} images/s, {self.cpu_seconds:.1f} CPU s, "
            f"model {self.model_size[0]}x{self.model_size[1]})"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        return "\n".join(lines)


@dataclass
class _Loaded:
    name: str
    image: np.ndarray | None  # (H, W) float32 original
    resized: np.ndarray | None  # (h, w) float32
    error: str | None = None


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


def _load_one(path: Path, size: tuple[int, int]) -> _Loaded:
    from cxrlib.preprocess import resize_image

    try:
        image = read_image(path)
    except ImageReadError as error:
        return _Loaded(path.name, None, None, error.reason)
    return _Loaded(path.name, image, resize_image(image, size, method="area"))


def _finish_one(
    loaded: _Loaded,
    probs: np.ndarray,
    out_dir: Path,
    out_name: str,
    postprocess: bool,
    threshold: float,
    overlay: bool,
) -> dict[str, Any]:
    from cxrlib.preprocess import resize_image

    image = loaded.image
    assert image is not None
    plane = probs[..., 0]
    if plane.shape != image.shape:
        plane = resize_image(plane, image.shape, method="area")
    mask = plane > threshold
    if postprocess:
        mask = postprocess_mask(mask)
    mask_path = out_dir / out_name
    atomic_write_bytes(mask_path, _png_bytes(mask.astype(np.uint8) * 255))
    overlay_path = None
    if overlay:
        overlay_path = out_dir / "overlays" / out_name
        indices = overlay_indices(image, mask)
        atomic_write_bytes(overlay_path, _png_bytes(indices, palette=_PALETTE))
    total, right, left = lung_areas(mask)
    return {
        "file": loaded.name,
        "lung_area_fraction": total,
        "right_lung_area_fraction": right,
        "left_lung_area_fraction": left,
        "mask_path": str(mask_path),
        "overlay_path": None if overlay_path is None else str(overlay_path),
    }


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def segment_folder(
    model_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    postprocess: bool = True,
    threshold: float = 0.5,
    overlays: bool = True,
    precision: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> SegmentReport:
    """Segment every image directly inside a folder.

    Parameters
    ----------
    model_path : path
        A ``.keras`` segmentation model (:func:`load_segmentation_model`).
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
    precision : str, optional
        Inference precision (see :func:`predict_masks`); None: as saved.
    workers : int, optional
        Threads for reading and for writing (each); default ``min(4, cores)``.
    progress : bool, default True

    Returns
    -------
    SegmentReport
        Also written: ``out_dir/lungs.csv`` (one row per segmented image, in
        file-name order).

    Raises
    ------
    ModelFileError
        Bad model file.
    ValueError
        Missing ``images_dir``, ``out_dir`` equal to it, bad ``batch_size``.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist or is not a folder")
    if out_dir.resolve() == images_dir.resolve():
        raise ValueError(f"out_dir {out_dir} is the images folder; choose another folder")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    model = load_segmentation_model(model_path)
    if precision is not None:
        set_model_precision(model, precision)
    size = model_input_size(model)
    files, skipped = _list_folder(images_dir)
    names = dict(zip([f.name for f in files], _output_names(files), strict=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    # One segment run per output folder; what a killed run's atomic writes left behind
    # (hidden .NAME.XXXXXXXX.part files) is removed before writing again.
    with run_lock(out_dir):
        outputs = [*names.values(), "lungs.csv"]
        for folder in (out_dir, out_dir / "overlays"):
            remove_stale_temporaries(folder, outputs)
        return _segment_files(
            model, files, skipped, names, size, out_dir,
            batch_size=batch_size, postprocess=postprocess, threshold=threshold,
            overlays=overlays, workers=workers, progress=progress,
        )  # fmt: skip


def _segment_files(
    model: Any,
    files: list[Path],
    skipped: list[tuple[str, str]],
    names: dict[str, str],
    size: tuple[int, int],
    out_dir: Path,
    *,
    batch_size: int,
    postprocess: bool,
    threshold: float,
    overlays: bool,
    workers: int | None,
    progress: bool,
) -> SegmentReport:
    n_threads = workers or min(4, os.cpu_count() or 1)
    prefetch = 2
    rows: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=len(files), desc="Segmenting", unit="img", disable=not progress)
    with (
        ThreadPoolExecutor(n_threads, thread_name_prefix="cxr-read") as readers,
        ThreadPoolExecutor(n_threads, thread_name_prefix="cxr-write") as writers,
        bar,
    ):
        chunks = iter(list(_batches(files, batch_size)))
        # read ahead: at most `prefetch` batches are being decoded while one is predicted
        queue = deque(
            [readers.submit(_load_one, p, size) for p in chunk]
            for chunk in islice(chunks, prefetch)
        )
        pending: deque[Future[dict[str, Any]]] = deque()
        while queue:
            futures = queue.popleft()
            next_chunk = next(chunks, None)
            if next_chunk is not None:
                queue.append([readers.submit(_load_one, p, size) for p in next_chunk])
            loaded = [f.result() for f in futures]
            good = [item for item in loaded if item.error is None]
            for item in loaded:
                if item.error is not None:
                    skipped.append((item.name, f"unreadable image: {item.error}"))
            bar.update(len(loaded) - len(good))
            if not good:
                continue
            x = np.stack([item.resized for item in good])[..., None]
            probs = predict_masks(model, x, batch_size=batch_size)
            for item, prob in zip(good, probs, strict=True):
                args = (item, prob, out_dir, names[item.name], postprocess, threshold, overlays)
                future = writers.submit(_finish_one, *args)
                future.add_done_callback(lambda _: bar.update(1))
                pending.append(future)
            # keep the write queue bounded (memory): collect finished writes in order
            while len(pending) > batch_size * prefetch:
                rows.append(pending.popleft().result())
        rows.extend(future.result() for future in pending)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    table = pd.DataFrame(rows, columns=[*LUNGS_COLUMNS, "mask_path", "overlay_path"])
    table = table.sort_values("file", kind="stable").reset_index(drop=True)
    atomic_write_bytes(
        out_dir / "lungs.csv", table[list(LUNGS_COLUMNS)].to_csv(index=False).encode("utf-8")
    )
    skipped.sort()
    return SegmentReport(out_dir, size, table, skipped, seconds, cpu_seconds)
