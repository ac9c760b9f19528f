"""A small on-disk cache of named numpy arrays, keyed by a content hash.

Each entry is one folder ``<cache_dir>/<key>/`` holding one uncompressed ``.npy``
file per array and a JSON sidecar ``meta.json`` (the key's inputs, the creation
time and every array's shape and dtype). ``.npy`` files load with a single
``readinto`` per array, which is the fastest way numpy offers to get hundreds of
megabytes back into memory.

Entries are built in a temporary folder next to their final place (writers may fill
memory-mapped ``.npy`` files there from several processes) and renamed into place
in one step, so an interrupted write never leaves a half-written entry.
An entry that fails to load (truncated file, wrong shape, unreadable sidecar) is
deleted with a warning and reported as a miss, so the caller rebuilds it.

The key is a SHA-256 over everything that changes the cached result (see
:func:`hash_key`); a changed input therefore gives a new key, and entries are never
stale. Old entries are only removed by :func:`clear_cache`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib.runs import hash_key

__all__ = [
    "CACHE_ENV_VAR",
    "CacheWarning",
    "default_cache_dir",
    "resolve_cache_dir",
    "hash_key",
    "load_entry",
    "entry_writer",
    "save_arrays",
    "create_array_file",
    "save_entry",
    "clear_cache",
]

#: Environment variable that overrides the default cache folder.
CACHE_ENV_VAR = "CXRLIB_CACHE_DIR"
_META_NAME = "meta.json"
_TMP_PREFIX = ".tmp-"

logger = logging.getLogger(__name__)


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt or incomplete) and was discarded."""


def default_cache_dir() -> Path:
    """Return ``$CXRLIB_CACHE_DIR`` if set, else ``~/.cache/cxrlib/arrays``."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "cxrlib" / "arrays"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | bool | None) -> Path | None:
    """Turn a user's ``cache_dir`` argument into a folder, or None for "no cache".

    Parameters
    ----------
    cache_dir
        ``"auto"`` (or True): :func:`default_cache_dir`; ``None`` or ``False``: caching
        disabled; any other string or path: that folder.
    """
    if cache_dir is None or cache_dir is False:
        return None
    if cache_dir is True or cache_dir == "auto":
        return default_cache_dir()
    if isinstance(cache_dir, str | os.PathLike):
        return Path(cache_dir).expanduser()
    raise TypeError(f"cache_dir must be 'auto', a folder path, None or False, got {cache_dir!r}")


def _entry_dir(cache_dir: Path, key: str) -> Path:
    if not key or any(ch not in "0123456789abcdef" for ch in key):
        raise ValueError(f"cache key must be a lower-case hex digest, got {key!r}")
    return cache_dir / key


def _discard(entry: Path, reason: str) -> None:
    warnings.warn(
        f"discarding unusable cache entry {entry}: {reason}; it will be rebuilt",
        CacheWarning,
        stacklevel=3,
    )
    shutil.rmtree(entry, ignore_errors=True)


def load_entry(
    cache_dir: Path, key: str, expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> dict[str, np.ndarray] | None:
    """Load the arrays of entry ``key``, or return None on a miss.

    Parameters
    ----------
    cache_dir
        The cache folder.
    key
        The entry's key (a hex digest from :func:`hash_key`).
    expected
        ``{name: (shape, dtype string)}`` of every array the entry must hold. An entry
        whose files are missing, truncated, or of another shape or dtype is deleted
        with a :class:`CacheWarning` and reported as a miss.

    Returns
    -------
    dict of str to numpy.ndarray, or None
        The arrays (fully in memory, writeable), or None if there is no usable entry.
    """
    entry = _entry_dir(cache_dir, key)
    if not entry.is_dir():
        return None
    try:
        json.loads((entry / _META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        _discard(entry, f"unreadable {_META_NAME} ({error})")
        return None
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in expected.items():
        path = entry / f"{name}.npy"
        try:
            # Check the header (and the file's length) before reading: a damaged
            # header must not make us allocate a huge array.
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            found = (mapped.shape, mapped.dtype)
            del mapped
            if found != (tuple(shape), np.dtype(dtype)):
                _discard(entry, f"{path.name} holds {found[1]}{found[0]}, expected {dtype}{shape}")
                return None
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            _discard(entry, f"cannot load {path.name} ({error})")
            return None
    logger.info("cache hit: %s", entry)
    return arrays


#: A temporary entry folder untouched for this long belongs to a killed writer.
ABANDONED_AFTER_SECONDS = 24 * 3600


def remove_abandoned_writes(
    cache_dir: Path, older_than: float = ABANDONED_AFTER_SECONDS
) -> list[Path]:
    """Delete temporary entry folders that a killed writer left (older than ``older_than`` s).

    A writer that is killed (SIGKILL, power loss) cannot remove its ``.tmp-*`` folder; the
    entry it was building is simply missing and is rebuilt by the next load. Such folders
    are removed once they are older than a day, so that a writer still busy (possibly on
    another machine sharing the cache) is never disturbed.

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    removed = []
    now = time.time()
    for child in Path(cache_dir).iterdir() if Path(cache_dir).is_dir() else ():
        if child.is_dir() and child.name.startswith(_TMP_PREFIX):
            try:
                age = now - child.stat().st_mtime
            except OSError:
                continue
            if age > older_than:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    if removed:
        logger.warning("removed %d abandoned cache write(s) in %s", len(removed), cache_dir)
    return removed


