"""The inputs of the TB features: radiographs and their lung masks, predicted by a model.

:func:`prepare_inputs` reads radiographs (any format and size), resizes them to the
feature size and predicts their lungs with a segmentation model
(:func:`predict_lung_masks`); :func:`find_seg_model` finds the model a TB run uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cxrlib.data.imageio import ImageReadError, read_image
from cxrlib.preprocess import equalize, resize_image
from cxrlib.runs import read_json
from cxrlib.seg.inference import load_segmentation_model, model_input_size, predict_masks
from cxrlib.seg.postprocess import postprocess_mask
from cxrlib.seg.runtime import MaskPredictor

__all__ = [
    "BOOK_SEG_MODEL",
    "CHUNK",
    "TBInputs",
    "as_seg_model",
    "find_seg_model",
    "predict_lung_masks",
    "prepare_inputs",
    "seg_input_size",
    "seg_model_equalize",
]

#: Where the book's segmentation chapter leaves its model (relative to ``runs_root``).
BOOK_SEG_MODEL = Path("03b_resunet_training") / "model.keras"
#: Radiographs read, segmented and featurised at a time.
CHUNK = 64


@dataclass
class TBInputs:
    """Radiographs and their predicted lung masks, ready for feature extraction.

    Attributes
    ----------
    images : numpy.ndarray
        ``float32 (N, S, S)`` in ``[0, 1]`` at the feature size.
    masks : numpy.ndarray
        ``bool (N, S, S)`` predicted lung masks (two largest components, holes filled).
    kept : numpy.ndarray
        ``int64 (N,)`` positions of these radiographs in the list of paths given.
    skipped : list of (str, str)
        ``(path, reason)`` of the radiographs left out (unreadable, no lungs found).
    """

    images: np.ndarray
    masks: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _square_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int | np.integer) else tuple(size)


def _read_resized(path: str, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    image = read_image(path)
    return [resize_image(image, size, method="area") for size in sizes]


def _read_images(
    paths: Sequence[str], sizes: Sequence[tuple[int, int]], workers: int
) -> tuple[list[list[np.ndarray] | None], list[tuple[str, str]]]:
    """Read and resize each image to every size (threads); unreadable ones -> None."""

    def one(path: str) -> list[np.ndarray] | str:
        try:
            return _read_resized(path, sizes)
        except ImageReadError as error:
            return f"unreadable image: {error.reason}"
        except (OSError, ValueError) as error:
            return f"unreadable image: {error}"

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cxr-tb-read") as pool:
        results = list(pool.map(one, paths))
    out: list[list[np.ndarray] | None] = []
    skipped = []
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, str):
            skipped.append((str(path), result))
            out.append(None)
        else:
            out.append(result)
    return out, skipped


def predict_lung_masks(
    seg_model: Any,
    small_images: np.ndarray,
    size: int | tuple[int, int],
    *,
    threshold: float = 0.5,
    batch_size: int = 16,
) -> np.ndarray:
    """Lung masks at ``size`` from a segmentation model's probabilities.

    Parameters
    ----------
    seg_model : keras.Model or cxrlib.seg.runtime.MaskPredictor
        A segmentation model (:func:`cxrlib.seg.inference.load_segmentation_model`), or
        one loaded with an inference runtime (:func:`cxrlib.seg.runtime.load_predictor`).
    small_images : numpy.ndarray
        ``float32 (N, h, w)`` or ``(N, h, w, 1)`` radiographs at the model's input size.
    size : int or (int, int)
        Output size of the masks.
    threshold : float, default 0.5
    batch_size : int, default 16

    Returns
    -------
    numpy.ndarray
        ``bool (N, H, W)``: each probability map is up-sampled (bilinear),
        thresholded and cleaned (:func:`cxrlib.seg.postprocess.postprocess_mask`: the two
        largest components, holes filled). A mask may be empty.
    """
    size = _square_size(size)
    if len(small_images) == 0:
        return np.zeros((0, *size), bool)
    if isinstance(seg_model, MaskPredictor):
        batch = np.asarray(small_images, np.float32)
        probs = seg_model.predict(batch if batch.ndim == 4 else batch[..., None])[..., 0]
    else:
        probs = predict_masks(seg_model, small_images, batch_size=batch_size)[..., 0]
    masks = np.empty((len(probs), *size), bool)
    for i, plane in enumerate(probs):
        if plane.shape != size:
            plane = resize_image(plane, size, method="bilinear")
        masks[i] = postprocess_mask(plane > threshold)
    return masks


def seg_input_size(seg_model: Any) -> tuple[int, int]:
    """``(H, W)`` input of a Keras segmentation model or of a runtime's predictor."""
    if isinstance(seg_model, MaskPredictor):
        return tuple(seg_model.input_size)
    return model_input_size(seg_model)


