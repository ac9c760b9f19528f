"""Segment radiographs with a trained model: load it, predict lung probabilities.

* :func:`load_segmentation_model` loads a ``.keras`` file and checks that it is a
  segmentation model (one ``(H, W, 1)`` input, one ``(H, W, 1)`` sigmoid output).
* :func:`predict_masks` turns a batch of images at the model size into lung
  probabilities, optionally in another precision than the model was saved in.

Whole folders (mask and overlay PNGs, ``lungs.csv``) are :mod:`cxrlib.seg.folder`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib.errors import CxrlibError
from cxrlib.precision import resolve_precision, runnable_precision
from cxrlib.runs import read_json

__all__ = [
    "ModelFileError",
    "check_model_file",
    "load_segmentation_model",
    "saved_precision",
    "model_input_size",
    "model_file_input_size",
    "set_model_precision",
    "predict_masks",
]

_SIGMOIDS = ("sigmoid", "hard_sigmoid")


class ModelFileError(CxrlibError, ValueError):
    """A model file is missing, not a Keras file, or not a segmentation model."""


# --------------------------------------------------------------------------- loading


def _activation_name(layer: Any) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def _check_segmentation_model(model: Any, path: Path) -> None:
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelFileError(
            f"{path}: not a segmentation model: expected one input and one output, got "
            f"{len(inputs)} inputs and {len(outputs)} outputs"
        )
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 4 or in_shape[-1] != 1:
        raise ModelFileError(
            f"{path}: not a segmentation model: input shape {in_shape}, expected (None, H, W, 1) "
            "(one grey channel)"
        )
    if None in in_shape[1:3]:
        raise ModelFileError(
            f"{path}: the model's input size is not fixed ({in_shape}); cxrlib resizes images "
            "to a fixed (H, W)"
        )
    if len(out_shape) != 4 or out_shape[1:] != (*in_shape[1:3], 1):
        raise ModelFileError(
            f"{path}: not a segmentation model: output shape {out_shape}, expected "
            f"(None, {in_shape[1]}, {in_shape[2]}, 1) (one lung probability per pixel)"
        )
    name = _activation_name(model.layers[-1])
    if name not in _SIGMOIDS:
        raise ModelFileError(
            f"{path}: not a segmentation model: its last layer {model.layers[-1].name!r} has "
            f"activation {name!r}, expected a sigmoid (lung probabilities in [0, 1])"
        )


def _refuse_failed_run(path: Path) -> None:
    """A model in a run folder whose ``key.json`` says ``failed`` is not usable."""
    stored = read_json(path.parent / "key.json")
    if isinstance(stored, dict) and stored.get("status") == "failed":
        error = stored.get("error") or "no reason recorded"
        raise ModelFileError(
            f"{path}: the training run in {path.parent} failed, its model is not usable "
            f"({error}); train it again (cxrlib train-seg) or pass another model"
        )


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """Refuse what cannot be a usable model file, before loading it (cheap: no Keras).

    Raises
    ------
    ModelFileError
        The file is missing, has another suffix than ``.keras``/``.h5``/``.hdf5``, is a
        ``.keras`` file that is not a zip archive (Keras would say "File not found"), or
        its run folder says the training failed; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file does not exist")
    _refuse_failed_run(path)
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(
            f"{path}: not a Keras model file (expected a .keras file, got suffix "
            f"{path.suffix or 'none'!r})"
        )
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a readable Keras model file (a .keras model is a zip archive and "
            "this file is not one; give the model.keras written by cxrlib train-seg, or its "
            "run folder)"
        )
    return path


