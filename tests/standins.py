"""Stand-ins shared by several test modules (imported as ``from standins import ...``)."""

from __future__ import annotations

from pathlib import Path

import keras


def save_standin_model(path: Path, size: int = 32) -> Path:
    """A deterministic 'segmentation model': sigmoid(-40 (x - 0.35)), dark pixels are lung."""
    inputs = keras.Input((size, size, 1))
    outputs = keras.layers.Conv2D(
        1,
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(-40.0),
        bias_initializer=keras.initializers.Constant(40.0 * 0.35),
    )(inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(path)
    return path
