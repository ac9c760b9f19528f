"""Segmentation networks: the classic U-Net and the residual U-Net (ResUNet).

Both builders return an uncompiled :class:`keras.Model` that maps a batch of
grey-level radiographs ``float32 (N, H, W, C)`` in ``[0, 1]`` to per-pixel lung
probabilities ``float32 (N, H, W, 1)``. They use only Keras 3 layers, so they
run on the TensorFlow, PyTorch and JAX backends.

With their default arguments they are exactly the networks of the original
notebooks (parameter counts at a ``256 x 256 x 1`` input):

* :func:`build_unet`: 7,759,521 parameters. Encoder of double 3x3 ReLU
  convolutions with 32-64-128-256-512 filters and 2x2 max pooling; decoder of
  2x2 stride-2 transposed convolutions, concatenation with the skip connection
  and a double 3x3 convolution; a 1x1 sigmoid convolution on top (the
  "unet" of the Kaggle lung-segmentation notebooks, after Ronneberger et al. 2015).
* :func:`build_resunet`: 4,722,737 parameters. The deep residual U-Net of
  Zhang et al. (2017), in its common Keras form: pre-activation residual units
  (BN-ReLU-conv, twice) whose shortcut is a 1x1 convolution followed by batch
  normalisation; a stem (conv, BN-ReLU-conv, shortcut); encoder units that
  down-sample with stride-2 convolutions (16-32-64-128-256 filters); a bridge
  of two BN-ReLU-conv blocks; a decoder of 2x up-sampling, concatenation and a
  residual unit; a 1x1 sigmoid convolution on top.

The output layer is computed in ``float32`` (``dtype="float32"``), so the
models can be trained under ``keras.mixed_precision.set_global_policy(
"mixed_bfloat16")`` (or ``"mixed_float16"``) with a float32 loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

__all__ = [
    "UNET_PARAMS_256",
    "RESUNET_PARAMS_256",
    "build_unet",
    "build_resunet",
    "build_model",
    "check_input_shape",
]

#: Parameter count of the default :func:`build_unet` at a 256 x 256 x 1 input.
UNET_PARAMS_256 = 7_759_521
#: Parameter count of the default :func:`build_resunet` at a 256 x 256 x 1 input.
RESUNET_PARAMS_256 = 4_722_737


def check_input_shape(input_shape: Sequence[int], depth: int) -> tuple[int, int, int]:
    """Validate a model input shape ``(H, W, C)`` for a network of ``depth`` levels.

    Parameters
    ----------
    input_shape : sequence of int
        ``(height, width, channels)``.
    depth : int
        Number of resolution levels (``len(filters)``); the input is halved
        ``depth - 1`` times, so height and width must be divisible by
        ``2 ** (depth - 1)``.

    Returns
    -------
    tuple of int
        The validated ``(height, width, channels)``.

    Raises
    ------
    ValueError
        If the shape does not have three positive entries, or if height or width
        is not divisible by ``2 ** (depth - 1)``; the message names the size.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"input_shape must be three positive integers (height, width, channels), got {shape!r}"
        )
    if depth < 2:
        raise ValueError(f"filters must have at least 2 entries (levels), got {depth}")
    factor = 2 ** (depth - 1)
    height, width, _ = shape
    bad = [
        f"{name} {size}" for name, size in (("height", height), ("width", width)) if size % factor
    ]
    if bad:
        raise ValueError(
            f"input_shape {shape}: {' and '.join(bad)} not divisible by {factor} "
            f"(2**(depth-1) for depth {depth}); resize the images to a multiple of {factor}, "
            f"e.g. {max(factor, (height // factor) * factor)}"
        )
    return shape  # type: ignore[return-value]


