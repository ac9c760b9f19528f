"""The one-line description of the Keras set-up that the Keras benchmarks print."""

from __future__ import annotations

import os


def keras_environment() -> str:
    """``keras 3.x, tensorflow, 2 cores, bf16 CPU: True, load average 0.8``.

    Imports Keras (and its backend); call it after the benchmark's own imports.
    """
    import keras

    from cxrlib.precision import cpu_supports_bf16

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"keras {keras.__version__}, {keras.backend.backend()}, {cores} cores, "
        f"bf16 CPU: {cpu_supports_bf16()}, load average {load:.1f}"
    )
