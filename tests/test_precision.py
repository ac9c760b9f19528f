"""Precision detection: ``auto`` picks the fastest policy of the machine."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cxrlib import precision
from cxrlib.precision import PRECISIONS, resolve_precision, runnable_precision
from cxrlib.seg.train_config import TrainConfig, cpu_recipe


@pytest.mark.parametrize(
    ("gpu", "bf16", "expected"),
    [
        (True, False, "mixed_float16"),
        (True, True, "mixed_float16"),
        (False, True, "mixed_bfloat16"),
        (False, False, "float32"),
        (False, None, "float32"),  # not Linux: cannot tell, take the safe choice
    ],
)
def test_auto_follows_the_hardware(monkeypatch, gpu, bf16, expected):
    monkeypatch.setattr(precision, "has_gpu", lambda: gpu)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: bf16)
    assert resolve_precision("auto") == expected
    # recipes and configs store the resolved policy, never "auto"
    assert cpu_recipe("resunet").precision == expected
    assert TrainConfig().precision == expected
    assert TrainConfig.from_dict(TrainConfig().to_dict()).precision == expected


def test_explicit_policies_pass_and_bad_values_fail():
    for policy in PRECISIONS:
        assert resolve_precision(policy) == policy
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="float16")


def test_bf16_models_run_in_float32_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(precision, "has_gpu", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert runnable_precision("mixed_bfloat16") == "float32"
    assert runnable_precision("float32") == "float32"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert runnable_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_a_bf16_model_loads_and_predicts_in_float32_without_native_bf16(tmp_path, monkeypatch):
    from cxrlib.seg.inference import load_segmentation_model, predict_masks, saved_precision
    from cxrlib.seg.models import build_model

    with precision.precision_scope("mixed_bfloat16"):
        model = build_model("unet", input_shape=(32, 32, 1), filters=(4, 8))
    path = tmp_path / "model.keras"
    model.save(path)
    monkeypatch.setattr(precision, "has_gpu", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    loaded = load_segmentation_model(path)
    assert saved_precision(loaded) == "float32"
    probs = predict_masks(loaded, np.random.default_rng(0).random((2, 32, 32), np.float32))
    assert probs.shape[:3] == (2, 32, 32) and np.isfinite(probs).all()
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert saved_precision(load_segmentation_model(path)) == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"


_CPUINFO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n"
_CPUINFO_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize(
    ("cpuinfo", "cap", "expected"),
    [
        (_CPUINFO_BF16, None, True),
        (_CPUINFO_AVX2, None, False),
        (_CPUINFO_BF16, "avx2", False),  # oneDNN told to stop at AVX2: no bf16 kernels
        (_CPUINFO_BF16, "AVX512_CORE", False),
        (_CPUINFO_BF16, "AVX512_CORE_BF16", True),
        (_CPUINFO_BF16, "AVX512_CORE_AMX", True),
        (_CPUINFO_BF16, "ALL", True),
        (_CPUINFO_AVX2, "ALL", False),  # a cap never adds instructions
    ],
)
def test_the_cpu_probe_reads_the_flags_and_the_onednn_cap(
    monkeypatch, tmp_path, cpuinfo, cap, expected
):
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    real_path = precision.Path
    monkeypatch.setattr(
        precision, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo" else real_path(p)
    )
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert precision.cpu_supports_bf16() is expected
    monkeypatch.setattr(precision, "has_gpu", lambda: False)
    assert resolve_precision("auto") == ("mixed_bfloat16" if expected else "float32")
