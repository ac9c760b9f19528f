"""The ``--real`` (and ``--run``) arguments of the benchmarks that need the real development set."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_real_argument(parser: argparse.ArgumentParser, *, run: bool = False) -> None:
    """Add ``--real`` (default ``$CXR_REAL_DIR``) and, with ``run``, a required ``--run``."""
    if run:
        parser.add_argument("--run", type=Path, required=True, help="a train-seg run folder")
    parser.add_argument("--real", default=os.environ.get("CXR_REAL_DIR"), help="real set")


def usable(args: argparse.Namespace) -> bool:
    """Whether ``--real`` (and ``--run``, if any) can be used; says why not on stderr."""
    if not args.real or not Path(args.real).is_dir():
        print("set CXR_REAL_DIR or --real to the real development set", file=sys.stderr)
        return False
    run = getattr(args, "run", None)
    if run is not None and not all((run / name).is_file() for name in ("model.keras", "split.csv")):
        print(f"{run} is not a finished cxrlib train-seg run folder", file=sys.stderr)
        return False
    return True
