"""Benchmark: writing synthetic phantoms with ``cxrlib synth``.

Times :func:`cxrlib.synthetic.write_dataset` (compilation layout, PNG) for one worker and
for all cores, and reports phantoms per second. The issue's target: 200 phantoms at
512x512 in under 30 s on 2 cores. Prints one plain-text table; wall seconds depend on how
busy the machine is, the ``cpu s`` column (this process and its workers) does not.

Usage::

    python benchmarks/bench_synth.py [--n 200] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from cxrlib.synthetic import write_dataset


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_write(n: int, size: int, n_jobs: int) -> tuple[float, float]:
    """Return (wall seconds, cpu seconds) to write ``n`` phantoms with ``n_jobs`` workers."""
    with tempfile.TemporaryDirectory() as folder:
        cpu0, start = _cpu_seconds(), time.perf_counter()
        write_dataset(Path(folder) / "ph", n=n, size=size, seed=0, n_jobs=n_jobs, progress=False)
        return time.perf_counter() - start, _cpu_seconds() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    print(f"phantoms: {args.n} at {args.size}x{args.size}, {cores} cores, load {load:.1f}")
    rows = [("1 worker", time_write(args.n, args.size, 1))]
    if cores > 1:
        rows.append((f"{cores} workers", time_write(args.n, args.size, cores)))
    base = rows[0][1][0]
    print(f"{'method':<12} {'seconds':>8} {'img/s':>7} {'speed-up':>8} {'cpu s':>7}")
    for name, (wall, cpu) in rows:
        print(f"{name:<12} {wall:8.1f} {args.n / wall:7.1f} {base / wall:7.2f}x {cpu:7.1f}")
    verdict = "meets" if rows[-1][1][0] < 30 else "misses"
    print(f"target: {args.n} phantoms in < 30 s -> {verdict} ({rows[-1][1][0]:.1f} s)")


if __name__ == "__main__":
    main()
