"""Where a segment job runs: in this process, or on a local or remote Dask cluster.

Cheap to import (the command line builds its help from it). The Dask side is
:mod:`cxrlib.seg.cluster`.
"""

from __future__ import annotations

import os

__all__ = [
    "LOCAL_CLUSTER_MIN_CORES",
    "LOCAL_CLUSTER_MIN_IMAGES",
    "choose_scheduler",
    "local_workers",
    "worker_threads",
]

LOCAL_CLUSTER_MIN_IMAGES = 256
"""``scheduler="auto"`` starts a local Dask cluster from this many images to do ..."""
LOCAL_CLUSTER_MIN_CORES = 2
"""... and only on machines with more cores than this (measured:
``benchmarks/bench_segment_scaling.py``; starting worker processes costs seconds)."""


def choose_scheduler(scheduler: str, n_pending: int, cores: int | None = None) -> str:
    """Resolve ``"auto"``; any other value is returned unchanged.

    Parameters
    ----------
    scheduler : str
        ``"auto"``, ``"inline"``, ``"local"``, ``"config"`` or a scheduler address.
    n_pending : int
        Images still to segment.
    cores : int, optional
        Default ``os.cpu_count()``.

    Returns
    -------
    str
        ``"local"`` for ``"auto"`` when ``n_pending >= LOCAL_CLUSTER_MIN_IMAGES`` and
        ``cores > LOCAL_CLUSTER_MIN_CORES``, else ``"inline"``.
    """
    if scheduler != "auto":
        return scheduler
    cores = cores or os.cpu_count() or 1
    big = n_pending >= LOCAL_CLUSTER_MIN_IMAGES and cores > LOCAL_CLUSTER_MIN_CORES
    return "local" if big else "inline"


def local_workers(n_workers: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """``(worker processes, runtime threads per worker)`` for a local cluster.

    Parameters
    ----------
    n_workers : int, optional
        Default: one worker per two cores (at least one), so that each worker's
        runtime has two threads for the network while its I/O threads read and write.
    cores : int, optional
        Default ``os.cpu_count()``.
    """
    cores = cores or os.cpu_count() or 1
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    workers = n_workers or max(1, cores // 2)
    return workers, max(1, cores // workers)


def worker_threads(where: str, n_workers: int | None = None) -> int | None:
    """Runtime threads per worker: shared out on a local cluster, the runtime's own elsewhere."""
    return local_workers(n_workers)[1] if where == "local" else None
