"""Run a segment job on Dask: a local cluster of worker processes, or a running cluster.

:func:`dask_client` opens the client :func:`cxrlib.seg.folder.segment_folder` sends
shards of images to:

``"local"``
    A :class:`distributed.LocalCluster` of worker processes on this machine, one task at
    a time each, the cores shared out between them (:func:`cxrlib.seg.scheduling.local_workers`).
an address (``"tcp://10.0.0.5:8786"``)
    A running scheduler, for example one started by dask-jobqueue on a Slurm or PBS
    cluster, or by dask-kubernetes; ``"config"`` uses Dask's own configuration
    (``DASK_SCHEDULER_ADDRESS`` or ``scheduler-address`` in a Dask config file).

Each worker process loads the model once (:func:`cached_predictor`) and runs
:func:`segment_shard` on lists of images: the same code as an in-process run
(:func:`cxrlib.seg.pipeline.segment_files`), writing masks and manifest parts straight
into the output folder, which must therefore be on a file system every worker sees.
A killed worker's shard is run again by Dask on another worker; what the killed one
finished is recorded and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrlib.errors import CxrlibError
from cxrlib.seg.manifest import Manifest
from cxrlib.seg.pipeline import SegmentOptions, segment_files
from cxrlib.seg.scheduling import local_workers

__all__ = [
    "ClusterError",
    "PredictorSpec",
    "cached_predictor",
    "dask_client",
    "gather_tasks",
    "once_per_process",
    "run_shards",
    "segment_shard",
]


class ClusterError(CxrlibError, RuntimeError):
    """Dask could not be started or reached."""


@dataclass(frozen=True)
class PredictorSpec:
    """How a worker loads the model (hashable: the key of its per-process cache).

    Attributes
    ----------
    model_path : str
        Absolute path of the ``.keras`` model (its export is made before the job).
    runtime : str
        A concrete runtime (:data:`cxrlib.seg.runtime.RUNTIMES`), not ``"auto"``.
    precision : str or None
    threads : int or None
        Intra-op threads of the runtime in each worker.
    """

    model_path: str
    runtime: str
    precision: str | None = None
    threads: int | None = None
    max_batch: int = 16

    def load(self) -> Any:
        """Load the predictor (:func:`cxrlib.seg.runtime.load_predictor`)."""
        from cxrlib.seg.runtime import load_predictor

        return load_predictor(
            self.model_path,
            self.runtime,
            precision=self.precision,
            threads=self.threads,
            max_batch=self.max_batch,
        )


_LOADED: dict[Any, Any] = {}


def once_per_process(key: Any, load: Callable[[], Any]) -> Any:
    """``load()``'s result, made once per worker process for ``key`` (hashable).

    One model per worker at a time: a new key drops the one loaded before.
    """
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load()
    return _LOADED[key]


def cached_predictor(spec: PredictorSpec) -> Any:
    """The predictor of ``spec``, loaded once per process."""
    return once_per_process(spec, spec.load)


def segment_shard(
    spec: PredictorSpec,
    files: Sequence[str],
    names: dict[str, str],
    out_dir: str,
    options: SegmentOptions,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Segment one shard of images on a worker (see :func:`segment_files`)."""
    out = Path(out_dir)
    return segment_files(
        cached_predictor(spec), [Path(f) for f in files], names, out, options, Manifest(out)
    )


@contextmanager
def dask_client(scheduler: str, n_workers: int | None = None) -> Iterator[Any]:
    """A :class:`distributed.Client` for ``scheduler`` (``"local"``, ``"config"``, an address).

    Raises
    ------
    ClusterError
        ``distributed`` is not installed, or the scheduler cannot be reached (the message
        names the address).
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:  # pragma: no cover - a core dependency
        raise ClusterError(
            "running on Dask needs the 'distributed' package: pip install 'dask[distributed]'"
        ) from error
    if scheduler == "local":
        workers, _ = local_workers(n_workers)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    address = dask.config.get("scheduler-address", None) if scheduler == "config" else scheduler
    if not address:
        raise ClusterError(
            "--scheduler config: Dask's configuration names no scheduler (set "
            "DASK_SCHEDULER_ADDRESS or scheduler-address)"
        )
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error}") from error
    try:
        yield client
    finally:
        client.close()


def run_shards(
    client: Any,
    spec: PredictorSpec,
    shards: Sequence[Sequence[Path]],
    names: dict[str, str],
    out_dir: Path,
    options: SegmentOptions,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Send every shard to the cluster; gather the rows and skips as shards finish.

    Ctrl-C (KeyboardInterrupt) cancels what has not started; what finished is recorded.
    """
    tasks = [
        (
            spec,
            [str(path) for path in shard],
            {path.name: names[path.name] for path in shard},
            str(out_dir),
            options,
        )
        for shard in shards
    ]
    return gather_tasks(client, segment_shard, tasks, on_progress=on_progress)


def gather_tasks(
    client: Any,
    function: Callable[..., tuple[list[Any], list[tuple[str, str]]]],
    tasks: Sequence[tuple[Any, ...]],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Run ``function(*task)`` for every task on the cluster; gather rows and skips.

    Each call returns ``(rows, skipped)``; progress ticks by their total length as each
    task finishes. Ctrl-C (KeyboardInterrupt) or a failed task cancels what has not started.
    """
    from distributed import as_completed

    tick = on_progress or (lambda _: None)
    futures = [client.submit(function, *task, pure=False) for task in tasks]
    rows: list[Any] = []
    skipped: list[tuple[str, str]] = []
    try:
        for future in as_completed(futures):
            task_rows, task_skipped = future.result()
            rows.extend(task_rows)
            skipped.extend(task_skipped)
            tick(len(task_rows) + len(task_skipped))
    except BaseException:
        client.cancel(futures)
        raise
    return rows, skipped
