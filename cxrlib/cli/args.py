"""Argument helpers shared by the ``cxrlib`` sub-commands (``cli``, ``cli_seg``, ``cli_tb``)."""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

__all__ = [
    "positive_int",
    "show_progress",
    "existing_folder",
    "segmentation_model_file",
    "user_text",
]

#: Messages of the libraries underneath that tell a Python caller what to do
#: (``force=True``) or say the wrong thing ("File not found" for a file that exists), and
#: what a command-line user is told instead.
_LIBRARY_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"File is missing DICOM File Meta Information header or the 'DICM' prefix is "
            r"missing from the header\. Use force=True to force reading\."
        ),
        "the file does not start like a DICOM file (no 'DICM' header): it is damaged or "
        "not DICOM; convert it to PNG or export it again from the viewer",
    ),
    (
        re.compile(
            r"File not found: filepath=(?P<path>.+?)\. Please ensure the file is an "
            r"accessible `\.keras` zip file\."
        ),
        "not a .keras zip archive; give the model.keras written by cxrlib train-seg, or "
        "its run folder",
    ),
)

#: The model file inside a ``cxrlib train-seg`` run folder.
RUN_MODEL_NAME = "model.keras"


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


def segmentation_model_file(path: str | Path, option: str = "MODEL") -> Path:
    """The ``.keras`` file that ``path`` names: the file itself or ``RUN_DIR/model.keras``.

    Checks what a command-line user can fix before Keras reads the file, so the message
    says what to give instead (Keras itself would say "File not found" for a file that
    exists but is not a model).

    Parameters
    ----------
    path
        A ``.keras`` (or ``.h5``) file, or a ``cxrlib train-seg`` run folder.
    option
        How the command line calls the argument, for the messages.

    Returns
    -------
    pathlib.Path
        The model file.

    Raises
    ------
    ValueError
        Naming the path and what is expected, when it is neither.
    """
    given = Path(path)
    model = given / RUN_MODEL_NAME if given.is_dir() else given
    if given.is_dir() and not model.is_file():
        raise ValueError(
            f"{option} {given} is a folder without {RUN_MODEL_NAME}: give a .keras model file "
            "or a cxrlib train-seg run folder (its --out)"
        )
    if not model.exists():
        raise ValueError(
            f"{option} {given} does not exist: give a .keras model file or a cxrlib "
            "train-seg run folder (its --out)"
        )
    if model.suffix.lower() == ".keras" and not zipfile.is_zipfile(model):
        raise ValueError(
            f"{model}: not a readable Keras model file (a .keras model is a zip archive and "
            "this file is not one; give the model.keras written by cxrlib train-seg, or its "
            "run folder)"
        )
    return model


def user_text(text: str) -> str:
    """``text`` with the libraries' hints for Python callers replaced by command-line ones.

    pydicom ends a non-DICOM file's message with "Use force=True to force reading", and
    Keras says "File not found" for a ``.keras`` file that exists but is not a model; the
    command line prints what its user can do instead (:data:`_LIBRARY_HINTS`).
    """
    for pattern, hint in _LIBRARY_HINTS:
        text = pattern.sub(hint, text)
    return text
