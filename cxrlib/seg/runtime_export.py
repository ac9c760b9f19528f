"""Exported segmentation models: convert once for ONNX Runtime or OpenVINO, find, load.

The machinery behind :mod:`cxrlib.seg.runtime` (use that module's :func:`load_predictor`
and :func:`export_model`). The predictors here (:class:`OnnxPredictor`,
:class:`OpenVinoPredictor`) run an export without importing Keras or TensorFlow.

An export is a folder holding the converted model and ``export.json``, its sidecar::

    run/model.keras
    run/model.openvino-export/   model.xml, model.bin, export.json
    run/model.onnx-export/       model.onnx, export.json

``export.json`` records the SHA-256 of the ``.keras`` file the export came from, the
model's input size and the precision it was saved in; an export whose hash differs from
the model file's (a retrained model) is stale and is made again. The folder is built
under a hidden temporary name and renamed into place once complete, so an export killed
half-way is never used (its leftovers are removed once they are an hour old). Where the
model's folder is not writable the export goes to
``$CXRLIB_CACHE_DIR/exports/<sha256>/<runtime>/`` (default ``~/.cache/cxrlib/exports``).

Finding and loading an export (:func:`find_export`, :func:`load_artefact`) import
neither Keras nor TensorFlow; making one (:func:`write_export`) does. The graph is
always exported in float32; the runtime chooses the compute precision when it loads it
(:func:`runtime_precision`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib.atomic import default_file_mode
from cxrlib.errors import CxrlibError
from cxrlib.precision import PRECISION_CHOICES, cpu_supports_bf16
from cxrlib.preprocess.cache import CACHE_ENV_VAR
from cxrlib.runs import read_json, sha256_file, write_json
from cxrlib.seg.inference import _as_batch

__all__ = [
    "EXPORT_FORMAT",
    "ARTEFACTS",
    "ExportError",
    "export_cache_dir",
    "export_locations",
    "file_saved_precision",
    "find_export",
    "read_export",
    "write_export",
    "runtime_precision",
    "BasePredictor",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "load_artefact",
]

#: Version of the export folder layout; an export of another version is made again.
EXPORT_FORMAT = 1
#: The files of each runtime's export; the first is the one the runtime loads.
ARTEFACTS: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
}
SIDECAR = "export.json"
#: Largest probability difference to Keras (float32, one noise image) an export may show.
VERIFY_TOLERANCE = 1e-3
_STALE_TEMPORARY_S = 3600.0


class ExportError(CxrlibError, RuntimeError):
    """A model could not be converted for a runtime (the message names the model file)."""


# --------------------------------------------------------------------------- finding


def export_cache_dir() -> Path:
    """``$CXRLIB_CACHE_DIR/exports``, else ``~/.cache/cxrlib/exports``."""
    override = os.environ.get(CACHE_ENV_VAR)
    root = Path(override).expanduser() if override else Path.home() / ".cache" / "cxrlib"
    return root / "exports"


def export_locations(model_path: Path, runtime: str, sha256: str) -> list[Path]:
    """Where an export of ``model_path`` may be, in the order they are tried.

    Next to the model (``model.<runtime>-export``), then in :func:`export_cache_dir`.
    """
    beside = model_path.parent / f"{model_path.stem}.{runtime}-export"
    return [beside, export_cache_dir() / sha256 / runtime]


def read_export(folder: Path, runtime: str, sha256: str) -> dict[str, Any] | None:
    """The sidecar of a complete, current export in ``folder``, else None.

    Current: same :data:`EXPORT_FORMAT`, runtime and source SHA-256, every artefact present
    and not empty. The returned dict has the artefact's absolute path under ``"artefact"``.
    """
    info = read_json(folder / SIDECAR)
    if not isinstance(info, dict):
        return None
    if (
        info.get("format") != EXPORT_FORMAT
        or info.get("runtime") != runtime
        or info.get("source_sha256") != sha256
    ):
        return None
    files = [folder / name for name in ARTEFACTS[runtime]]
    if not all(f.is_file() and f.stat().st_size > 0 for f in files):
        return None
    return {**info, "artefact": str(files[0])}


def find_export(model_path: Path, runtime: str, sha256: str | None = None) -> dict[str, Any] | None:
    """The sidecar of a current export of ``model_path`` (see :func:`read_export`), or None."""
    sha256 = sha256 or sha256_file(model_path)
    for folder in export_locations(model_path, runtime, sha256):
        info = read_export(folder, runtime, sha256)
        if info is not None:
            return info
    return None


def file_saved_precision(model_path: Path) -> str:
    """The dtype policy a ``.keras`` file was saved with, from its ``config.json`` (no Keras).

    The policy of the first layer that is not the input; ``"float32"`` when it cannot be
    read (an ``.h5`` file).
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            config = json.loads(archive.read("config.json"))
        for layer in config["config"]["layers"]:
            if layer.get("class_name") == "InputLayer":
                continue
            dtype = layer["config"].get("dtype")
            if isinstance(dtype, dict):
                return str(dtype["config"]["name"])
            if isinstance(dtype, str):
                return dtype
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile):
        pass
    return "float32"


