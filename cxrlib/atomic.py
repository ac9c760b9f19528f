"""Atomic file writes: a temporary file next to the target, then one rename.

A reader (or a crash) never sees a half-written file: either the old file or the new
one is in place. The temporary file gets the mode an ordinary ``open(path, "w")`` would
give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "default_file_mode"]


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import (single-threaded): os.umask can only be read by setting it, which
# would race with threads creating files (inference writes from a thread pool).
_UMASK = _read_umask()


def default_file_mode() -> int:
    """The permission bits of a newly created ordinary file (``0o666`` less the umask)."""
    return 0o666 & ~_UMASK


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], suffix: str) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it into place.

    Parameters
    ----------
    path
        The final file; its folder is created when missing.
    write
        Writes the whole content to the temporary path it is given.
    suffix
        Suffix of the temporary file (some writers, such as ``model.save``, need the
        right extension: ``".keras"``).

    Returns
    -------
    pathlib.Path
        ``path``. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), ".part")
