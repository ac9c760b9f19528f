"""Tests for cxrlib.seg.runtime and cxrlib.seg.runtime_export (Keras, ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cxrlib.seg import runtime as rt
from cxrlib.seg import runtime_export as rx
from cxrlib.seg.inference import ModelFileError
from cxrlib.seg.runtime import (
    AUTO_ORDER,
    RUNTIME_CHOICES,
    RUNTIMES,
    ExportError,
    MaskPredictor,
    RuntimeChoiceError,
    RuntimeNotInstalledError,
    available_runtimes,
    export_model,
    load_predictor,
    resolve_runtime,
)

SIZE = 32
EXPORTED = [r for r in RUNTIMES if r != "keras"]


def _save_model(path: Path, seed: int = 0) -> Path:
    """A small ResUNet (32 px, filters 4-8-16) with random weights and a spread output."""
    import keras

    from cxrlib.seg.models import build_resunet

    keras.utils.set_random_seed(seed)
    model = build_resunet((SIZE, SIZE, 1), (4, 8, 16))
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 8.0, bias])  # probabilities far from 0.5 as well as near it
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def _require(runtime: str) -> None:
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("tf2onnx")
    elif runtime == "openvino":
        pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A model folder with the model and its exports for every installed runtime."""
    path = _save_model(tmp_path_factory.mktemp("exported") / "model.keras")
    for runtime in EXPORTED:
        if runtime in available_runtimes():
            export_model(path, runtime)
    return path


