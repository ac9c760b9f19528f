"""Run a segmentation model with Keras, ONNX Runtime or OpenVINO behind one small interface.

:func:`load_predictor` returns a :class:`MaskPredictor`: ``predict(batch)`` maps float32
images ``(N, H, W, 1)`` in ``[0, 1]`` at the model's input size to lung probabilities of
the same shape, whatever the runtime.

* ``"keras"``: the ``.keras`` file itself (:func:`cxrlib.seg.inference.load_segmentation_model`).
* ``"onnx"`` and ``"openvino"``: the model converted once by :func:`export_model` and
  cached next to it (:mod:`cxrlib.seg.runtime_export`). Loading a cached export imports
  neither Keras nor TensorFlow, which saves the 1.5-3 s those imports cost per process.
* ``"auto"``: the first installed runtime of :data:`AUTO_ORDER` (measured by
  ``benchmarks/bench_segment_runtime.py``).

Precision
    ``precision=None`` runs the model in the precision it was saved (trained) in;
    ``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"`` or ``"auto"`` (the fastest
    for this CPU) can be asked for. OpenVINO is always given an explicit
    ``INFERENCE_PRECISION_HINT``: left to itself it would compute in bfloat16 on every CPU
    with AMX or AVX512_BF16, also for a float32 model. ``mixed_bfloat16`` becomes ``bf16``
    only on a CPU with native bfloat16 (else ``f32``, as
    :func:`cxrlib.precision.runnable_precision`), ``mixed_float16`` becomes ``f16`` only
    with AVX512_FP16 or AMX_FP16. ONNX Runtime's CPU provider always computes in float32.
    :attr:`MaskPredictor.precision` says what is used.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from cxrlib.errors import CxrlibError
from cxrlib.precision import PRECISION_CHOICES
from cxrlib.runs import sha256_file
from cxrlib.seg.inference import check_model_file
from cxrlib.seg.runtime_export import (
    BasePredictor,
    ExportError,
    OnnxPredictor,
    OpenVinoPredictor,
    file_saved_precision,
    find_export,
    load_artefact,
    runtime_precision,
    write_export,
)
from cxrlib.seg.runtime_names import AUTO_ORDER, RUNTIME_CHOICES, RUNTIMES

__all__ = [
    "RUNTIMES",
    "RUNTIME_CHOICES",
    "AUTO_ORDER",
    "ExportError",
    "RuntimeChoiceError",
    "RuntimeNotInstalledError",
    "MaskPredictor",
    "KerasPredictor",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "available_runtimes",
    "resolve_runtime",
    "export_model",
    "load_artefact",
    "load_predictor",
]


# packages each runtime needs to run a model, and (beyond Keras) to export one
_RUN_PACKAGES = {"keras": ("keras",), "onnx": ("onnxruntime",), "openvino": ("openvino",)}
_EXPORT_PACKAGES = {"keras": (), "onnx": ("keras", "tf2onnx", "onnx"), "openvino": ("keras",)}
_PIP = {"keras": "keras tensorflow", "onnx": "onnxruntime tf2onnx onnx", "openvino": "openvino"}


class RuntimeChoiceError(CxrlibError, ValueError):
    """An unknown runtime name."""


class RuntimeNotInstalledError(CxrlibError, ImportError):
    """The package a runtime needs is not installed (the message says which to install)."""


@runtime_checkable
class MaskPredictor(Protocol):
    """A loaded segmentation model.

    Attributes
    ----------
    runtime : str
        One of :data:`RUNTIMES`.
    input_size : (int, int)
        The model's input ``(H, W)``.
    precision : str
        The precision it computes in (``"float32"``, ``"mixed_bfloat16"``, ...).
    setup_seconds : float
        Time :func:`load_predictor` took (an export it had to make included).
    export_seconds : float
        The part of ``setup_seconds`` spent exporting (0 when a cached export was used).
    """

    runtime: str
    input_size: tuple[int, int]
    precision: str
    setup_seconds: float
    export_seconds: float

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(N, H, W, 1)`` float32 images in [0, 1] -> float32 ``(N, H, W, 1)`` probabilities."""
        ...


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def available_runtimes() -> tuple[str, ...]:
    """The runtimes whose packages (to run and to export) are importable, in :data:`RUNTIMES` order.

    Cheap: looks the packages up without importing them.
    """
    return tuple(
        r for r in RUNTIMES if all(_installed(p) for p in (*_RUN_PACKAGES[r], *_EXPORT_PACKAGES[r]))
    )