def seg_model_equalize(model_path: str | os.PathLike[str]) -> str | None:
    """The histogram equalization a segmentation model was trained with.

    Reads ``equalize`` from the ``config.json`` that :func:`cxrlib.seg.train.train_segmentation`
    writes next to ``model.keras``; None when there is none (a model from elsewhere).
    """
    config = read_json(Path(model_path).parent / "config.json")
    value = config.get("equalize") if isinstance(config, dict) else None
    return value if value in ("hist", "clahe") else None


def as_seg_model(seg_model: Any) -> Any:
    """A loaded segmentation model: ``seg_model`` itself, or the model in a ``.keras`` file.

    ``seg_model`` may also be a runtime's predictor (:func:`cxrlib.seg.runtime.load_predictor`).
    """
    if isinstance(seg_model, str | os.PathLike):
        return load_segmentation_model(seg_model)
    return seg_model


def prepare_inputs(
    paths: Sequence[str | os.PathLike[str]],
    seg_model: Any,
    image_size: int = 512,
    *,
    mask_threshold: float = 0.5,
    seg_equalize: str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> TBInputs:
    """Read radiographs, resize them and predict their lung masks.

    Parameters
    ----------
    paths : sequence of path
        Image files (PNG, JPEG, TIFF, BMP, DICOM; any size).
    seg_model : keras.Model, cxrlib.seg.runtime.MaskPredictor or path
        The segmentation model (or its ``.keras`` file, run by Keras).
    image_size : int, default 512
        Side of the returned images and masks.
    mask_threshold : float, default 0.5
    seg_equalize : {None, "hist", "clahe"}
        Histogram equalization the segmentation model was trained with (applied
        to its inputs only; :func:`seg_model_equalize` reads it from a run).
    workers : int, optional
        Threads reading images (default ``min(4, cores)``).
    progress : bool, default False

    Returns
    -------
    TBInputs
        Unreadable files and radiographs in which the model finds no lung are
        left out and listed in ``skipped``.
    """
    model = as_seg_model(seg_model)
    seg_size = seg_input_size(model)
    size = _square_size(image_size)
    workers = workers or min(4, os.cpu_count() or 1)
    paths = [os.fspath(p) for p in paths]
    images = np.empty((len(paths), *size), np.float32)
    masks = np.zeros((len(paths), *size), bool)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(paths), desc="Lung masks", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(paths), CHUNK):
            part = paths[start : start + CHUNK]
            arrays, bad = _read_images(part, [size, seg_size], workers)
            skipped += bad
            good = [i for i, a in enumerate(arrays) if a is not None]
            if good:
                small = np.stack([arrays[i][1] for i in good])
                if seg_equalize:
                    small = np.stack([equalize(im, seg_equalize) for im in small])
                predicted = predict_lung_masks(model, small, size, threshold=mask_threshold)
                for i, mask in zip(good, predicted, strict=True):
                    if not mask.any():
                        skipped.append((part[i], "the segmentation model found no lungs"))
                        continue
                    images[len(kept)] = arrays[i][0]
                    masks[len(kept)] = mask
                    kept.append(start + i)
            bar.update(len(part))
    n = len(kept)
    order = {p: k for k, p in enumerate(paths)}
    skipped.sort(key=lambda item: order.get(item[0], -1))
    return TBInputs(images[:n].copy(), masks[:n].copy(), np.asarray(kept, np.int64), skipped)


def find_seg_model(
    seg_model: str | os.PathLike[str] | None = None,
    runs_root: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The segmentation model a TB run should use, if one exists.

    Parameters
    ----------
    seg_model : path, optional
        A ``.keras`` file, or a ``cxrlib train-seg`` run folder (its ``model.keras``).
    runs_root : path, optional
        The book's runs folder: ``runs_root/03b_resunet_training/model.keras`` is
        used when it exists (the segmentation chapter's model).

    Returns
    -------
    pathlib.Path or None
        None when neither is given or found (the TB run then trains its own).

    Raises
    ------
    FileNotFoundError
        If ``seg_model`` is given but neither a file nor a folder with ``model.keras``.
    """
    if seg_model is not None:
        path = Path(seg_model).expanduser()
        if path.is_dir():
            path = path / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(
                f"segmentation model {seg_model} not found (expected a .keras file or a "
                "cxrlib train-seg run folder holding model.keras)"
            )
        return path.resolve()
    if runs_root is not None:
        candidate = Path(runs_root).expanduser() / BOOK_SEG_MODEL
        if candidate.is_file():
            return candidate.resolve()
    return None
