"""Numeric precision of training and inference: detect what this machine does fast.

``"auto"`` (the default of every recipe, profile and command) resolves to

* ``"mixed_float16"`` when the Keras backend sees a GPU,
* ``"mixed_bfloat16"`` on a CPU with native bfloat16 arithmetic (AVX512_BF16 or AMX-BF16),
* ``"float32"`` otherwise: on a CPU without native bfloat16 (AVX2 only, for example) the
  emulated bfloat16 trains the U-Net about 11x slower than float32.

A CPU whose bfloat16 instructions oneDNN (TensorFlow's and OpenVINO's CPU kernels) has been
told not to use, with ``ONEDNN_MAX_CPU_ISA`` set below ``AVX512_CORE_BF16``, counts as one
without them: that is what such a machine computes with, and it is how the benchmarks stand
in for an AVX2-only CPU on one that has AVX-512.

The resolved policy is what a run stores in its ``config.json``; a model trained in one
precision loads and predicts in any (:func:`cxrlib.seg.inference.set_model_precision`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "PRECISIONS",
    "PRECISION_CHOICES",
    "ISA_CAPS_WITHOUT_BF16",
    "cpu_supports_bf16",
    "has_gpu",
    "onednn_isa_cap",
    "resolve_precision",
    "precision_scope",
    "runnable_precision",
]

#: Keras dtype policies a model can be trained or run in.
PRECISIONS: tuple[str, ...] = ("float32", "mixed_bfloat16", "mixed_float16")
#: What users may ask for: a policy, or ``"auto"``.
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)


#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN from bfloat16 instructions (oneDNN's names,
#: upper case). ``DEFAULT``, ``ALL`` and the ``AVX512_CORE_BF16``-and-later ones allow them.
ISA_CAPS_WITHOUT_BF16: frozenset[str] = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_isa_cap() -> str | None:
    """The ``ONEDNN_MAX_CPU_ISA`` cap set for this process, upper case; None when unset."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return value or None


def cpu_supports_bf16() -> bool | None:
    """Whether this CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX-BF16).

    False also when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below bfloat16
    (:data:`ISA_CAPS_WITHOUT_BF16`): the kernels then run as on a CPU without it.

    Returns
    -------
    bool or None
        None when it cannot be told (no ``/proc/cpuinfo``, i.e. not Linux).
    """
    if onednn_isa_cap() in ISA_CAPS_WITHOUT_BF16:
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def has_gpu() -> bool:
    """Whether the active Keras backend (TensorFlow, PyTorch or JAX) sees a GPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
        if backend == "jax":
            import jax

            return jax.default_backend() == "gpu"
    except ImportError:  # pragma: no cover - backend package missing
        return False
    return False


def resolve_precision(precision: str) -> str:
    """Return a Keras dtype policy; ``"auto"`` picks the fastest for this machine.

    Parameters
    ----------
    precision : {"auto", "float32", "mixed_bfloat16", "mixed_float16"}
        ``"auto"``: ``"mixed_float16"`` with a GPU, ``"mixed_bfloat16"`` on a CPU
        with native bfloat16 (AVX512_BF16 or AMX), else ``"float32"``. A policy is
        returned unchanged.

    Returns
    -------
    str
        One of :data:`PRECISIONS`.

    Raises
    ------
    ValueError
        For anything else.
    """
    if precision == "auto":
        if has_gpu():
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_supports_bf16() else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    return precision


@contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Set the global Keras dtype policy inside a ``with`` block, restore it after.

    Parameters
    ----------
    precision : {"float32", "mixed_bfloat16", "mixed_float16", "auto"}
    """
    import keras

    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def runnable_precision(saved: str) -> str:
    """The precision to run a saved model in on this machine.

    A model keeps the policy it was trained with, except that a ``mixed_bfloat16``
    model runs in float32 on a CPU without native bfloat16 and without a GPU, where
    emulated bfloat16 is many times slower (the weights are float32 either way).

    Parameters
    ----------
    saved : str
        The dtype policy the model was saved with.

    Returns
    -------
    str
    """
    if saved == "mixed_bfloat16" and cpu_supports_bf16() is False and not has_gpu():
        return "float32"
    return saved