def _about(model_path: Path | None) -> str:
    return f"{model_path}: " if model_path is not None else ""


def resolve_runtime(runtime: str, model_path: str | os.PathLike[str] | None = None) -> str:
    """Return a runtime of :data:`RUNTIMES`; ``"auto"``: the first installed of :data:`AUTO_ORDER`.

    Raises
    ------
    RuntimeChoiceError
        ``runtime`` is not one of :data:`RUNTIME_CHOICES`.
    """
    where = _about(Path(model_path) if model_path is not None else None)
    if runtime == "auto":
        available = available_runtimes()
        for name in AUTO_ORDER:
            if name in available:
                return name
        raise RuntimeNotInstalledError(
            f"{where}no inference runtime is installed; pip install openvino (or keras tensorflow)"
        )
    if runtime not in RUNTIMES:
        raise RuntimeChoiceError(
            f"{where}unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_CHOICES)}"
        )
    return runtime


def _require(runtime: str, model_path: Path, *, export: bool) -> None:
    packages = (*_RUN_PACKAGES[runtime], *(_EXPORT_PACKAGES[runtime] if export else ()))
    missing = [p for p in packages if not _installed(p)]
    if missing:
        what = "export the model for" if export else "run the model with"
        raise RuntimeNotInstalledError(
            f"{model_path}: to {what} the {runtime} runtime, {', '.join(missing)} must be "
            f"installed: pip install {_PIP[runtime]}"
        )


def _check_precision(precision: str | None, model_path: Path) -> None:
    if precision is not None and precision not in PRECISION_CHOICES:
        raise ValueError(
            f"{model_path}: precision must be None or one of {PRECISION_CHOICES}, got {precision!r}"
        )


# --------------------------------------------------------------------------- Keras


class KerasPredictor(BasePredictor):
    """The ``.keras`` model run by Keras (:func:`cxrlib.seg.inference.predict_masks`)."""

    runtime = "keras"

    def __init__(
        self,
        model_path: Path,
        *,
        precision: str | None = None,
        threads: int | None = None,
        max_batch: int = 16,
    ) -> None:
        if threads is not None:
            _keras_threads(threads)
        from cxrlib.seg.inference import (
            load_segmentation_model,
            model_input_size,
            saved_precision,
            set_model_precision,
        )

        self.model = load_segmentation_model(model_path)
        if precision is not None:  # once here: switching per call would retrace the graph
            set_model_precision(self.model, precision)
        super().__init__(model_input_size(self.model), saved_precision(self.model), max_batch)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        from cxrlib.seg.inference import predict_masks

        return predict_masks(self.model, chunk, batch_size=self.max_batch)


