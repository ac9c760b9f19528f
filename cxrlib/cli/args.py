"""Argument helpers shared by the ``cxrlib`` sub-commands (``cli``, ``cli_seg``, ``cli_tb``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["positive_int", "show_progress", "existing_folder"]


def positive_int(text: str) -> int:
    """Parse a positive integer (an argparse ``type``); a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def show_progress(args: argparse.Namespace) -> bool:
    """False when the global ``-q/--quiet`` flag was given."""
    return not getattr(args, "quiet", False)


def existing_folder(path: str | Path, what: str = "dataset folder") -> Path:
    """``path`` as a Path; ``ValueError`` naming it when it is not an existing folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{what} {folder} does not exist or is not a folder")
    return folder