@pytest.fixture
def model_copy(exported, tmp_path) -> Path:
    """A private copy of :func:`exported` (model and exports) that a test may change."""
    shutil.copytree(exported.parent, tmp_path / "run")
    return tmp_path / "run" / exported.name


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Seven images (more than ``max_batch=4`` and not a multiple of it): noise and shapes."""
    rng = np.random.default_rng(3)
    x = rng.random((7, SIZE, SIZE, 1), dtype=np.float32)
    x[3:, 8:24, 4:14] *= 0.2
    return x


@pytest.fixture(scope="module")
def keras_probs(exported, images) -> np.ndarray:
    return load_predictor(exported, "keras", precision="float32").predict(images)


def _forbid_export(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(rt, "write_export", fail)


# --------------------------------------------------------------------------- names


def test_runtime_names():
    assert RUNTIME_CHOICES == ("auto", "keras", "onnx", "openvino")
    assert set(AUTO_ORDER) == set(RUNTIMES)
    assert "keras" in available_runtimes()
    assert set(available_runtimes()) <= set(RUNTIMES)


def test_auto_is_first_available(monkeypatch):
    assert resolve_runtime("auto") == next(r for r in AUTO_ORDER if r in available_runtimes())
    monkeypatch.setattr(rt, "_installed", lambda package: package not in ("openvino",))
    assert resolve_runtime("auto") == next(r for r in AUTO_ORDER if r != "openvino")
    monkeypatch.setattr(rt, "_installed", lambda package: False)
    with pytest.raises(RuntimeNotInstalledError, match="pip install"):
        resolve_runtime("auto")


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_equals_keras(runtime, exported, images, keras_probs):
    _require(runtime)
    predictor = load_predictor(exported, runtime, precision="float32", max_batch=4)
    assert isinstance(predictor, MaskPredictor)
    assert predictor.runtime == runtime
    assert predictor.input_size == (SIZE, SIZE)
    assert predictor.precision == "float32"
    assert predictor.setup_seconds > 0
    probs = predictor.predict(images)
    assert probs.shape == images.shape and probs.dtype == np.float32
    assert np.abs(probs - keras_probs).max() < 1e-4
    agreement = np.mean((probs > 0.5) == (keras_probs > 0.5))
    assert agreement >= 0.999
    # masks both sides of the threshold: the comparison is not trivial
    assert 0.05 < np.mean(keras_probs > 0.5) < 0.95
    # any N: one image, none, the 3-D form; the same answer each time
    np.testing.assert_allclose(predictor.predict(images[:1]), probs[:1], atol=1e-5)
    assert predictor.predict(images[:0]).shape == (0, SIZE, SIZE, 1)
    np.testing.assert_array_equal(predictor.predict(images[..., 0]), probs)


def test_predict_rejects_wrong_size(exported):
    predictor = load_predictor(exported, "keras")
    with pytest.raises(ValueError, match="expects 32x32"):
        predictor.predict(np.zeros((1, 16, 16, 1), np.float32))


@pytest.mark.parametrize("runtime", EXPORTED)
def test_threads_are_passed_to_the_runtime(runtime, exported):
    _require(runtime)
    predictor = load_predictor(exported, runtime, threads=1)
    if runtime == "openvino":
        compiled = predictor._compile(predictor.max_batch)
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    else:
        assert predictor.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError, match="threads"):
        load_predictor(exported, runtime, threads=0)


def test_openvino_precision_is_explicit(exported):
    _require("openvino")
    from cxrlib.precision import cpu_supports_bf16

    as_saved = load_predictor(exported, "openvino")
    assert as_saved.precision == "float32"  # the model was saved in float32
    import openvino as ov

    def hint(predictor):
        compiled = predictor._compile(predictor.max_batch)
        return compiled.get_property("INFERENCE_PRECISION_HINT")

    assert hint(as_saved) == ov.Type.f32  # not OpenVINO's bf16 default on AMX CPUs
    bf16 = load_predictor(exported, "openvino", precision="mixed_bfloat16")
    native = bool(cpu_supports_bf16())
    assert bf16.precision == ("mixed_bfloat16" if native else "float32")
    assert hint(bf16) == (ov.Type.bf16 if native else ov.Type.f32)
    with pytest.raises(ValueError, match="precision"):
        load_predictor(exported, "openvino", precision="int8")


# --------------------------------------------------------------------------- caching


@pytest.mark.parametrize("runtime", EXPORTED)
def test_export_is_cached_beside_the_model(runtime, model_copy, monkeypatch):
    _require(runtime)
    folder = model_copy.parent / f"model.{runtime}-export"
    info = json.loads((folder / "export.json").read_text())
    assert info["source_sha256"] == rx.sha256_file(model_copy)
    assert info["input_size"] == [SIZE, SIZE]
    _forbid_export(monkeypatch)
    artefact = export_model(model_copy, runtime)
    assert artefact == folder / rx.ARTEFACTS[runtime][0]
    predictor = load_predictor(model_copy, runtime)
    assert predictor.export_seconds == 0.0


def test_changed_model_is_exported_again(model_copy, images):
    _require("openvino")
    old = load_predictor(model_copy, "openvino", precision="float32").predict(images)
    _save_model(model_copy, seed=1)  # "retrained" in place
    predictor = load_predictor(model_copy, "openvino", precision="float32")
    assert predictor.export_seconds > 0
    info = json.loads((model_copy.parent / "model.openvino-export" / "export.json").read_text())
    assert info["source_sha256"] == rx.sha256_file(model_copy)
    expected = load_predictor(model_copy, "keras").predict(images)
    new = predictor.predict(images)
    assert np.abs(new - expected).max() < 1e-4
    assert np.abs(new - old).max() > 1e-2


@pytest.mark.parametrize(
    "damage",
    ["missing_bin", "empty_xml", "truncated_sidecar", "no_sidecar", "other_format"],
)
def test_partial_or_stale_export_is_not_used(damage, model_copy):
    _require("openvino")
    folder = model_copy.parent / "model.openvino-export"
    if damage == "missing_bin":
        (folder / "model.bin").unlink()
    elif damage == "empty_xml":
        (folder / "model.xml").write_bytes(b"")
    elif damage == "truncated_sidecar":
        text = (folder / "export.json").read_text()
        (folder / "export.json").write_text(text[: len(text) // 2])
    elif damage == "no_sidecar":
        (folder / "export.json").unlink()
    else:
        info = json.loads((folder / "export.json").read_text())
        info["format"] = rx.EXPORT_FORMAT + 1
        (folder / "export.json").write_text(json.dumps(info))
    assert rx.find_export(model_copy, "openvino") is None
    predictor = load_predictor(model_copy, "openvino")
    assert predictor.export_seconds > 0
    assert rx.find_export(model_copy, "openvino") is not None


@pytest.mark.parametrize("runtime", EXPORTED)
def test_damaged_export_is_made_again(runtime, model_copy, images, keras_probs):
    _require(runtime)
    folder = model_copy.parent / f"model.{runtime}-export"
    (folder / rx.ARTEFACTS[runtime][0]).write_bytes(b"not a model")  # sidecar still current
    predictor = load_predictor(model_copy, runtime, precision="float32")
    assert predictor.export_seconds > 0
    assert np.abs(predictor.predict(images) - keras_probs).max() < 1e-4


def test_killed_export_leaves_nothing_usable(model_copy, monkeypatch):
    _require("openvino")
    shutil.rmtree(model_copy.parent / "model.openvino-export")

    def killed(model, runtime, folder, size):
        (folder / "model.xml").write_text("<half")
        raise KeyboardInterrupt

    monkeypatch.setattr(rx, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        export_model(model_copy, "openvino")
    leftovers = [p.name for p in model_copy.parent.iterdir() if "openvino" in p.name]
    assert leftovers == []
    # a temporary folder a killed process could not remove is never taken for an export
    stale = model_copy.parent / ".model.openvino-export.abcd1234.tmp"
    stale.mkdir()
    (stale / "model.xml").write_text("<half")
    assert rx.find_export(model_copy, "openvino") is None


def test_unwritable_model_folder_uses_the_cache(model_copy, tmp_path, monkeypatch):
    _require("openvino")
    shutil.rmtree(model_copy.parent / "model.openvino-export")
    monkeypatch.setenv("CXRLIB_CACHE_DIR", str(tmp_path / "cache"))
    real = rx._make_temporary

    def read_only(final):
        if final.parent == model_copy.parent:
            raise PermissionError(13, "Permission denied", str(final.parent))
        return real(final)

    monkeypatch.setattr(rx, "_make_temporary", read_only)
    artefact = export_model(model_copy, "openvino")
    sha = rx.sha256_file(model_copy)
    assert artefact == tmp_path / "cache" / "exports" / sha / "openvino" / "model.xml"
    assert not (model_copy.parent / "model.openvino-export").exists()
    _forbid_export(monkeypatch)
    assert load_predictor(model_copy, "openvino").export_seconds == 0.0


@pytest.mark.parametrize("runtime", EXPORTED)
def test_cached_export_loads_without_tensorflow(runtime, exported, tmp_path):
    _require(runtime)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from cxrlib.seg.runtime import available_runtimes, load_predictor
        assert {runtime!r} in available_runtimes()
        predictor = load_predictor({str(exported)!r}, {runtime!r})
        assert predictor.export_seconds == 0.0
        predictor.predict(np.zeros((2, {SIZE}, {SIZE}, 1), np.float32))
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"keras", "tensorflow"}})
        print("HEAVY", heavy)
        """
    )
    env = {**os.environ, "CXRLIB_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


# --------------------------------------------------------------------------- errors


def test_unknown_runtime_names_the_file(exported):
    with pytest.raises(RuntimeChoiceError, match=r"model\.keras: unknown runtime 'tflite'"):
        load_predictor(exported, "tflite")
    with pytest.raises(RuntimeChoiceError, match="tflite"):
        export_model(exported, "tflite")


def test_missing_runtime_says_what_to_install(exported, monkeypatch):
    monkeypatch.setattr(rt, "_installed", lambda package: package != "openvino")
    with pytest.raises(RuntimeNotInstalledError, match=r"model\.keras.*pip install openvino"):
        load_predictor(exported, "openvino")
    monkeypatch.setattr(rt, "_installed", lambda package: package != "tf2onnx")
    with pytest.raises(RuntimeNotInstalledError, match="tf2onnx.*pip install onnxruntime"):
        export_model(exported, "onnx")


def test_export_failure_is_an_export_error(model_copy, monkeypatch):
    _require("openvino")
    shutil.rmtree(model_copy.parent / "model.openvino-export")

    def broken(model, runtime, folder, size):
        raise NotImplementedError("op Foo is not supported")

    monkeypatch.setattr(rx, "_convert", broken)
    with pytest.raises(ExportError, match=r"model\.keras: the openvino export failed.*Foo"):
        load_predictor(model_copy, "openvino")
    assert not any("openvino" in p.name for p in model_copy.parent.iterdir())


def test_export_that_disagrees_with_keras_is_refused(model_copy, monkeypatch):
    _require("openvino")
    shutil.rmtree(model_copy.parent / "model.openvino-export")
    monkeypatch.setattr(rx, "_verify", lambda *args: 0.3)
    with pytest.raises(ExportError, match="other probabilities than Keras"):
        export_model(model_copy, "openvino")
    assert rx.find_export(model_copy, "openvino") is None


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_failed_run_is_refused(runtime, model_copy):
    (model_copy.parent / "key.json").write_text(json.dumps({"status": "failed", "error": "NaN"}))
    with pytest.raises(ModelFileError, match="failed"):
        load_predictor(model_copy, runtime)
    with pytest.raises(ModelFileError, match="failed"):
        export_model(model_copy, runtime)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_predictor(tmp_path / "none.keras", "openvino")
