"""Benchmark: loading the real development set into arrays.

Compares, on the same table of radiographs and lung masks:

* ``sequential loop``: the loop a reader would write first (Pillow open, convert to
  8-bit gray, box-filter resize, for every image and mask, one after the other);
* ``cold``: :func:`cxrlib.preprocess.load_arrays` on all cores with an empty cache
  folder (it also writes the cache entry), once per worker pool: ``joblib (loky)``, the
  library's (:class:`joblib.Parallel`; its first call starts the workers, later calls
  reuse them, so both are reported), and the hand-written
  :class:`concurrent.futures.ProcessPoolExecutor` pool it replaced (:func:`own_pool_results`),
  with workers forked from this process (``fork``, what it did in a plain script) or from a
  forkserver (what it did in Jupyter or with TensorFlow loaded; the first call starts the
  server);
* ``load_arrays warm``: the same call again, served from the cache.

The CPU (model name, whether it has AVX512_BF16 and AMX, core count) is printed with the
table.

Wall seconds depend on how busy the machine is; the ``cpu s`` column (CPU time of
this process and its worker processes) shows the work done regardless.

Every file is read once before timing, so all three see the same (warm) OS page
cache. Prints one plain-text table.

Usage::

    python benchmarks/bench_loading.py [--data DIR] [--size 256] [--repeats 1]

``--data`` defaults to ``$CXR_REAL_DIR``, else ``../shared/cxr-real`` next to the
repository; it is the folder that contains ``Lung Segmentation/`` (the real development
set, or phantoms from ``cxrlib synth``).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import PIL
from PIL import Image

from cxrlib.data.datasets import scan_dataset
from cxrlib.preprocess import load_arrays, loader

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


def cpu_flags() -> dict[str, object]:
    """The CPU's model name, whether it has AVX512_BF16 / AMX, and its core count."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": model,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": bool(flags & {"amx_bf16", "amx_tile", "amx_int8"}),
        "cores": os.cpu_count(),
        "usable cores": usable or os.cpu_count(),
    }


def own_pool_results(
    tasks: list, settings: object, jobs: int, files: tuple[str, str], start_method: str
) -> Iterator[object]:
    """The hand-written pool that :mod:`cxrlib.preprocess.loader` used before joblib.

    A :class:`~concurrent.futures.ProcessPoolExecutor` whose workers are forked from this
    process (``"fork"``: milliseconds, but unsafe once TensorFlow or a Jupyter kernel's
    threads run) or from a clean ``"forkserver"`` (what it used in that case), each worker
    filling its rows of the shared ``.npy`` files.
    """
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["__main__", loader.__name__])
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
            pending = {
                pool.submit(loader._worker_chunk, start, rows, settings, files)
                for start, rows in tasks
            }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


#: The worker pools compared: name -> the function ``load_arrays`` runs its tasks with.
POOLS: dict[str, Callable[..., Iterator[object]]] = {
    "own pool (fork)": functools.partial(own_pool_results, start_method="fork"),
    "own pool (forkserver)": functools.partial(own_pool_results, start_method="forkserver"),
    "joblib (loky)": loader._pool_results,
}
#: Pools whose first call also starts long-lived processes: reported apart.
STARTS_PROCESSES = {"own pool (forkserver)", "joblib (loky)"}


@contextmanager
def use_pool(name: str) -> Iterator[None]:
    """Make :func:`load_arrays` run its worker tasks on pool ``name`` of :data:`POOLS`."""
    with mock.patch.object(loader, "_pool_results", POOLS[name]):
        yield


def cpu_seconds() -> float:
    """CPU time used so far by this process and its children (the workers).

    Finished children are counted by ``getrusage``; children still alive (joblib keeps its
    workers for the next call) are added through psutil when it is installed.
    """
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # it just ended
            continue
        total += times.user + times.system
    return total


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
        cache_dirs = (Path(scratch) / f"cache{i}" for i in range(10**6))
        state: dict[str, Path] = {}

        def fresh_cache() -> None:
            state["cache"] = next(cache_dirs)

        def load() -> None:
            load_arrays(
                table, size=args.size, n_jobs=jobs, cache_dir=state["cache"], progress=False
            )

        rows = [
            (
                "sequential loop (Pillow)",
                best_time(
                    lambda: sequential_loop(image_paths, mask_paths, args.size), args.repeats
                ),
            )
        ]
        for name in POOLS:
            with use_pool(name):
                first = best_time(load, 1, setup=fresh_cache)
                if name in STARTS_PROCESSES:  # the first call also starts processes
                    rows.append((f"cold, {name} 1st", first))
                    first = best_time(load, args.repeats, setup=fresh_cache)
                elif args.repeats > 1:
                    first = min(first, best_time(load, args.repeats - 1, setup=fresh_cache))
                rows.append((f"cold, {name}", first))
        rows.append(("load_arrays warm (cache)", best_time(load, args.repeats)))
        entry = next(p for p in state["cache"].iterdir() if p.is_dir())
        cache_mb = sum(f.stat().st_size for f in entry.iterdir()) / 2**20

    import joblib

    count, cpu = len(table), cpu_flags()
    print(
        f"data: {args.data}  ({count} images, {sum(m is not None for m in mask_paths)} masks, "
        f"{args.size}x{args.size}, best of {args.repeats})"
    )
    print(
        f"cpu: {cpu['model']}  avx512_bf16: {'yes' if cpu['avx512_bf16'] else 'no'}  "
        f"amx: {'yes' if cpu['amx'] else 'no'}  cores: {cpu['cores']} "
        f"({cpu['usable cores']} usable, n_jobs={jobs})"
    )
    print(
        f"python {platform.python_version()}  pillow {PIL.__version__}  "
        f"joblib {joblib.__version__}  cache entry {cache_mb:.0f} MiB"
    )
    base = rows[0][1]
    header = f"{'method':<32}{'images':>7}{'size':>6}{'seconds':>9}{'images/s':>10}"
    print(header + f"{'speed-up':>10}{'cpu s':>8}")
    for name, (seconds, cpu_s) in rows:
        print(
            f"{name:<32}{count:>7}{args.size:>6}{seconds:>9.3f}{count / seconds:>10.0f}"
            f"{base[0] / seconds:>9.1f}x{cpu_s:>8.2f}"
        )
    print(
        f"load average while running: {os.getloadavg()[0]:.1f} "
        "(speed-ups need idle cores; 'cpu s' counts this process and its workers, "
        "except forkserver workers, which are not its children)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
