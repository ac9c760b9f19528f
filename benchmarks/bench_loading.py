"""Benchmark: loading the real development set into arrays.

Compares, on the same table of radiographs and lung masks:

* ``sequential loop``: the loop a reader would write first (Pillow open, convert to
  8-bit gray, box-filter resize, for every image and mask, one after the other);
* ``load_arrays cold``: :func:`cxrlib.preprocess.load_arrays` on all cores with an
  empty cache folder (it also writes the cache entry);
* ``load_arrays warm``: the same call again, served from the cache.

Wall seconds depend on how busy the machine is; the ``cpu s`` column (CPU time of
this process and its worker processes) shows the work done regardless.

Every file is read once before timing, so all three see the same (warm) OS page
cache. Prints one plain-text table.

Usage::

    python benchmarks/bench_loading.py [--data DIR] [--size 256] [--repeats 1]

``--data`` defaults to ``$CXR_REAL_DIR``, else ``../shared/cxr-real`` next to the
repository; it is the folder that contains ``Lung Segmentation/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from cxrlib.data.datasets import scan_dataset
from cxrlib.preprocess import load_arrays

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$CXR_REAL_DIR`` if set, else ``<repo>/../shared/cxr-real``."""
    value = os.environ.get("CXR_REAL_DIR")
    return Path(value) if value else REPO_ROOT.parent / "shared" / "cxr-real"


def sequential_loop(image_paths: list[str], mask_paths: list[str | None], size: int) -> None:
    """The naive baseline: one file after another with Pillow, then stack."""
    images, masks = [], []
    for image_path, mask_path in zip(image_paths, mask_paths, strict=True):
        with Image.open(image_path) as picture:
            small = picture.convert("L").resize((size, size), Image.Resampling.BOX)
        images.append(np.asarray(small, dtype=np.float32) / 255.0)
        if mask_path is None:
            masks.append(np.zeros((size, size), bool))
        else:
            with Image.open(mask_path) as picture:
                small = picture.convert("L").resize((size, size), Image.Resampling.BOX)
            masks.append(np.asarray(small) > 127)
    np.stack(images)[..., np.newaxis], np.stack(masks)[..., np.newaxis]


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (the workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_time(
    run: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds) of ``repeats`` runs; ``setup`` runs untimed first."""
    results = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        cpu, start = cpu_seconds(), time.perf_counter()
        run()
        results.append((time.perf_counter() - start, cpu_seconds() - cpu))
    return min(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="data folder")
    parser.add_argument("--size", type=int, default=256, help="output size (pixels)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (best kept)")
    args = parser.parse_args(argv)
    if not (args.data / "Lung Segmentation").is_dir():
        parser.error(
            f"no 'Lung Segmentation' folder in {args.data}; pass --data or set CXR_REAL_DIR "
            "to the folder of the real development set"
        )
    if args.size < 1 or args.repeats < 1:
        parser.error("--size and --repeats must be positive")

    table = scan_dataset(args.data).table
    image_paths = list(table["image_path"])
    mask_paths = [m if isinstance(m, str) else None for m in table["mask_path"]]
    if any(isinstance(m, tuple) for m in table["mask_path"]):
        parser.error("the baseline loop expects one mask file per image")
    for path in image_paths + [m for m in mask_paths if m]:
        Path(path).read_bytes()  # warm the OS page cache for every method alike

    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="cxrlib-bench-") as scratch:
        cache_dirs = iter(Path(scratch) / f"cache{i}" for i in range(args.repeats + 1))
        state: dict[str, Path] = {}

        def fresh_cache() -> None:
            state["cache"] = next(cache_dirs)

        def load(cache: Path | None = None) -> None:
            load_arrays(
                table,
                size=args.size,
                n_jobs=jobs,
                cache_dir=cache or state["cache"],
                progress=False,
            )

        base = best_time(lambda: sequential_loop(image_paths, mask_paths, args.size), args.repeats)
        cold = best_time(load, args.repeats, setup=fresh_cache)
        warm = best_time(load, args.repeats)
        entry = next(p for p in state["cache"].iterdir() if p.is_dir())
        cache_mb = sum(f.stat().st_size for f in entry.iterdir()) / 2**20

    count = len(table)
    print(
        f"data: {args.data}  ({count} images, {sum(m is not None for m in mask_paths)} masks, "
        f"{args.size}x{args.size}, best of {args.repeats})"
    )
    print(
        f"cpus: {os.cpu_count()} (n_jobs={jobs})  python {platform.python_version()}  "
        f"pillow {PIL.__version__}  cache entry {cache_mb:.0f} MiB"
    )
    rows = [
        ("sequential loop (Pillow)", base),
        ("load_arrays cold", cold),
        ("load_arrays warm (cache)", warm),
    ]
    header = f"{'method':<26}{'images':>7}{'size':>6}{'seconds':>9}{'images/s':>10}"
    print(header + f"{'speed-up':>10}{'cpu s':>8}")
    for name, (seconds, cpu) in rows:
        print(
            f"{name:<26}{count:>7}{args.size:>6}{seconds:>9.3f}{count / seconds:>10.0f}"
            f"{base[0] / seconds:>9.1f}x{cpu:>8.2f}"
        )
    print(
        f"load average while running: {os.getloadavg()[0]:.1f} "
        "(speed-ups need idle cores; 'cpu s' counts this process and its workers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
