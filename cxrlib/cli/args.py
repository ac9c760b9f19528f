"""Argument helpers shared by the ``cxrlib`` sub-commands (``cli``, ``cli_seg``, ``cli_tb``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_inference_arguments",
    "positive_int",
    "unit_interval",
    "show_progress",
    "existing_folder",
    "segmentation_model_file",
]

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


def unit_interval(text: str) -> float:
    """Parse a number in ``(0, 1]`` (an argparse ``type``); a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
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

    A file that is not a model is refused when it is loaded
    (:func:`cxrlib.seg.inference.load_segmentation_model`).

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
    from cxrlib.seg.inference import check_model_file

    return check_model_file(model)


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--runtime``, ``--scheduler`` and ``--workers`` (``segment`` and ``classify``)."""
    from cxrlib.seg.runtime_names import RUNTIME_CHOICES
    from cxrlib.seg.scheduling import LOCAL_CLUSTER_MIN_CORES, LOCAL_CLUSTER_MIN_IMAGES

    parser.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="auto",
        help="inference runtime (auto: the fastest installed, see cxrlib.seg.runtime)",
    )
    parser.add_argument(
        "--scheduler",
        default="auto",
        metavar="WHERE",
        help=(
            "inline (this process), local (a local Dask cluster of worker processes), "
            "config (the scheduler of Dask's configuration), or a Dask scheduler address "
            "such as tcp://10.0.0.5:8786 (auto: local from "
            f"{LOCAL_CLUSTER_MIN_IMAGES} images on more than {LOCAL_CLUSTER_MIN_CORES} cores, "
            "else inline)"
        ),
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes of a local cluster (one per two cores)",
    )