def load_segmentation_model(path: str | os.PathLike[str]) -> Any:
    """Load a segmentation model saved by :func:`cxrlib.seg.train.train_segmentation`.

    Parameters
    ----------
    path : path
        A ``.keras`` file.

    Returns
    -------
    keras.Model
        Uncompiled; input ``(None, H, W, 1)``, output ``(None, H, W, 1)`` sigmoid.

    Raises
    ------
    ModelFileError
        If the file is missing, is not a Keras model file, the model is not a
        segmentation model, or its run folder's ``key.json`` says the training failed;
        the message names the file.
    """
    import keras

    import cxrlib.seg.losses  # noqa: F401  (registers the custom losses and metrics)

    path = check_model_file(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{path}: not a readable Keras model file ({reason})") from error
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: holds a {type(model).__name__}, not a keras.Model")
    _check_segmentation_model(model, path)
    saved = saved_precision(model)
    if runnable_precision(saved) != saved:
        set_model_precision(model, runnable_precision(saved))
    return model


def saved_precision(model: Any) -> str:
    """The dtype policy of the model's first computing layer (what it was trained in)."""
    import keras

    for layer in model.layers[:-1]:
        if not isinstance(layer, keras.layers.InputLayer):
            return layer.dtype_policy.name
    return "float32"


def model_input_size(model: Any) -> tuple[int, int]:
    """Return the ``(H, W)`` of the model's input."""
    shape = tuple(model.inputs[0].shape)
    return int(shape[1]), int(shape[2])


def model_file_input_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The ``(H, W)`` input of a ``.keras`` model, read from its ``config.json`` (no Keras).

    Cheap enough to call before deciding where a job runs; falls back to loading the
    model (:func:`load_segmentation_model`) for an ``.h5`` file or an unusual config.
    """
    path = check_model_file(path)
    if path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            layers = config["config"]["layers"]
            shapes = [
                layer["config"]["batch_shape"]
                for layer in layers
                if layer.get("class_name") == "InputLayer"
            ]
            if len(shapes) == 1 and len(shapes[0]) == 4 and None not in shapes[0][1:3]:
                return int(shapes[0][1]), int(shapes[0][2])
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile):
            pass
    return model_input_size(load_segmentation_model(path))


def set_model_precision(model: Any, precision: str) -> None:
    """Switch the compute precision of a model's layers in place.

    The weights stay float32 (all three policies keep float32 variables); the
    output layer keeps computing in float32.

    Parameters
    ----------
    model : keras.Model
    precision : {"float32", "mixed_bfloat16", "mixed_float16", "auto"}
        ``"auto"``: the fastest for this machine (:func:`cxrlib.precision.resolve_precision`).
    """
    precision = resolve_precision(precision)
    import keras

    for layer in model.layers[:-1]:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layer.dtype_policy = precision
    # the compiled predict function was traced for the old dtypes
    model.predict_function = None
    if hasattr(model, "_predict_function"):
        model._predict_function = None  # noqa: SLF001 (Keras' private cache)


def _as_batch(images: Any, size: tuple[int, int]) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] != 1:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 1), got {array.shape}")
    if array.shape[1:3] != size:
        raise ValueError(
            f"images are {array.shape[1]}x{array.shape[2]} but the model expects "
            f"{size[0]}x{size[1]}; resize them first (cxrlib.preprocess.resize_image)"
        )
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise ValueError(f"images must be float in [0, 1], got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def predict_masks(
    model: Any, images: Any, batch_size: int = 16, precision: str | None = None
) -> np.ndarray:
    """Predict lung probabilities for images at the model's input size.

    Parameters
    ----------
    model : keras.Model
        A segmentation model (:func:`load_segmentation_model`).
    images : ndarray, shape (N, H, W) or (N, H, W, 1)
        Float images in ``[0, 1]`` at the model's ``(H, W)``.
    batch_size : int, default 16
    precision : {None, "float32", "mixed_bfloat16", "mixed_float16"}
        None keeps the precision the model was saved with; otherwise the layers
        are switched in place (see :func:`set_model_precision`).

    Returns
    -------
    ndarray, float32, shape (N, H, W, 1)
        Probabilities in ``[0, 1]``.
    """
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = model_input_size(model)
    batch = _as_batch(images, size)
    if precision is not None:
        set_model_precision(model, precision)
    out = np.empty(batch.shape, np.float32)
    for start in range(0, len(batch), batch_size):
        out[start : start + batch_size] = _predict_batch(
            model, batch[start : start + batch_size], batch_size
        )
    return out


def _predict_batch(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Predict one batch, padded to ``batch_size`` rows (one traced graph for all)."""
    n = len(x)
    if n < batch_size:
        pad = np.zeros((batch_size - n, *x.shape[1:]), x.dtype)
        x = np.concatenate([x, pad])
    probs = np.asarray(model.predict_on_batch(x))
    return np.asarray(probs[:n], dtype=np.float32)