@contextmanager
def entry_writer(cache_dir: Path, key: str, meta: Mapping[str, Any]) -> Iterator[Path]:
    """Build entry ``key`` in a temporary folder; publish it when the block succeeds.

    Usage::

        with entry_writer(cache_dir, key, meta) as folder:
            save_arrays(folder, {"images": images})  # or fill create_array_file()s

    On a clean exit a ``meta.json`` sidecar (``meta`` plus the key, the creation time
    and each ``.npy`` file's shape and dtype) is written and the folder is renamed to
    ``<cache_dir>/<key>`` in one step. If the block (or the publishing) raises, even
    with KeyboardInterrupt, the temporary folder is removed: no entry is left
    behind. If another process published the same key meanwhile, its entry is kept
    (it holds the same data).

    Yields
    ------
    pathlib.Path
        The temporary folder to write ``<name>.npy`` files into.
    """
    entry = _entry_dir(cache_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_writes(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key[:16]}-", dir=cache_dir))
    try:
        yield tmp
        _write_sidecar(tmp, key, meta)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("cache write: %s", entry)


def _write_sidecar(folder: Path, key: str, meta: Mapping[str, Any]) -> None:
    arrays = {}
    for path in sorted(folder.glob("*.npy")):
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
        arrays[path.stem] = {"shape": list(array.shape), "dtype": str(array.dtype)}
        del array
    sidecar = {
        **meta,
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "arrays": arrays,
    }
    (folder / _META_NAME).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")


def save_arrays(folder: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write each array as ``<folder>/<name>.npy`` (uncompressed, no pickles)."""
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def create_array_file(path: Path, shape: tuple[int, ...], dtype: str | np.dtype) -> np.memmap:
    """Create a zero-filled ``.npy`` file and return it memory-mapped for writing.

    Its disk space is reserved up front (``posix_fallocate`` where available), so a
    full disk raises ``OSError`` here instead of crashing a process that writes into
    the mapping later. Other processes can open it with
    ``np.load(path, mmap_mode="r+")`` and write disjoint parts concurrently.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    if hasattr(os, "posix_fallocate") and array.nbytes:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    return array


def save_entry(
    cache_dir: Path, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> Path:
    """Store ``arrays`` as entry ``key``, atomically (see :func:`entry_writer`).

    Returns
    -------
    pathlib.Path
        The entry's folder.
    """
    with entry_writer(cache_dir, key, meta) as folder:
        save_arrays(folder, arrays)
    return _entry_dir(cache_dir, key)


def clear_cache(cache_dir: str | os.PathLike[str] | None = "auto") -> int:
    """Delete every entry (and leftover temporary folder) in a cache folder.

    Parameters
    ----------
    cache_dir
        The folder to clear; ``"auto"`` means :func:`default_cache_dir`.

    Returns
    -------
    int
        The number of entries removed (0 if the folder does not exist).
    """
    folder = resolve_cache_dir(cache_dir)
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    for child in folder.iterdir():
        if child.is_dir() and (_is_key(child.name) or child.name.startswith(_TMP_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(ch in "0123456789abcdef" for ch in name)
