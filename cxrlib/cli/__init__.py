"""The ``cxrlib`` command line.

Sub-commands
------------
``cxrlib synth OUT --n N --size S --seed K [--layout L] [--dicom]``
    write procedural chest X-ray phantoms in one of the real datasets' layouts.
``cxrlib info DIR [--json] [--check]``
    scan a dataset folder and report images, masks, pairing quirks and counts.
``cxrlib download NAME [--dest DIR] [--sha256 HASH] [--url URL]``
    fetch a public dataset with checksum verification and safe extraction.
``cxrlib book --profile smoke|cpu|gpu [--data DIR] [--out DIR]``
    execute the notebooks with papermill and build the Jupyter Book.

Heavy modules (Keras, pandas) are imported inside each command, so ``cxrlib --help``
stays fast. Every command exits with status 2 and a one-line message on bad input
instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cxrlib.errors import CxrlibError, user_errors

__all__ = ["main", "build_parser"]


class CommandError(CxrlibError):
    """A user-facing error: printed as ``cxrlib: error: ...`` with exit status 2."""


def _cmd_synth(args: argparse.Namespace) -> int:
    from cxrlib.synthetic import write_dataset

    start = time.perf_counter()
    manifest = write_dataset(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        layout=args.layout,
        dicom=args.dicom,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    summary = manifest.to_dict()
    if args.json:
        print(json.dumps({**summary, "action": manifest.action}, indent=2, default=str))
        return 0
    shape = f"layout {manifest.layout}, {manifest.size}x{manifest.size}"
    if manifest.action == "reused":
        print(
            f"reused {summary['n_images']} phantoms ({shape}) in {args.out}: the folder already "
            "holds them with these settings, nothing was rewritten (--overwrite rewrites them)"
        )
        return 0
    why = {
        "replaced": " (replacing phantoms made with other settings)",
        "recovered": " (replacing the files of an earlier synth that did not finish)",
        "repaired": " (files of these phantoms were missing)",
    }.get(manifest.action, "")
    print(
        f"wrote {summary['n_images']} phantoms ({summary['n_masks']} mask files, {shape}) "
        f"to {args.out} in {elapsed:.1f} s{why}"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from cxrlib.data.datasets import scan_dataset

    scan = scan_dataset(
        args.directory, decode=args.check, progress=not args.json and not args.quiet
    )
    if args.json:
        print(json.dumps(scan.report.to_dict(), indent=2, default=str))
    else:
        print(scan.report.summary())
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from cxrlib.data.download import fetch, list_datasets

    if args.name == "list":
        for dataset in list_datasets():
            checksum = dataset.sha256 or "none on record (pass --sha256)"
            print(f"{dataset.name:16s} {dataset.description}")
            print(f"  file: {dataset.filename} ({dataset.size_text})")
            print(f"  url: {dataset.url}\n  sha256: {checksum}\n  cite: {dataset.citation}")
        return 0
    path = fetch(
        args.name,
        dest=args.dest,
        sha256=args.sha256,
        url=args.url,
        progress=not args.quiet,
        extract=not args.no_extract,
    )
    print(path)
    return 0


def _cmd_book(args: argparse.Namespace) -> int:
    from cxrlib.book.runner import build_book

    result = build_book(
        profile=args.profile,
        data_dir=args.data,
        out_dir=args.out,
        notebooks=args.only,
        skip_build=args.no_html,
        progress=not args.quiet,
        runs_dir=args.runs,
    )
    print(f"book built: {result}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``cxrlib`` command."""
    parser = argparse.ArgumentParser(
        prog="cxrlib",
        description="Chest X-ray helpers for the cxr-book: data, phantoms, models, the book.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", help="write synthetic chest X-ray phantoms")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--n", type=int, default=200, help="number of radiographs (200)")
    synth.add_argument("--size", type=int, default=512, help="image side in pixels (512)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (0)")
    synth.add_argument(
        "--layout",
        choices=["compilation", "montgomery", "shenzhen", "plain"],
        default="compilation",
        help="folder layout to imitate (compilation)",
    )
    synth.add_argument("--dicom", action="store_true", help="write images as DICOM")
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace phantoms made with other settings (the same settings are reused), "
        "or write into a non-empty folder",
    )
    synth.add_argument("--json", action="store_true", help="print the manifest as JSON")
    synth.set_defaults(func=_cmd_synth)

    info = sub.add_parser("info", help="scan a dataset folder and report what it holds")
    info.add_argument("directory", type=Path, help="dataset folder (any layout, any depth)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument(
        "--check",
        action="store_true",
        help="decode every image and mask (not only the headers): list the undecodable "
        "ones as skipped and warn about all-zero masks",
    )
    info.set_defaults(func=_cmd_info)

    download = sub.add_parser("download", help="download a public dataset ('list' lists)")
    download.add_argument("name", help="dataset name, or 'list'")
    download.add_argument(
        "--dest", type=Path, default=None, help="cache folder ($CXRLIB_DATA_DIR or user cache)"
    )
    download.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    download.add_argument("--url", default=None, help="mirror URL to download from")
    download.add_argument("--no-extract", action="store_true", help="keep the zip only")
    download.set_defaults(func=_cmd_download)

    book = sub.add_parser("book", help="execute the notebooks and build the book")
    book.add_argument("--profile", default="smoke", help="parameter profile (smoke|cpu|gpu)")
    book.add_argument("--data", type=Path, default=None, help="dataset folder (phantoms)")
    book.add_argument("--out", type=Path, default=None, help="where to stage and build")
    book.add_argument("--runs", type=Path, default=None, help="run outputs (runs/PROFILE)")
    book.add_argument(
        "--only", action="append", default=None, help="run only this notebook (repeatable)"
    )
    book.add_argument("--no-html", action="store_true", help="execute only, skip jupyter-book")
    book.set_defaults(func=_cmd_book)

    from cxrlib.cli import seg, tb

    seg.register(sub)
    tb.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cxrlib: interrupted", file=sys.stderr)
        return 130
    except user_errors() as error:
        print(f"cxrlib {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
