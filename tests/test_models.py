"""Tests for cxrlib.seg.models: exact original architectures, shapes, errors, a tiny fit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cxrlib.seg import losses, models  # noqa: E402


def test_default_unet_has_original_parameter_count():
    model = models.build_unet()
    assert model.count_params() == 7_759_521
    assert model.input_shape == (None, 256, 256, 1)
    assert model.output_shape == (None, 256, 256, 1)


def test_default_resunet_has_original_parameter_count():
    model = models.build_resunet()
    assert model.count_params() == 4_722_737
    assert model.output_shape == (None, 256, 256, 1)


def test_unet_layout_matches_the_classic_network():
    model = models.build_unet()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MaxPooling2D") == 4
    assert kinds.count("Conv2DTranspose") == 4
    assert kinds.count("BatchNormalization") == 0
    up = [layer for layer in model.layers if type(layer).__name__ == "Conv2DTranspose"]
    assert all(layer.kernel_size == (2, 2) and layer.strides == (2, 2) for layer in up)


def test_resunet_downsamples_with_strides_and_upsamples_without_params():
    model = models.build_resunet()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("UpSampling2D") == 4
    strided = [
        layer
        for layer in model.layers
        if type(layer).__name__ == "Conv2D" and layer.strides == (2, 2)
    ]
    assert len(strided) == 4  # the residual branch of each of the 4 encoder units
    # Shortcuts sub-sample (pool size 1, stride 2) before a 1x1 conv: a strided 1x1 conv.
    subsample = [layer for layer in model.layers if type(layer).__name__ == "MaxPooling2D"]
    assert len(subsample) == 4
    assert all(layer.pool_size == (1, 1) and layer.strides == (2, 2) for layer in subsample)


def test_strided_shortcut_equals_a_strided_1x1_conv():
    from keras import layers

    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    strided = layers.Conv2D(4, 1, padding="same", strides=2)
    expected = np.asarray(strided(x))
    plain = layers.Conv2D(4, 1, padding="same")
    plain.build((None, 4, 4, 3))
    plain.set_weights(strided.get_weights())
    got = np.asarray(plain(layers.MaxPooling2D(pool_size=1, strides=2)(x)))
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("builder", [models.build_unet, models.build_resunet])
def test_output_layer_is_float32_sigmoid(builder):
    model = builder(input_shape=(32, 32, 1), filters=(4, 8, 16))
    last = model.layers[-1]
    assert last.dtype_policy.compute_dtype == "float32"
    assert last.activation.__name__ == "sigmoid"


@pytest.mark.parametrize("builder", [models.build_unet, models.build_resunet])
@pytest.mark.parametrize(
    ("shape", "filters"),
    [((64, 96, 1), (4, 8, 16)), ((48, 48, 3), (4, 8, 8, 16, 16)), ((40, 40, 1), (2, 4, 8, 16))],
)
def test_other_sizes_and_depths(builder, shape, filters):
    model = builder(input_shape=shape, filters=filters)
    assert model.output_shape == (None, shape[0], shape[1], 1)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (2, shape[0], shape[1], 1)
    assert y.dtype == np.float32
    assert np.all((y >= 0) & (y <= 1))


def test_width_changes_parameter_count():
    small = models.build_unet(filters=(16, 32, 64, 128, 256)).count_params()
    assert small < 7_759_521
    assert models.build_resunet(filters=(8, 16, 32, 64, 128)).count_params() < 4_722_737


@pytest.mark.parametrize("builder", [models.build_unet, models.build_resunet])
def test_size_not_divisible_is_a_clear_error(builder):
    with pytest.raises(ValueError, match=r"250.*16"):
        builder(input_shape=(250, 250, 1))
    with pytest.raises(ValueError, match="width 250"):
        builder(input_shape=(256, 250, 1))


def test_smaller_depth_accepts_sizes_divisible_by_its_factor():
    model = models.build_unet(input_shape=(252, 252, 1), filters=(2, 4, 8))  # 252 % 4 == 0
    assert model.output_shape == (None, 252, 252, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filters": ()},
        {"filters": (4, -8)},
        {"filters": (4,)},
        {"dropout": 1.0},
        {"input_shape": (32, 32)},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        models.build_unet(**{"input_shape": (32, 32, 1), "filters": (4, 8), **kwargs})


def test_dropout_adds_layers_but_no_parameters():
    plain = models.build_resunet(input_shape=(32, 32, 1), filters=(4, 8, 16))
    dropped = models.build_resunet(input_shape=(32, 32, 1), filters=(4, 8, 16), dropout=0.3)
    assert dropped.count_params() == plain.count_params()
    assert sum(type(layer).__name__ == "Dropout" for layer in dropped.layers) == 3


def test_build_model_by_name():
    assert models.build_model("UNet", input_shape=(32, 32, 1), filters=(4, 8)).name == "unet"
    with pytest.raises(ValueError, match="resunet"):
        models.build_model("segnet")


def _tiny_data(n=16, size=32):
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    return x, y


def test_tiny_training_step_is_finite():
    keras.utils.set_random_seed(0)
    x, y = _tiny_data()
    model = models.build_unet(input_shape=(32, 32, 1), filters=(4, 8, 16))
    model.compile(optimizer="adam", loss=losses.bce_dice_loss, metrics=[losses.DiceCoefficient()])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["dice"][0] <= 1.0


def test_mixed_precision_keeps_output_and_loss_float32():
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.dtype_policy().name
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = models.build_resunet(input_shape=(32, 32, 1), filters=(4, 8, 16))
        # one eager step: tracing a bf16 graph on CPU costs seconds
        model.compile(optimizer="adam", loss=losses.bce_dice_loss, run_eagerly=True)
        assert model.layers[-1].compute_dtype == "float32"
        assert model.layers[2].compute_dtype == "bfloat16"
        x, y = _tiny_data(8)
        loss = model.train_on_batch(x, y)
        pred = keras.ops.convert_to_numpy(model(x))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert pred.dtype == np.float32
    assert np.isfinite(loss)


_BACKEND_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras
    from cxrlib.seg import losses, models
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    keras.utils.set_random_seed(0)
    assert models.build_unet().count_params() == 7_759_521
    assert models.build_resunet().count_params() == 4_722_737
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    model = models.build_unet(input_shape=(32, 32, 1), filters=(4, 8, 16))
    model.compile(optimizer="adam", loss=losses.bce_dice_loss,
                  metrics=[losses.DiceCoefficient()])
    h = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(h.history["loss"][0]), h.history
    print("OK", h.history["loss"][0])
    """
)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backend_in_subprocess(backend):
    probe = subprocess.run(
        [sys.executable, "-c", f"import {backend}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            f"{backend} is not installed in this environment; KERAS_BACKEND={backend} check not run"
        )
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", _BACKEND_SCRIPT.format(backend=backend)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