# --------------------------------------------------------------------------- writing


def _versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _convert(model: Any, runtime: str, folder: Path, size: tuple[int, int]) -> None:
    """Write the float32 graph of ``model`` into ``folder`` (Keras' own exporters)."""
    import keras

    spec = [keras.InputSpec(shape=(None, *size, 1), dtype="float32")]
    target = folder / ARTEFACTS[runtime][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf2onnx's numpy-2 shims warn on every export
        model.export(str(target), format=runtime, verbose=False, input_signature=spec)


def _verify(model: Any, runtime: str, artefact: Path, size: tuple[int, int]) -> float:
    """Largest probability difference between Keras and the export on one noise image."""
    x = np.random.default_rng(0).random((1, *size, 1), dtype=np.float32)
    expected = np.asarray(model.predict_on_batch(x), dtype=np.float32)
    predictor = load_artefact(runtime, artefact, size, precision="float32")
    return float(np.max(np.abs(predictor.predict(x) - expected)))


def _make_temporary(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    mode = default_file_mode()
    os.chmod(tmp, mode | ((mode >> 2) & 0o111))  # what mkdir gives, not mkdtemp's 0o700
    return tmp


def _remove_stale_temporaries(final: Path) -> None:
    """Delete what exports killed more than an hour ago left next to ``final``."""
    now = time.time()
    for entry in final.parent.glob(f".{final.name}.*"):
        try:
            old = now - entry.stat().st_mtime > _STALE_TEMPORARY_S
        except OSError:
            continue
        if old and entry.name.endswith((".tmp", ".old")):
            shutil.rmtree(entry, ignore_errors=True)


def _install(tmp: Path, final: Path, runtime: str, sha256: str) -> None:
    """Rename the finished ``tmp`` folder to ``final``, replacing an unusable one."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        try:
            os.replace(final, trash)
        except FileNotFoundError:
            trash = None
    try:
        os.replace(tmp, final)
    except OSError:
        # another process put a folder there meanwhile: keep it if it is a current export
        shutil.rmtree(tmp, ignore_errors=True)
        if read_export(final, runtime, sha256) is None:
            raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def write_export(model_path: Path, runtime: str, sha256: str | None = None) -> dict[str, Any]:
    """Convert ``model_path`` for ``runtime`` and install the export; return its sidecar.

    Loads the model with Keras (:func:`cxrlib.seg.inference.load_segmentation_model`),
    exports its float32 graph, checks it against Keras on one noise image (largest
    difference at most :data:`VERIFY_TOLERANCE`) and renames the finished folder into the
    first writable location of :func:`export_locations`.

    Raises
    ------
    ModelFileError
        Bad model file (or a failed training run).
    ExportError
        The conversion failed or gives other probabilities than Keras.
    """
    from cxrlib.seg.inference import (
        load_segmentation_model,
        model_input_size,
        saved_precision,
        set_model_precision,
    )

    start = time.perf_counter()
    sha256 = sha256 or sha256_file(model_path)
    model = load_segmentation_model(model_path)
    saved = saved_precision(model)
    if saved != "float32":
        set_model_precision(model, "float32")
    size = model_input_size(model)
    tmp = final = None
    for candidate in export_locations(model_path, runtime, sha256):
        try:
            tmp, final = _make_temporary(candidate), candidate
            break
        except OSError:
            continue
    if tmp is None or final is None:
        raise ExportError(
            f"{model_path}: no writable folder for its {runtime} export (tried "
            f"{', '.join(str(p) for p in export_locations(model_path, runtime, sha256))}); "
            f"set {CACHE_ENV_VAR} to a writable folder"
        )
    try:
        try:
            _convert(model, runtime, tmp, size)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(
                f"{model_path}: the {runtime} export failed ({type(error).__name__}: {reason})"
            ) from error
        difference = _verify(model, runtime, tmp / ARTEFACTS[runtime][0], size)
        if not difference <= VERIFY_TOLERANCE:
            raise ExportError(
                f"{model_path}: the {runtime} export predicts other probabilities than Keras "
                f"(largest difference {difference:.3g} > {VERIFY_TOLERANCE}); use runtime='keras'"
            )
        info = {
            "format": EXPORT_FORMAT,
            "runtime": runtime,
            "source": str(model_path.resolve()),
            "source_sha256": sha256,
            "input_size": list(size),
            "saved_precision": saved,
            "artefacts": list(ARTEFACTS[runtime]),
            "verify_max_abs_diff": difference,
            "export_seconds": round(time.perf_counter() - start, 3),
            "versions": _versions(
                "keras", "tensorflow", "tensorflow-cpu", "openvino", "tf2onnx", "onnx"
            ),
        }
        write_json(tmp / SIDECAR, info)
        _install(tmp, final, runtime, sha256)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale_temporaries(final)
    return {**info, "artefact": str(final / ARTEFACTS[runtime][0])}


# --------------------------------------------------------------------------- loading


def _cpu_fp16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((ln for ln in handle if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return bool({"avx512_fp16", "amx_fp16"} & set(flags))


def runtime_precision(precision: str | None, saved: str) -> str:
    """The Keras policy name a CPU runtime computes in for ``precision`` (None: ``saved``).

    ``"auto"``: bfloat16 on a CPU with native bfloat16, else float32; ``mixed_bfloat16``
    needs native bfloat16 and ``mixed_float16`` AVX512_FP16 or AMX_FP16, else float32.
    """
    wanted = saved if precision is None else precision
    if wanted == "auto":
        return "mixed_bfloat16" if cpu_supports_bf16() else "float32"
    if wanted == "mixed_bfloat16" and not cpu_supports_bf16():
        return "float32"
    if wanted == "mixed_float16" and not _cpu_fp16():
        return "float32"
    return wanted if wanted in PRECISION_CHOICES else "float32"


class BasePredictor:
    """What every predictor shares: the checks of :meth:`predict` and splitting batches."""

    runtime = ""

    def __init__(self, input_size: tuple[int, int], precision: str, max_batch: int) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.precision = precision
        self.max_batch = int(max_batch)
        self.setup_seconds = 0.0
        self.export_seconds = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({h}x{w}, {self.precision}, setup {self.setup_seconds:.2f} s)"

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Predict lung probabilities.

        Parameters
        ----------
        batch : ndarray, float32, shape (N, H, W, 1) or (N, H, W)
            Images in ``[0, 1]`` at :attr:`input_size`; any ``N`` (also 0).

        Returns
        -------
        ndarray, float32, shape (N, H, W, 1)
            Probabilities in ``[0, 1]`` (a new array).
        """
        x = _as_batch(batch, self.input_size)
        out = np.empty(x.shape, np.float32)
        with self._lock:  # one inference request per predictor
            for start in range(0, len(x), self.max_batch):
                chunk = x[start : start + self.max_batch]
                out[start : start + len(chunk)] = self._run(chunk).reshape(chunk.shape)
        return out


class OnnxPredictor(BasePredictor):
    """An ONNX export run by ONNX Runtime's CPU provider (float32)."""

    runtime = "onnx"

    def __init__(
        self,
        artefact: Path,
        input_size: tuple[int, int],
        *,
        threads: int | None = None,
        max_batch: int = 16,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(artefact), options, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        super().__init__(input_size, "float32", max_batch)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self._input: chunk})[0], dtype=np.float32)


