"""Resize, letterbox and equalize radiographs, and load a dataset table into arrays.

Single-image functions are numpy-in / numpy-out:

* :func:`resize_image` -- ``float32`` image to a new size (area averaging or bilinear);
* :func:`resize_mask` -- ``bool`` mask to a new size, still binary;
* :func:`letterbox` / :func:`letterbox_mask` -- aspect-preserving fit with padding,
  and :func:`unletterbox` to map a prediction back to the original resolution;
* :func:`equalize` -- global histogram equalization or CLAHE;
* :func:`preprocess_image` / :func:`preprocess_mask` -- the whole chain, with the
  same geometry for an image and its mask.

:func:`load_arrays` applies the chain to every row of a dataset table (columns
``id``, ``image_path``, ``mask_path``, as made by :func:`cxrlib.data.datasets.scan_dataset`)
on all CPU cores and returns model-ready arrays. Results are cached on disk
(:mod:`cxrlib.preprocess.cache`), keyed by every parameter and by each file's path, size and
modification time, so a second call with the same inputs loads in a fraction of a
second and a changed file or parameter is never served stale data.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.context
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from cxrlib.data.imageio import ImageReadError, read_image, read_mask
from cxrlib.preprocess.cache import (
    create_array_file,
    entry_writer,
    hash_key,
    load_entry,
    resolve_cache_dir,
    save_arrays,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LetterboxBox",
    "LoadedArrays",
    "resize_image",
    "resize_mask",
    "letterbox_box",
    "letterbox",
    "letterbox_mask",
    "unletterbox",
    "equalize",
    "preprocess_image",
    "preprocess_mask",
    "load_arrays",
    "clear_cache",
]

#: Bump whenever the arrays produced for the same inputs change (new algorithm,
#: new array layout): old cache entries then no longer match any key.
CACHE_FORMAT_VERSION = 1

#: Most rows handed to a worker process per task (amortizes the per-task overhead).
MAX_CHUNK_ROWS = 16

ResizeMethod = Literal["area", "bilinear"]
EqualizeMethod = Literal["hist", "clahe"]
Size = int | tuple[int, int]

_RESIZE_METHODS = ("area", "bilinear")
_EQUALIZE_METHODS = ("hist", "clahe")


class LetterboxBox(NamedTuple):
    """Where a letterboxed image sits in its padded frame.

    Attributes
    ----------
    top, left
        Offset in pixels of the resized image inside the padded frame.
    scale
        Resize factor applied to the original image (same on both axes).
    """

    top: int
    left: int
    scale: float


# --------------------------------------------------------------------------- helpers


def _as_hw(size: Size, name: str = "size") -> tuple[int, int]:
    """Normalize ``size`` (an int or an (h, w) pair) to a pair of positive ints."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if is_int(size):
        pair = (int(size), int(size))  # type: ignore[arg-type]
    elif isinstance(size, Sequence | np.ndarray) and len(size) == 2 and all(map(is_int, size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return pair


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or min(array.shape) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (H, W), got shape {array.shape}")
    return array


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _pil_filters(
    shape: tuple[int, int], size: tuple[int, int], method: str
) -> tuple[Image.Resampling, Image.Resampling]:
    """Pick the Pillow filter per axis: (height filter, width filter)."""
    if method == "bilinear":
        return Image.Resampling.BILINEAR, Image.Resampling.BILINEAR
    # "area": a box filter averages exactly the input area under each output pixel
    # when shrinking; when enlarging it would degenerate to nearest neighbour, so
    # that axis is interpolated bilinearly instead.
    return tuple(  # type: ignore[return-value]
        Image.Resampling.BOX if new <= old else Image.Resampling.BILINEAR
        for old, new in zip(shape, size, strict=True)
    )


def _resize_float(array: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize a float32 (H, W) array with Pillow's mode "F" (32-bit float) resampler."""
    if array.shape == size:
        return array.copy()
    height, width = size
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    factor_h, factor_w = array.shape[0] // height, array.shape[1] // width
    if method == "area" and (factor_h * height, factor_w * width) == array.shape:
        # Shrinking by whole factors (512 -> 256): block means, twice as fast as resize.
        picture = picture.reduce((factor_w, factor_h))
    else:
        filter_h, filter_w = _pil_filters(array.shape, size, method)
        if filter_h == filter_w:
            picture = picture.resize((width, height), resample=filter_h)
        else:  # the two axes need different filters: one separable pass per axis
            picture = picture.resize((width, array.shape[0]), resample=filter_w)
            picture = picture.resize((width, height), resample=filter_h)
    return np.array(picture, dtype=np.float32)


# ---------------------------------------------------------------------------- resize


def resize_image(image: np.ndarray, size: Size, method: ResizeMethod = "area") -> np.ndarray:
    """Resize a gray image.

    Parameters
    ----------
    image
        ``(H, W)`` array of any real dtype (typically ``float32`` in ``[0, 1]``).
    size
        Output size: an int for a square, or ``(height, width)``.
    method
        ``"area"`` (default): each output pixel is the mean of the input area it
        covers (box filter; no aliasing, the right choice for downscaling); axes that
        are enlarged are interpolated bilinearly. ``"bilinear"``: bilinear
        interpolation (with a widened triangle filter when shrinking, as Pillow does).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``size``. Both methods average with non-negative
        weights, so the output stays within the input's value range.
    """
    _check_choice(method, _RESIZE_METHODS, "method")
    array = _as_2d(image, "image")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"image must hold numbers, got dtype {array.dtype} (use resize_mask)")
    out = _resize_float(array.astype(np.float32, copy=False), _as_hw(size), method)
    # Guard against float round-off pushing values a hair outside the input range.
    return np.clip(out, np.float32(array.min()), np.float32(array.max()), out=out)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """Resize a binary mask; the result is binary too.

    The mask is resampled as a 0/1 float image with the ``"area"`` method of
    :func:`resize_image` and thresholded at 0.5: an output pixel is foreground when
    more than half of the area it covers is foreground. Unlike nearest-neighbour
    sampling this keeps boundaries in place (no half-pixel shift, no jagged steps
    from skipped rows) and keeps the foreground area within about one pixel along
    the boundary; enlarging gives smooth (bilinear) instead of blocky edges.

    Parameters
    ----------
    mask
        ``(H, W)`` array; nonzero means foreground.
    size
        Output size: an int for a square, or ``(height, width)``.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape ``size``.
    """
    array = _as_2d(mask, "mask")
    binary = array if array.dtype == np.bool_ else array != 0
    return _resize_float(binary.astype(np.float32), _as_hw(size), "area") > 0.5


# ------------------------------------------------------------------------- letterbox


def letterbox_box(shape: tuple[int, int], size: Size) -> LetterboxBox:
    """Compute where an image of ``shape`` lands when letterboxed into ``size``.

    Parameters
    ----------
    shape
        ``(H, W)`` of the original image.
    size
        Output frame: an int for a square, or ``(height, width)``.

    Returns
    -------
    LetterboxBox
        ``(top, left, scale)``: the image is resized by ``scale`` (rounded to whole
        pixels, the same on both axes) and centred in the frame.
    """
    height, width = _as_hw(tuple(shape), "shape")
    frame_h, frame_w = _as_hw(size)
    scale = min(frame_h / height, frame_w / width)
    fit_h, fit_w = _fitted_shape((height, width), scale, (frame_h, frame_w))
    return LetterboxBox((frame_h - fit_h) // 2, (frame_w - fit_w) // 2, scale)


def _fitted_shape(shape: tuple[int, int], scale: float, frame: tuple[int, int]) -> tuple[int, int]:
    """Size of the resized (unpadded) image inside a letterbox frame."""
    return (
        min(frame[0], max(1, round(shape[0] * scale))),
        min(frame[1], max(1, round(shape[1] * scale))),
    )


def _pad(content: np.ndarray, box: LetterboxBox, frame: tuple[int, int], fill: Any) -> np.ndarray:
    out = np.full(frame, fill, dtype=content.dtype)
    out[box.top : box.top + content.shape[0], box.left : box.left + content.shape[1]] = content
    return out


def letterbox(
    image: np.ndarray, size: Size, fill: float = 0.0, method: ResizeMethod = "area"
) -> tuple[np.ndarray, LetterboxBox]:
    """Fit an image into a frame without distorting it, padding the rest.

    Parameters
    ----------
    image
        ``(H, W)`` gray image.
    size
        Output frame: an int for a square, or ``(height, width)``.
    fill
        Value of the padding.
    method
        Resize method, see :func:`resize_image`.

    Returns
    -------
    image : numpy.ndarray
        ``float32`` array of shape ``size``.
    box : LetterboxBox
        ``(top, left, scale)``, for :func:`unletterbox`.
    """
    array = _as_2d(image, "image")
    frame = _as_hw(size)
    box = letterbox_box(array.shape, frame)
    content = resize_image(array, _fitted_shape(array.shape, box.scale, frame), method)
    return _pad(content, box, frame, np.float32(fill)), box


def letterbox_mask(mask: np.ndarray, size: Size) -> tuple[np.ndarray, LetterboxBox]:
    """Letterbox a binary mask exactly like :func:`letterbox` does its image.

    Returns
    -------
    mask : numpy.ndarray
        ``bool`` array of shape ``size`` (padding is False).
    box : LetterboxBox
        ``(top, left, scale)``.
    """
    array = _as_2d(mask, "mask")
    frame = _as_hw(size)
    box = letterbox_box(array.shape, frame)
    content = resize_mask(array, _fitted_shape(array.shape, box.scale, frame))
    return _pad(content, box, frame, False), box


def unletterbox(
    array: np.ndarray, box: tuple[int, int, float], original_shape: tuple[int, int]
) -> np.ndarray:
    """Map a letterboxed image or mask (e.g. a prediction) back to the original size.

    Parameters
    ----------
    array
        ``(h, w)`` or ``(h, w, 1)`` letterboxed array: ``bool`` (a mask) or numbers
        (an image or a probability map).
    box
        The ``(top, left, scale)`` returned by :func:`letterbox` or
        :func:`letterbox_box` for this frame and ``original_shape``.
    original_shape
        ``(H, W)`` of the original image.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` (or ``(H, W, 1)``) array: ``bool`` for a bool input (resized with
        :func:`resize_mask`), else ``float32`` (resized with :func:`resize_image`).
    """
    values = np.asarray(array)
    channel = values.ndim == 3 and values.shape[-1] == 1
    plane = _as_2d(values[..., 0] if channel else values, "array")
    top, left, scale = box
    original = _as_hw(tuple(original_shape), "original_shape")
    fit_h, fit_w = _fitted_shape(original, float(scale), plane.shape)
    if top < 0 or left < 0 or top + fit_h > plane.shape[0] or left + fit_w > plane.shape[1]:
        raise ValueError(
            f"box {tuple(box)} for original shape {original} does not fit in an array of "
            f"shape {plane.shape}; was it letterboxed to another size?"
        )
    crop = plane[top : top + fit_h, left : left + fit_w]
    out = resize_mask(crop, original) if crop.dtype == np.bool_ else resize_image(crop, original)
    return out[..., np.newaxis] if channel else out


# -------------------------------------------------------------------------- equalize


def equalize(
    image: np.ndarray, method: EqualizeMethod = "hist", clip_limit: float = 0.01
) -> np.ndarray:
    """Spread the gray levels of an image over ``[0, 1]`` (contrast enhancement).

    Parameters
    ----------
    image
        ``(H, W)`` array with values in ``[0, 1]``.
    method
        ``"hist"``: global histogram equalization
        (:func:`skimage.exposure.equalize_hist`, 256 bins). ``"clahe"``: contrast
        limited adaptive histogram equalization
        (:func:`skimage.exposure.equalize_adapthist`, tiles of 1/8 of the image).
    clip_limit
        CLAHE clip limit in ``(0, 1]``; higher gives more contrast. Ignored by
        ``"hist"``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape with values in ``[0, 1]`` (a constant
        image is returned unchanged).
    """
    from skimage import exposure

    _check_choice(method, _EQUALIZE_METHODS, "method")
    array = _as_2d(image, "image").astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    array = np.clip(array, 0.0, 1.0)
    if hi - lo <= 0:
        return array.copy()  # a constant image has no levels to spread
    if method == "hist":
        out = exposure.equalize_hist(array, nbins=256)
    else:
        if not 0 < clip_limit <= 1:
            raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit!r}")
        out = exposure.equalize_adapthist(array, clip_limit=clip_limit)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------- whole chain


def preprocess_image(
    image: np.ndarray,
    *,
    size: Size,
    letterbox: bool = False,
    equalize: EqualizeMethod | None = None,
    method: ResizeMethod = "area",
    clip_limit: float = 0.01,
) -> np.ndarray:
    """Resize (or letterbox) and optionally equalize one image.

    Equalization runs after resizing (cheaper, and CLAHE's tiles are relative to
    the image size anyway) and, when letterboxing, before padding, so the padding
    does not distort the histogram.

    Parameters
    ----------
    image
        ``(H, W)`` array with values in ``[0, 1]``.
    size
        Output size: an int for a square, or ``(height, width)``.
    letterbox
        Keep the aspect ratio and pad with 0 (see :func:`letterbox`) instead of
        stretching to ``size``.
    equalize
        None, ``"hist"`` or ``"clahe"`` (see :func:`~cxrlib.preprocess.equalize`).
    method
        Resize method, see :func:`resize_image`.
    clip_limit
        CLAHE clip limit.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``size``.
    """
    array = _as_2d(image, "image")
    frame = _as_hw(size)
    equalize = equalize or None  # accept False
    if equalize is not None:
        _check_choice(equalize, _EQUALIZE_METHODS, "equalize")
    if letterbox:
        box = letterbox_box(array.shape, frame)
        content = resize_image(array, _fitted_shape(array.shape, box.scale, frame), method)
    else:
        content = resize_image(array, frame, method)
    if equalize is not None:
        content = _equalize(content, equalize, clip_limit)
    return _pad(content, box, frame, np.float32(0)) if letterbox else content


_equalize = equalize  # the keyword argument of preprocess_image shadows the function


def preprocess_mask(mask: np.ndarray, *, size: Size, letterbox: bool = False) -> np.ndarray:
    """Apply to a mask the geometry :func:`preprocess_image` applies to its image.

    Parameters
    ----------
    mask
        ``(H, W)`` array; nonzero means foreground.
    size
        Output size: an int for a square, or ``(height, width)``.
    letterbox
        Keep the aspect ratio and pad with False.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape ``size``.
    """
    if letterbox:
        return letterbox_mask(mask, size)[0]
    return resize_mask(mask, size)


# ---------------------------------------------------------------------- load_arrays


@dataclass
class LoadedArrays:
    """A dataset table loaded into model-ready arrays (row order of the table).

    Attributes
    ----------
    images
        ``float32`` array ``(N, h, w, 1)``, values in ``[0, 1]``.
    masks
        ``bool`` array ``(N, h, w, 1)``; all False for rows without a mask.
    has_mask
        ``bool`` array ``(N,)``: whether the row has a mask.
    ids
        The table's ``id`` column as a list of ``str``.
    original_shapes
        ``int64`` array ``(N, 2)``: each image's ``(H, W)`` before resizing (for
        :func:`unletterbox`).
    """

    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    ids: list[str]
    original_shapes: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Settings:
    """Every parameter that changes the arrays :func:`load_arrays` produces."""

    size: tuple[int, int]
    letterbox: bool
    equalize: str | None
    method: str
    clip_limit: float


class _Row(NamedTuple):
    id: str
    image: str
    mask: tuple[str, ...] | None


@dataclass
class _ChunkResult:
    """What a task reports back; the pixels themselves go straight into the outputs."""

    start: int
    count: int
    has_mask: np.ndarray  # bool (count,)
    shapes: np.ndarray  # int64 (count, 2)
    error: tuple[str, str] | None = None  # (path, reason) of an ImageReadError


def _mask_source(value: Any, row_id: str) -> tuple[str, ...] | None:
    """Normalize a ``mask_path`` cell: None/NaN/"" -> None, else a tuple of paths."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str | os.PathLike):
        return (os.fspath(value),) if os.fspath(value) else None
    if isinstance(value, tuple | list | np.ndarray):
        parts = tuple(os.fspath(part) for part in value if part is not None and str(part))
        return parts or None
    pandas = sys.modules.get("pandas")
    if pandas is not None and value is pandas.NA:
        return None
    raise TypeError(
        f"row {row_id!r}: mask_path must be None, a path or a tuple of paths, got {value!r}"
    )


def _table_rows(table: Any) -> list[_Row]:
    """Extract (id, image path, mask paths) per row from a DataFrame-like table."""
    missing = [col for col in ("id", "image_path", "mask_path") if col not in table.columns]
    if missing:
        raise ValueError(
            f"table is missing column(s) {missing}; load_arrays needs 'id', 'image_path' "
            "and 'mask_path' (see cxrlib.data.datasets.scan_dataset)"
        )
    rows = []
    for row_id, image, mask in zip(
        table["id"].tolist(),
        table["image_path"].tolist(),
        table["mask_path"].tolist(),
        strict=True,
    ):
        row_id = str(row_id)
        if not isinstance(image, str | os.PathLike) or not os.fspath(image):
            raise ValueError(f"row {row_id!r}: image_path must be a file path, got {image!r}")
        rows.append(_Row(row_id, os.fspath(image), _mask_source(mask, row_id)))
    return rows


def _load_row(row: _Row, settings: _Settings) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """Read and preprocess one row: (image (h, w), mask (h, w) or None, original shape)."""
    image = read_image(row.image)
    processed = preprocess_image(
        image,
        size=settings.size,
        letterbox=settings.letterbox,
        equalize=settings.equalize,  # type: ignore[arg-type]
        method=settings.method,  # type: ignore[arg-type]
        clip_limit=settings.clip_limit,
    )
    if row.mask is None:
        return processed, None, image.shape
    mask = read_mask(row.mask if len(row.mask) > 1 else row.mask[0])
    if mask.shape != image.shape:
        parts = f" (merged from {', '.join(row.mask)})" if len(row.mask) > 1 else ""
        raise ImageReadError(
            row.mask[0],
            f"mask shape {mask.shape}{parts} differs from the shape {image.shape} "
            f"of its image {row.image}",
        )
    resized = preprocess_mask(mask, size=settings.size, letterbox=settings.letterbox)
    return processed, resized, image.shape


def _fill_chunk(
    start: int,
    rows: Sequence[_Row],
    settings: _Settings,
    images: np.ndarray,
    masks: np.ndarray,
) -> _ChunkResult:
    """Preprocess consecutive rows into ``images[start:]`` and ``masks[start:]``."""
    count = len(rows)
    result = _ChunkResult(start, count, np.zeros(count, bool), np.zeros((count, 2), np.int64))
    for i, row in enumerate(rows):
        try:
            image, mask, shape = _load_row(row, settings)
        except ImageReadError as error:
            # ImageReadError cannot be unpickled (its __init__ takes two arguments),
            # so it crosses the process boundary as (path, reason).
            result.error = (str(error.path), error.reason)
            return result
        images[start + i, ..., 0] = image
        result.shapes[i] = shape
        if mask is not None:
            masks[start + i, ..., 0] = mask
            result.has_mask[i] = True
    return result


def _worker_chunk(
    start: int, rows: Sequence[_Row], settings: _Settings, files: tuple[str, str]
) -> _ChunkResult:
    """Worker task: fill this chunk's rows of the shared images/masks ``.npy`` files.

    Writing into memory-mapped files shared with the parent avoids pickling every
    image through a pipe (and, when caching, they are the cache entry's files).
    """
    images = np.load(files[0], mmap_mode="r+")
    masks = np.load(files[1], mmap_mode="r+")
    return _fill_chunk(start, rows, settings, images, masks)


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _chunks(rows: Sequence[_Row], jobs: int) -> list[tuple[int, Sequence[_Row]]]:
    """Split rows into tasks: at most MAX_CHUNK_ROWS, and ~4 tasks per worker."""
    if not rows:
        return []
    step = max(1, min(MAX_CHUNK_ROWS, math.ceil(len(rows) / (4 * jobs))))
    return [(start, rows[start : start + step]) for start in range(0, len(rows), step)]


#: Modules that run native thread pools which are unsafe to fork.
_FORK_UNSAFE_MODULES = ("tensorflow", "torch", "jax")


def _fork_is_safe() -> bool:
    """True when no module with native thread pools is loaded and the only other
    Python threads are tqdm's monitors (which sleep and hold nothing a worker uses)."""
    import threading

    if any(name in sys.modules for name in _FORK_UNSAFE_MODULES):
        return False
    main = threading.main_thread()
    others = [t for t in threading.enumerate() if t is not main]
    return all(type(t).__name__ == "TMonitor" for t in others)


def _pool_context() -> multiprocessing.context.BaseContext:
    """Choose how worker processes start.

    On Linux, a caller without other running threads and without TensorFlow/PyTorch/
    JAX loaded is forked: the workers inherit the imported modules and start in
    milliseconds (OpenBLAS's threads are fork-safe). Forking a process with other
    threads running (a Jupyter kernel, TensorFlow) can deadlock the child, so then
    the workers are forked from a clean "forkserver" process instead; this module is
    added to the server's preloaded modules (next to the default ``__main__``) so
    its workers need not import it again. Elsewhere the platform's default is used.
    """
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context()
    if _fork_is_safe():
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])  # no effect once it runs
    return context


def _tune_worker_malloc() -> None:
    """Worker initializer: keep freed memory in the worker's heap (glibc only).

    Reading and resizing one radiograph allocates and frees several 1 MB arrays.
    By default glibc hands such blocks back to the operating system and takes them
    again for the next image, page-faulting every page each time; on a busy 2-core
    machine that doubled the system time of a worker. Worker processes are
    short-lived, so they may keep up to 128 MB of freed heap instead.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
    mallopt(m_trim_threshold, 128 << 20)
    mallopt(m_top_pad, 16 << 20)


def _pool_results(
    tasks: list[tuple[int, Sequence[_Row]]],
    settings: _Settings,
    jobs: int,
    files: tuple[str, str],
) -> Iterator[_ChunkResult]:
    """Run the tasks on a process pool; yield their results as they complete."""
    workers = min(jobs, len(tasks))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_tune_worker_malloc
    ) as pool:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking with OpenBLAS's (fork-safe) threads
            # alive; _pool_context only picks "fork" when that is safe.
            warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
            pending: set[Future[_ChunkResult]] = {
                pool.submit(_worker_chunk, start, rows, settings, files) for start, rows in tasks
            }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:  # on an error (or an abandoned generator) drop the queued tasks
            for future in pending:
                future.cancel()


class _ProgressBar(tqdm):
    """tqdm without its monitor thread (which would make forking workers unsafe)."""

    monitor_interval = 0


def _stat_entry(path: str) -> list[Any]:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file does not exist") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot stat file ({error})") from error
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def _key_inputs(rows: Sequence[_Row], settings: _Settings) -> dict[str, Any]:
    """Everything the arrays depend on: settings, library versions, files' identity."""
    import PIL

    versions = {"pillow": PIL.__version__}
    if settings.equalize is not None:
        import skimage

        versions["scikit-image"] = skimage.__version__
    return {
        "what": "cxrlib.preprocess.load_arrays",
        "format": CACHE_FORMAT_VERSION,
        "settings": asdict(settings),
        "versions": versions,
        "rows": [
            [row.id, *_stat_entry(row.image), [_stat_entry(m) for m in row.mask or ()]]
            for row in rows
        ],
    }


def _collect(
    count: int, results: Iterator[_ChunkResult], progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Gather the tasks' reports (re-raising read errors): ``(has_mask, shapes)``."""
    has_mask = np.zeros(count, bool)
    shapes = np.zeros((count, 2), np.int64)
    bar = _ProgressBar(total=count, desc="Loading images", unit="img", disable=not progress)
    with closing(results), bar:  # type: ignore[type-var]
        for result in results:
            if result.error is not None:
                raise ImageReadError(*result.error)
            span = slice(result.start, result.start + result.count)
            has_mask[span] = result.has_mask
            shapes[span] = result.shapes
            bar.update(result.count)
    return has_mask, shapes


def _build_arrays(
    rows: Sequence[_Row],
    settings: _Settings,
    jobs: int,
    progress: bool,
    spool_dir: Path | None,
) -> LoadedArrays:
    """Preprocess every row, in-process or on ``jobs`` worker processes.

    Workers write into ``images.npy`` and ``masks.npy`` in ``spool_dir`` (a temporary
    folder if None), which are left there; in-process work stays in memory.
    """
    tasks = _chunks(rows, jobs)
    shape = (len(rows), *settings.size, 1)
    if jobs == 1 or len(tasks) <= 1:
        images, masks = np.empty(shape, np.float32), np.zeros(shape, bool)
        results = (_fill_chunk(start, part, settings, images, masks) for start, part in tasks)
        has_mask, shapes = _collect(len(rows), results, progress)
        return LoadedArrays(images, masks, has_mask, [row.id for row in rows], shapes)
    if spool_dir is None:
        with tempfile.TemporaryDirectory(prefix="cxrlib-arrays-") as scratch:
            return _build_arrays(rows, settings, jobs, progress, Path(scratch))
    files = (spool_dir / "images.npy", spool_dir / "masks.npy")
    shared_images = create_array_file(files[0], shape, np.float32)
    shared_masks = create_array_file(files[1], shape, np.bool_)
    results = _pool_results(tasks, settings, jobs, (str(files[0]), str(files[1])))
    has_mask, shapes = _collect(len(rows), results, progress)
    # copy out of the mapped files, so the arrays do not depend on them
    images, masks = np.array(shared_images), np.array(shared_masks)
    del shared_images, shared_masks  # unmap before the folder may be removed
    return LoadedArrays(images, masks, has_mask, [row.id for row in rows], shapes)


def _cache_layout(count: int, size: tuple[int, int]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "images": ((count, *size, 1), "float32"),
        "masks": ((count, *size, 1), "bool"),
        "has_mask": ((count,), "bool"),
        "original_shapes": ((count, 2), "int64"),
    }


def load_arrays(
    table: Any,
    *,
    size: Size = 256,
    letterbox: bool = False,
    equalize: EqualizeMethod | None = None,
    method: ResizeMethod = "area",
    clip_limit: float = 0.01,
    n_jobs: int | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    progress: bool = True,
) -> LoadedArrays:
    """Read, preprocess and stack every image (and mask) of a dataset table.

    Parameters
    ----------
    table
        A pandas DataFrame with one row per radiograph and the columns ``id``,
        ``image_path`` and ``mask_path`` (None, a path, or a tuple of paths that are
        OR-merged), as returned by :func:`cxrlib.data.datasets.scan_dataset`.
    size, letterbox, equalize, method, clip_limit
        The preprocessing chain, see :func:`preprocess_image`.
    n_jobs
        Worker processes; None or -1: all available cores; 1: no pool, in-process.
        (On macOS and Windows workers are spawned: a script that calls this needs
        the usual ``if __name__ == "__main__":`` guard.)
    cache_dir
        ``"auto"`` (default): ``$CXRLIB_CACHE_DIR`` or ``~/.cache/cxrlib/arrays``; a
        folder; or None/False to disable caching. The cache key covers every
        parameter above (except ``n_jobs``/``progress``) and, for each row in order,
        its id and the path, size and modification time of its image and mask
        files, so changed inputs never return stale arrays.
    progress
        Show a tqdm progress bar while reading.

    Returns
    -------
    LoadedArrays
        ``images`` float32 ``(N, h, w, 1)``, ``masks`` bool ``(N, h, w, 1)``,
        ``has_mask`` bool ``(N,)``, ``ids`` and ``original_shapes`` int64 ``(N, 2)``,
        in table order.

    Raises
    ------
    ImageReadError
        A file is missing or unreadable, or a mask's shape differs from its image's;
        the message names the file.
    """
    _check_choice(method, _RESIZE_METHODS, "method")
    equalize = equalize or None  # accept False
    if equalize is not None:
        _check_choice(equalize, _EQUALIZE_METHODS, "equalize")
    if not 0 < clip_limit <= 1:
        raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit!r}")
    settings = _Settings(
        size=_as_hw(size),
        letterbox=bool(letterbox),
        equalize=equalize,
        method=method,
        clip_limit=float(clip_limit),
    )
    jobs = _default_jobs() if n_jobs is None or n_jobs == -1 else int(n_jobs)
    if jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, -1 or None, got {n_jobs!r}")
    rows = _table_rows(table)
    folder = resolve_cache_dir(cache_dir)
    if folder is None:
        return _build_arrays(rows, settings, jobs, progress, None)

    inputs = _key_inputs(rows, settings)
    key = hash_key(inputs)
    layout = _cache_layout(len(rows), settings.size)
    entry = load_entry(folder, key, layout)
    if entry is not None:
        return LoadedArrays(ids=[row.id for row in rows], **entry)
    meta = {k: v for k, v in inputs.items() if k != "rows"}
    meta.update(
        n_rows=len(rows), rows_sha256=hash_key(inputs["rows"]), first_rows=inputs["rows"][:3]
    )
    loaded = None
    try:
        with entry_writer(folder, key, meta) as spool:
            loaded = _build_arrays(rows, settings, jobs, progress, spool)
            missing = {name for name in layout if not (spool / f"{name}.npy").exists()}
            save_arrays(spool, {name: getattr(loaded, name) for name in sorted(missing)})
    except OSError as error:
        warnings.warn(
            f"the array cache in {folder} failed ({error}); loading without it",
            stacklevel=2,
        )
        if loaded is None:
            loaded = _build_arrays(rows, settings, jobs, progress, None)
    return loaded


def clear_cache(cache_dir: str | os.PathLike[str] | None = "auto") -> int:
    """Delete all cached arrays in ``cache_dir`` (``"auto"``: the default folder).

    Returns the number of entries removed; see :func:`cxrlib.preprocess.cache.clear_cache`.
    """
    from cxrlib.preprocess import cache

    return cache.clear_cache(cache_dir)
