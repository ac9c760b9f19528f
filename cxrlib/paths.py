"""Paths as a reader would type them: what printed tables and executed chapters show."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["display_path"]


def display_path(path: str | os.PathLike[str], start: str | os.PathLike[str] | None = None) -> str:
    """``path`` as a reader would type it from ``start`` (default: the working directory).

    Paths inside ``start`` or in a folder next to it (``../shared/cxr-real``) come back
    relative to ``start``; anything further away stays absolute. Printed paths and the
    executed chapters use it, so a published notebook does not show the folder layout of
    the machine that ran it.

    Parameters
    ----------
    path
        Any path; resolved before comparing.
    start
        The folder to be relative to; None: the working directory.

    Returns
    -------
    str
        ``runs/cpu/03b_resunet_training``, ``../shared/cxr-real`` or an absolute path.
    """
    resolved = Path(path).resolve()
    base = Path.cwd() if start is None else Path(start).resolve()
    relative = Path(os.path.relpath(resolved, base))
    ups = sum(1 for part in relative.parts if part == os.pardir)
    if ups == 0 or (ups == 1 and len(relative.parts) > 1):
        return relative.as_posix()
    return str(resolved)