class OpenVinoPredictor(BasePredictor):
    """An OpenVINO IR export run on the CPU, compiled for each batch length it is given.

    Static shapes run about 30 % faster than a dynamic batch; compiling one takes about
    0.1 s, so the length of the usual batch is compiled when loading and a shorter last
    batch on first use.
    """

    runtime = "openvino"
    _HINTS = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}

    def __init__(
        self,
        artefact: Path,
        input_size: tuple[int, int],
        *,
        precision: str = "float32",
        threads: int | None = None,
        max_batch: int = 16,
    ) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._model = self._core.read_model(str(artefact))
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self._HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled: dict[int, Any] = {}
        super().__init__(input_size, precision, max_batch)
        self._compile(self.max_batch)

    def _compile(self, n: int) -> Any:
        if n not in self._compiled:
            model = self._model.clone()
            model.reshape([n, *self.input_size, 1])
            self._compiled[n] = self._core.compile_model(model, "CPU", self._config)
        return self._compiled[n]

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        result = self._compile(len(chunk))(chunk)[0]
        return np.array(result, dtype=np.float32, copy=True)  # the request reuses its buffer


def load_artefact(
    runtime: str,
    artefact: str | os.PathLike[str],
    input_size: tuple[int, int],
    *,
    precision: str = "float32",
    threads: int | None = None,
    max_batch: int = 16,
) -> BasePredictor:
    """Load an exported model file directly (no checks of its source; see :func:`load_predictor`).

    ``precision`` is a Keras policy name that this CPU runs (:func:`runtime_precision`).
    """
    if runtime == "onnx":
        return OnnxPredictor(Path(artefact), input_size, threads=threads, max_batch=max_batch)
    if runtime == "openvino":
        return OpenVinoPredictor(
            Path(artefact), input_size, precision=precision, threads=threads, max_batch=max_batch
        )
    raise ValueError(f"{artefact}: no exported model format for runtime {runtime!r}")