def _keras_threads(threads: int) -> None:
    """Limit the Keras backend's intra-op threads (TensorFlow: only before it starts)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:
            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                warnings.warn(
                    f"TensorFlow is already running; its intra-op threads stay "
                    f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
                    f"not {threads}",
                    stacklevel=3,
                )
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- entry points


def export_model(model_path: str | os.PathLike[str], runtime: str) -> Path:
    """Convert a ``.keras`` model for ``runtime`` once; return the file the runtime loads.

    A current export (same SHA-256 of the ``.keras`` file) is reused; otherwise one is made
    next to the model, or under ``$CXRLIB_CACHE_DIR/exports/`` when the model's folder is
    not writable (:mod:`cxrlib.seg.runtime_export`). For ``"keras"`` the model file itself
    is returned.

    Parameters
    ----------
    model_path : path
        A ``.keras`` segmentation model.
    runtime : {"auto", "keras", "onnx", "openvino"}

    Returns
    -------
    pathlib.Path
        ``model.xml`` (OpenVINO), ``model.onnx`` (ONNX) or the ``.keras`` file.

    Raises
    ------
    ModelFileError
        Bad model file, or its run folder's ``key.json`` says the training failed.
    RuntimeChoiceError, RuntimeNotInstalledError, ExportError
        Unknown runtime; its packages missing (the message says what to install); the
        conversion failed.
    """
    path = check_model_file(model_path)
    runtime = resolve_runtime(runtime, path)
    if runtime == "keras":
        return path
    _require(runtime, path, export=True)
    sha256 = sha256_file(path)
    info = find_export(path, runtime, sha256) or write_export(path, runtime, sha256)
    return Path(info["artefact"])


def load_predictor(
    model_path: str | os.PathLike[str],
    runtime: str = "auto",
    *,
    precision: str | None = None,
    threads: int | None = None,
    max_batch: int = 16,
) -> MaskPredictor:
    """Load a segmentation model for prediction with a runtime.

    Parameters
    ----------
    model_path : path
        A ``.keras`` segmentation model (:func:`cxrlib.seg.train.train_segmentation`).
    runtime : {"auto", "keras", "onnx", "openvino"}, default "auto"
        ``"auto"``: the first installed of :data:`AUTO_ORDER`. ONNX and OpenVINO use the
        cached export (:func:`export_model`), making it first when there is none.
    precision : {None, "auto", "float32", "mixed_bfloat16", "mixed_float16"}
        None: as the model was saved; see the module docstring for what each runtime does.
    threads : int, optional
        Intra-op threads of the runtime (OpenVINO ``INFERENCE_NUM_THREADS``, ONNX Runtime
        ``intra_op_num_threads``, TensorFlow intra-op parallelism); default: all cores.
    max_batch : int, default 16
        Images per inference call; larger batches given to ``predict`` are split.

    Returns
    -------
    MaskPredictor

    Raises
    ------
    ModelFileError
        Bad model file, or its run folder's ``key.json`` says the training failed.
    RuntimeChoiceError, RuntimeNotInstalledError, ExportError
        Unknown runtime; its packages missing; the export failed.
    ValueError
        Bad ``precision``, ``threads`` or ``max_batch``.
    """
    start = time.perf_counter()
    path = check_model_file(model_path)
    runtime = resolve_runtime(runtime, path)
    _check_precision(precision, path)
    for name, value in (("threads", threads), ("max_batch", max_batch)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    _require(runtime, path, export=False)
    if runtime == "keras":
        predictor: MaskPredictor = KerasPredictor(
            path, precision=precision, threads=threads, max_batch=max_batch
        )
        predictor.setup_seconds = time.perf_counter() - start
        return predictor
    sha256 = sha256_file(path)
    info = find_export(path, runtime, sha256)
    export_seconds = 0.0
    for attempt in ("cached", "fresh"):
        if info is None:
            _require(runtime, path, export=True)
            export_start = time.perf_counter()
            info = write_export(path, runtime, sha256)
            export_seconds = time.perf_counter() - export_start
        saved = info.get("saved_precision") or file_saved_precision(path)
        size = (int(info["input_size"][0]), int(info["input_size"][1]))
        try:
            predictor = load_artefact(
                runtime,
                info["artefact"],
                size,
                precision=runtime_precision(precision, saved),
                threads=threads,
                max_batch=max_batch,
            )
            break
        except Exception as error:  # a damaged export: make it again, once
            if attempt == "fresh" or export_seconds > 0:
                raise ExportError(
                    f"{path}: {runtime} cannot load its export {info['artefact']} "
                    f"({type(error).__name__}: {str(error).strip()[:300]})"
                ) from error
            info = None
    predictor.export_seconds = export_seconds
    predictor.setup_seconds = time.perf_counter() - start
    return predictor
