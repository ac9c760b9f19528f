"""The names of the inference runtimes (cheap to import: the command line's choices).

:mod:`cxrlib.seg.runtime` loads and runs them.
"""

from __future__ import annotations

__all__ = ["AUTO_ORDER", "RUNTIMES", "RUNTIME_CHOICES"]

RUNTIMES: tuple[str, ...] = ("keras", "onnx", "openvino")
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *RUNTIMES)
#: ``runtime="auto"`` takes the first installed of these. Measured with
#: benchmarks/bench_segment_runtime.py (ResUNet at 256 px, 640 real PNGs end to end, 2 shared
#: cores of a Xeon with AMX, two runs): OpenVINO runs a bfloat16 model 2.3-3.8x as fast as
#: Keras float32 (Keras bfloat16: 1.5-1.7x) and a float32 model at 0.85-1.4x, and starts in
#: 0.7 s instead of 4.4 s (no TensorFlow import, no graph tracing). ONNX Runtime starts as
#: fast but computes in float32 only, at 0.9-1.1x Keras float32, so Keras comes before it.
AUTO_ORDER: tuple[str, ...] = ("openvino", "keras", "onnx")