def _check_filters(filters: Sequence[int]) -> tuple[int, ...]:
    values = tuple(filters)
    if not values or not all(isinstance(f, int) and f > 0 for f in values):
        raise ValueError(f"filters must be a sequence of positive integers, got {filters!r}")
    return values


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def _output_layer(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """1x1 sigmoid convolution computed in float32 (mixed-precision safe)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return layers.Conv2D(num_classes, 1, activation="sigmoid", dtype="float32", name="mask")(x)


# --------------------------------------------------------------------------- U-Net


def _double_conv(
    x: keras.KerasTensor,
    filters: int,
    name: str,
    *,
    batch_norm: bool,
    activation: str,
    kernel_initializer: str,
) -> keras.KerasTensor:
    """Two 3x3 'same' convolutions, each followed by (optional BN and) the activation."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            activation=None if batch_norm else activation,
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def build_unet(
    input_shape: Sequence[int] = (256, 256, 1),
    filters: Sequence[int] = (32, 64, 128, 256, 512),
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
    activation: str = "relu",
    kernel_initializer: str = "glorot_uniform",
    num_classes: int = 1,
    name: str = "unet",
) -> keras.Model:
    """Build the classic U-Net.

    Parameters
    ----------
    input_shape : sequence of int, default (256, 256, 1)
        ``(height, width, channels)``; height and width must be divisible by
        ``2 ** (len(filters) - 1)``.
    filters : sequence of int, default (32, 64, 128, 256, 512)
        Filters per level, from the full-resolution level to the bottleneck;
        ``len(filters)`` is the depth (number of levels).
    dropout : float, default 0.0
        If positive, a ``Dropout`` layer with this rate after the bottleneck
        block and after every decoder block. Adds no parameters.
    batch_norm : bool, default False
        Add batch normalisation after every 3x3 convolution (then without bias).
        Changes the parameter count; the original network has none.
    activation : str, default "relu"
        Activation of the 3x3 convolutions.
    kernel_initializer : str, default "glorot_uniform"
        Initializer of the 3x3 convolutions (Keras' default, as in the original).
    num_classes : int, default 1
        Output channels (independent sigmoids).
    name : str, default "unet"
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled model, input ``(N, H, W, C)``, output ``float32 (N, H, W,
        num_classes)`` in ``[0, 1]``. 7,759,521 parameters with the defaults.

    Raises
    ------
    ValueError
        For a bad ``input_shape`` (e.g. 250 is not divisible by 16), bad
        ``filters`` or ``dropout``.
    """
    filters = _check_filters(filters)
    input_shape = check_input_shape(input_shape, len(filters))
    dropout = _check_dropout(dropout)
    conv = {"batch_norm": batch_norm, "activation": activation}
    conv["kernel_initializer"] = kernel_initializer

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level, n in enumerate(filters[:-1], start=1):
        x = _double_conv(x, n, f"enc{level}", **conv)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _double_conv(x, filters[-1], "bottleneck", **conv)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in range(len(filters) - 1, 0, -1):
        n = filters[level - 1]
        x = layers.Conv2DTranspose(n, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level - 1]])
        x = _double_conv(x, n, f"dec{level}", **conv)
        if dropout:
            x = layers.Dropout(dropout, name=f"dec{level}_dropout")(x)
    outputs = _output_layer(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


# ------------------------------------------------------------------------- ResUNet


def _bn_act(x: keras.KerasTensor, name: str, *, act: bool = True) -> keras.KerasTensor:
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if act:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def _conv_block(
    x: keras.KerasTensor, filters: int, name: str, *, strides: int = 1
) -> keras.KerasTensor:
    """Pre-activation block: BN -> ReLU -> 3x3 conv."""
    x = _bn_act(x, name)
    return layers.Conv2D(filters, 3, padding="same", strides=strides, name=f"{name}_conv")(x)


def _shortcut(
    x: keras.KerasTensor, filters: int, name: str, *, strides: int = 1
) -> keras.KerasTensor:
    """Projection shortcut: 1x1 conv -> BN.

    A strided 1x1 convolution equals sub-sampling followed by a stride-1 1x1 convolution.
    We write it that way because TensorFlow 2.21's oneDNN CPU kernel for strided 1x1
    convolutions with fewer than 16 input channels corrupts memory (oneDNN issue 6035);
    the parameter count is unchanged.
    """
    if strides > 1:
        x = layers.MaxPooling2D(pool_size=1, strides=strides, name=f"{name}_subsample")(x)
    x = layers.Conv2D(filters, 1, padding="same", name=f"{name}_conv")(x)
    return _bn_act(x, name, act=False)


def _stem(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    res = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    res = _conv_block(res, filters, f"{name}_block")
    short = _shortcut(x, filters, f"{name}_shortcut")
    return layers.Add(name=f"{name}_add")([res, short])


def _residual_unit(
    x: keras.KerasTensor, filters: int, name: str, *, strides: int = 1
) -> keras.KerasTensor:
    res = _conv_block(x, filters, f"{name}_block1", strides=strides)
    res = _conv_block(res, filters, f"{name}_block2")
    short = _shortcut(x, filters, f"{name}_shortcut", strides=strides)
    return layers.Add(name=f"{name}_add")([short, res])


def build_resunet(
    input_shape: Sequence[int] = (256, 256, 1),
    filters: Sequence[int] = (16, 32, 64, 128, 256),
    *,
    dropout: float = 0.0,
    num_classes: int = 1,
    name: str = "resunet",
) -> keras.Model:
    """Build the deep residual U-Net of Zhang et al. (2017).

    Architecture for ``filters = (f0, ..., fD)`` (``D = len(filters) - 1``):
    stem at ``f0`` (full resolution); ``D`` encoder residual units with
    ``f1 .. fD`` filters, each down-sampling by a stride-2 convolution; a bridge
    of two BN-ReLU-3x3-conv blocks at ``fD``; ``D`` decoder steps, each a 2x
    ``UpSampling2D``, concatenation with the encoder output of the same
    resolution and a residual unit (the decoder unit at encoder level ``i`` has
    ``f(i+1)`` filters, as in the common Keras implementation); a 1x1 sigmoid
    convolution in float32.

    Parameters
    ----------
    input_shape : sequence of int, default (256, 256, 1)
        ``(height, width, channels)``; height and width must be divisible by
        ``2 ** (len(filters) - 1)``.
    filters : sequence of int, default (16, 32, 64, 128, 256)
        Filters per level; ``len(filters)`` is the depth.
    dropout : float, default 0.0
        If positive, a ``Dropout`` layer with this rate after the bridge and
        after every decoder unit. Adds no parameters.
    num_classes : int, default 1
        Output channels (independent sigmoids).
    name : str, default "resunet"
        Model name.

    Returns
    -------
    keras.Model
        Uncompiled model, input ``(N, H, W, C)``, output ``float32 (N, H, W,
        num_classes)`` in ``[0, 1]``. 4,722,737 parameters with the defaults.

    Raises
    ------
    ValueError
        For a bad ``input_shape`` (e.g. 250 is not divisible by 16), bad
        ``filters`` or ``dropout``.
    """
    filters = _check_filters(filters)
    input_shape = check_input_shape(input_shape, len(filters))
    dropout = _check_dropout(dropout)

    inputs = keras.Input(shape=input_shape, name="image")
    encoded = [_stem(inputs, filters[0], "stem")]
    for level, n in enumerate(filters[1:], start=1):
        encoded.append(_residual_unit(encoded[-1], n, f"enc{level}", strides=2))
    x = _conv_block(encoded[-1], filters[-1], "bridge1")
    x = _conv_block(x, filters[-1], "bridge2")
    if dropout:
        x = layers.Dropout(dropout, name="bridge_dropout")(x)
    for level in range(len(filters) - 2, -1, -1):
        x = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, encoded[level]])
        x = _residual_unit(x, filters[level + 1], f"dec{level}")
        if dropout:
            x = layers.Dropout(dropout, name=f"dec{level}_dropout")(x)
    outputs = _output_layer(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


_BUILDERS = {"unet": build_unet, "resunet": build_resunet}


def build_model(name: str, **kwargs: object) -> keras.Model:
    """Build a model by name: ``"unet"`` or ``"resunet"``.

    Parameters
    ----------
    name : str
        Architecture name (case-insensitive).
    **kwargs
        Passed to :func:`build_unet` or :func:`build_resunet`.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known names.
    """
    key = str(name).lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_BUILDERS)}")
    return _BUILDERS[key](**kwargs)
