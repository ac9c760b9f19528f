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
        f"bf16 CPU: {cpu_supports_bf16()}, {cpu_description()}, load average {load:.1f}"
    )


def cpu_description() -> str:
    """``Intel(R) Xeon(R) Processor [avx2 avx512f avx512_bf16 amx_bf16]``: model and flags.

    The flags listed are the ones that decide which precision and kernels are fast.
    """
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = " ".join(flag for flag in wanted if flag in flags) or "no AVX2"
    return f"{name} [{shown}]"
