"""Load a dataset table into model-ready arrays, on all cores, with an on-disk cache.

:func:`load_arrays` applies the chain of :mod:`cxrlib.preprocess.transforms` to every row
of a dataset table (columns ``id``, ``image_path``, ``mask_path``, as made by
:func:`cxrlib.data.datasets.scan_dataset`) on all CPU cores (:class:`joblib.Parallel`
workers, which write straight into memory-mapped ``.npy`` files) and returns model-ready
arrays. Results are cached on disk (:mod:`cxrlib.preprocess.cache`), keyed by every
parameter and by each file's identity (:func:`cxrlib.runs.file_identity`: path, size and
modification time), so a second call with the same inputs loads in a fraction of a second
and a changed file or parameter is never served stale data.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from cxrlib.data.imageio import ImageReadError, read_image, read_mask
from cxrlib.preprocess.cache import clear_cache as _clear_entries
from cxrlib.preprocess.cache import (
    create_array_file,
    entry_writer,
    hash_key,
    load_entry,
    resolve_cache_dir,
    save_arrays,
)
from cxrlib.preprocess.transforms import (
    _EQUALIZE_METHODS,
    _RESIZE_METHODS,
    EqualizeMethod,
    ResizeMethod,
    Size,
    _as_hw,
    _check_choice,
    preprocess_image,
    preprocess_mask,
)
from cxrlib.runs import file_identity

__all__ = ["CACHE_FORMAT_VERSION", "LoadedArrays", "load_arrays", "clear_cache"]

#: Bump whenever the arrays produced for the same inputs change (new algorithm,
#: new array layout): old cache entries then no longer match any key.
CACHE_FORMAT_VERSION = 1

#: Most rows handed to a worker process per task (amortizes the per-task overhead).
MAX_CHUNK_ROWS = 16

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
        :func:`~cxrlib.preprocess.transforms.unletterbox`).
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
    _tune_worker_malloc()
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


_malloc_tuned = False


def _tune_worker_malloc() -> None:
    """Keep freed memory in the worker's heap (glibc only; once per worker process).

    Reading and resizing one radiograph allocates and frees several 1 MB arrays.
    By default glibc hands such blocks back to the operating system and takes them
    again for the next image, page-faulting every page each time; on a busy 2-core
    machine that doubled the system time of a worker. joblib's workers end when they
    have been idle for a few minutes, so they may keep up to 128 MB of freed heap.
    """
    import ctypes
    import platform

    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
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
    """Run the tasks on joblib's worker processes; yield their results as they complete.

    The loky backend starts fresh interpreters (never a fork of the caller, so a Jupyter
    kernel's or TensorFlow's threads cannot deadlock a worker) and keeps them for the
    next call. Closing the generator (on an error) cancels the queued tasks.
    """
    from joblib import Parallel, delayed

    parallel = Parallel(
        n_jobs=min(jobs, len(tasks)),
        backend="loky",
        return_as="generator_unordered",
        batch_size=1,
        pre_dispatch="all",
    )
    work = delayed(_worker_chunk)
    outputs = parallel(work(start, part, settings, files) for start, part in tasks)
    try:
        # not `yield from`: closing it would close `outputs` before the filter below
        for output in outputs:  # noqa: UP028
            yield output
    finally:
        with warnings.catch_warnings():
            # stopping early on a read error is intended: no "tasks not used" warning
            warnings.filterwarnings("ignore", r".*adjusting the input task iterator", UserWarning)
            outputs.close()


def _stat_entry(path: str) -> list[Any]:
    """:func:`cxrlib.runs.file_identity`, with a missing file as an :class:`ImageReadError`."""
    try:
        return file_identity(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file does not exist") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot stat file ({error})") from error


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
    bar = tqdm(total=count, desc="Loading images", unit="img", disable=not progress)
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
        The preprocessing chain, see :func:`~cxrlib.preprocess.transforms.preprocess_image`.
    n_jobs
        Worker processes (joblib's loky backend: started on the first call, reused by
        later ones); None or -1: all available cores; 1: no pool, in-process.
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
    return _clear_entries(cache_dir)
