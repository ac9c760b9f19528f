"""Tuberculosis diagnosis end to end: lung masks, features, classifier, evaluation, runs.

:func:`train_tb` runs the whole chain of the book's TB chapter on a dataset folder
and writes everything into one run folder::

    scan (cxrlib.data.datasets), labelled radiographs only
    -> lung masks PREDICTED by a segmentation model for every radiograph
       (a given model, or one trained with cxrlib.seg.train.train_segmentation)
    -> features (cxrlib.tb.features; hand-crafted lung features by default)
    -> repeated stratified cross-validation (cxrlib.tb.evaluate): out-of-fold
       probabilities, AUC with a bootstrap CI, report, WHO operating points, per site
    -> the final classifier, fitted on every radiograph

:func:`classify` applies a finished run to any folder of radiographs (any names,
any depth, offline), with the run's own segmentation model.

The defaults (:class:`TBConfig`) are the best pipeline measured offline on the real
development set (563 radiographs with masks, 5-fold x 2): hand-crafted features at
512 x 512 and an L2 logistic regression (AUC 0.92).

Files of a run folder (each written atomically: temporary file + rename):

``cxrlib_run.json``
    The marker: ``{"run_type": "cxrlib-tb-run", "status": "done", "key": ...}``.
    :func:`classify` refuses folders without it and names the command that made them.
``tb_model.joblib``
    The fitted classifier pipeline (:func:`cxrlib.tb.classifiers.make_classifier`).
``tb_config.json``
    The :class:`TBConfig`, the feature names and dimension, the segmentation model
    (a path relative to the run folder), counts, skipped files, timings, versions.
``cv_metrics.json``
    Cross-validation summary (AUC with CI, accuracy, sensitivity, specificity),
    classification report, confusion matrix, WHO operating points, per-site table.
``oof_predictions.csv``
    One row per radiograph: ``id, site, label, file, probability`` (mean over the
    repeats), ``proba_r<k>``, ``fold_r<k>`` of every repeat and ``mask_file`` (the
    ground-truth mask, if any: a path or a JSON list of paths).
``features.npz``
    ``X`` (``float32 (N, D)``), ``feature_names`` and ``ids``.
``segmentation/`` or ``seg_model.keras``
    The segmentation run trained for this TB run, or a copy of the given model.

Load-or-train
    The run's key is the SHA-256 of the configuration, the identity (path, size,
    modification time) of every labelled image file and the segmentation model
    (the given file's SHA-256, or the configuration it is trained with). Calling
    again with the same key returns the saved run (``TBRunResult.trained`` is
    False); another key raises :class:`TBRunError` unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxrlib.atomic import atomic_write
from cxrlib.data.imageio import ImageReadError, atomic_write_bytes, read_image
from cxrlib.errors import CxrlibError
from cxrlib.runs import hash_key

__all__ = [
    "ANY_CLASSIFIER",
    "COMPARISON_COLUMNS",
    "PUBLISHED",
    "RUN_MARKER",
    "RUN_TYPE",
    "TB_FORMAT_VERSION",
    "TB_RUN_FILES",
    "SEG_RUN_NAME",
    "ClassifyReport",
    "FeatureUnavailable",
    "TBConfig",
    "TBInputs",
    "TBPredictor",
    "TBRunError",
    "TBRunResult",
    "classify",
    "compare_masks",
    "compare_pipelines",
    "extract_feature_sets",
    "find_seg_model",
    "format_comparison",
    "interval_relation",
    "load_predictor",
    "load_run",
    "pipeline_label",
    "predict_lung_masks",
    "prepare_inputs",
    "seg_model_equalize",
    "train_tb",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

#: Name of the marker file that identifies a TB run folder.
RUN_MARKER = "cxrlib_run.json"
#: The ``run_type`` written in the marker.
RUN_TYPE = "cxrlib-tb-run"
#: Bump when the files or the procedure change: old runs get a new key.
TB_FORMAT_VERSION = 1
#: Files a TB run writes into its folder (deleted by ``overwrite=True``).
TB_RUN_FILES: tuple[str, ...] = (
    RUN_MARKER,
    "tb_model.joblib",
    "tb_config.json",
    "cv_metrics.json",
    "oof_predictions.csv",
    "features.npz",
    "seg_model.keras",
)
#: Sub-folder of a TB run where its segmentation model is trained.
SEG_RUN_NAME = "segmentation"
#: Where the book's segmentation chapter leaves its model (relative to ``runs_root``).
BOOK_SEG_MODEL = Path("03b_resunet_training") / "model.keras"

#: Published numbers the TB chapter compares with (see ``book/references.bib``).
PUBLISHED: dict[str, float] = {
    # Jaeger et al. 2014: hand-crafted lung features + SVM, ROC AUC per set
    "jaeger2014_mc_auc": 0.87,
    "jaeger2014_chn_auc": 0.90,
    # ImageNet DenseNet-121, 10-fold cross-validation (Idiap bob.med.tb baselines)
    "densenet121_auc": 0.95,
    # the original project: pretrained-CNN features + MLP on 160 test images
    "original_accuracy_inceptionresnetv2": 0.84,
    "original_accuracy_resnet50": 0.89,
    "original_accuracy_vgg16": 0.90,
    "original_test_images": 160,
    # WHO target product profile for a TB triage test (2014)
    "who_min_sensitivity": 0.90,
    "who_min_specificity": 0.70,
}

#: The classifier of a :func:`compare_pipelines` row whose extractor could not run.
ANY_CLASSIFIER = "any"

#: Columns of a :func:`compare_pipelines` table.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "extractor",
    "classifier",
    "n",
    "n_features",
    "auc",
    "auc_low",
    "auc_high",
    "accuracy",
    "sensitivity",
    "specificity",
    "status",
)

_CHUNK = 64  # radiographs read, segmented and featurised at a time by classify
_MAX_LISTED = 10


class TBRunError(CxrlibError, ValueError):
    """A run folder is not a (finished) TB run, holds another run, or does not fit the data."""


# --------------------------------------------------------------------------- config


def _as_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    try:
        names = tuple(str(v).strip().lower() for v in value)
    except TypeError:
        raise ValueError(f"TBConfig.{what} must be a list of names, got {value!r}") from None
    names = tuple(n for n in names if n)
    if not names:
        raise ValueError(f"TBConfig.{what} must name at least one feature extractor")
    if len(set(names)) != len(names):
        raise ValueError(f"TBConfig.{what} repeats a name: {list(names)}")
    return names


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"TBConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TBConfig:
    """Everything that changes a TB run (part of the run's key).

    Attributes
    ----------
    features : tuple of str
        Feature extractors (:func:`cxrlib.tb.features.available_extractors`), their
        columns concatenated in this order. Default ``("handcrafted",)``.
    classifier : str
        :func:`cxrlib.tb.classifiers.make_classifier` name: ``"logreg"`` (default),
        ``"svm"``, ``"gboost"`` or ``"mlp"``.
    image_size : int
        Side the radiographs (and the predicted masks) are resized to for the
        features; hand-crafted features depend on it (default 512).
    feature_options : dict
        Options per extractor, e.g. ``{"handcrafted": {"groups": ["intensity"]}}``.
    seg_architecture : {"resunet", "unet"}
        Architecture of the segmentation model trained when none is given.
    seg_image_size : int
        Its input side (default 128, the CPU recipe's).
    seg_epochs : int
        Its maximum epochs (default 15: validation Dice about 0.95 on the real
        development set, half the time of the full CPU recipe).
    seg_overrides : dict
        Other :class:`cxrlib.seg.train.TrainConfig` fields for that training.
    seed : int
        Seeds the folds, the classifier and the segmentation training.
    n_splits, n_repeats : int
        Cross-validation folds and repeats (default 5 x 2).
    threshold : float
        TB when the probability is at least this (default 0.5).
    mask_threshold : float
        Lung-probability threshold of the predicted masks (default 0.5).
    """

    features: tuple[str, ...] = ("handcrafted",)
    classifier: str = "logreg"
    image_size: int = 512
    feature_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seg_architecture: str = "resunet"
    seg_image_size: int = 128
    seg_epochs: int = 15
    seg_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_splits: int = 5
    n_repeats: int = 2
    threshold: float = 0.5
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        from cxrlib.tb.classifiers import CLASSIFIERS
        from cxrlib.tb.features import available_extractors

        features = _as_names(self.features, "features")
        unknown = [n for n in features if n not in available_extractors()]
        if unknown:
            raise ValueError(
                f"TBConfig.features: unknown extractor(s) {unknown}; choose from "
                f"{available_extractors()}"
            )
        object.__setattr__(self, "features", features)
        classifier = str(self.classifier).strip().lower()
        if classifier not in CLASSIFIERS:
            raise ValueError(
                f"TBConfig.classifier must be one of {list(CLASSIFIERS)}, got {self.classifier!r}"
            )
        object.__setattr__(self, "classifier", classifier)
        _check_int("image_size", self.image_size, 32)
        _check_int("seg_image_size", self.seg_image_size, 16)
        _check_int("seg_epochs", self.seg_epochs, 1)
        _check_int("seed", self.seed, 0)
        _check_int("n_splits", self.n_splits, 2)
        _check_int("n_repeats", self.n_repeats, 1)
        for name in ("threshold", "mask_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"TBConfig.{name} must be in (0, 1), got {value!r}")
        if not isinstance(self.feature_options, Mapping):
            raise ValueError("TBConfig.feature_options must be a dict of extractor -> options")
        extra = sorted(set(self.feature_options) - set(features))
        if extra:
            raise ValueError(
                f"TBConfig.feature_options has options for {extra}, which are not in "
                f"features {list(features)}"
            )
        if "model" in self.feature_options.get("encoder", {}):
            raise ValueError(
                "TBConfig.feature_options['encoder'] must not set 'model': the encoder is "
                "the run's segmentation model"
            )
        if not isinstance(self.seg_overrides, Mapping):
            raise ValueError("TBConfig.seg_overrides must be a dict of TrainConfig fields")
        object.__setattr__(self, "feature_options", _plain_dict(self.feature_options))
        object.__setattr__(self, "seg_overrides", _plain_dict(self.seg_overrides))
        self.seg_config()  # validates the segmentation settings now, not after hours

    def seg_config(self) -> Any:
        """The :class:`cxrlib.seg.train.TrainConfig` of the segmentation model trained for this run.

        :func:`cxrlib.seg.train.cpu_recipe` of ``seg_architecture`` with ``img_size``,
        ``epochs`` and ``seed`` from this config and ``seg_overrides`` on top.
        """
        from cxrlib.seg.train import cpu_recipe

        values = {"img_size": self.seg_image_size, "epochs": self.seg_epochs, "seed": self.seed}
        values.update(self.seg_overrides)
        return cpu_recipe(self.seg_architecture, **values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TBConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TBConfig field(s): {unknown}; known: {sorted(names)}")
        data = dict(values)
        if "features" in data:
            data["features"] = tuple(data["features"])
        return cls(**data)


def _plain_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip of a mapping (tuples become lists), as stored in tb_config.json."""
    return json.loads(json.dumps(dict(values), default=_json_default))


# --------------------------------------------------------------------------- json helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write_bytes(path, table.to_csv(index=False).encode("utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _listed(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


# --------------------------------------------------------------------------- inputs


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
    from cxrlib.preprocess import resize_image

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
    seg_model : keras.Model
        A segmentation model (:func:`cxrlib.seg.inference.load_segmentation_model`).
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
        thresholded and cleaned (:func:`cxrlib.seg.inference.clean_mask`: the two
        largest components, holes filled). A mask may be empty.
    """
    from cxrlib.preprocess import resize_image
    from cxrlib.seg.inference import clean_mask, predict_masks

    size = _square_size(size)
    if len(small_images) == 0:
        return np.zeros((0, *size), bool)
    probs = predict_masks(seg_model, small_images, batch_size=batch_size)[..., 0]
    masks = np.empty((len(probs), *size), bool)
    for i, plane in enumerate(probs):
        if plane.shape != size:
            plane = resize_image(plane, size, method="bilinear")
        masks[i] = clean_mask(plane > threshold)
    return masks


def seg_model_equalize(model_path: str | os.PathLike[str]) -> str | None:
    """The histogram equalization a segmentation model was trained with.

    Reads ``equalize`` from the ``config.json`` that :func:`cxrlib.seg.train.train_segmentation`
    writes next to ``model.keras``; None when there is none (a model from elsewhere).
    """
    config = _read_json(Path(model_path).parent / "config.json")
    value = config.get("equalize") if isinstance(config, dict) else None
    return value if value in ("hist", "clahe") else None


def _load_seg(seg_model: Any) -> Any:
    if isinstance(seg_model, str | os.PathLike):
        from cxrlib.seg.inference import load_segmentation_model

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
    seg_model : keras.Model or path
        The segmentation model (or its ``.keras`` file).
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
    from cxrlib.preprocess import equalize
    from cxrlib.seg.inference import model_input_size

    model = _load_seg(seg_model)
    seg_size = model_input_size(model)
    size = _square_size(image_size)
    workers = workers or min(4, os.cpu_count() or 1)
    paths = [os.fspath(p) for p in paths]
    images = np.empty((len(paths), *size), np.float32)
    masks = np.zeros((len(paths), *size), bool)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(paths), desc="Lung masks", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(paths), _CHUNK):
            part = paths[start : start + _CHUNK]
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


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureUnavailable:
    """An extractor that could not run here (e.g. ImageNet weights not on disk).

    Attributes
    ----------
    name : str
    status : str
        Short reason for a table, e.g. ``"weights not available: put FILE in DIR"``.
    message : str
        The full error message.
    """

    name: str
    status: str
    message: str


def _extractor_options(
    name: str, options: Mapping[str, Any] | None, seg_model: Any, n_jobs: int | None
) -> dict[str, Any]:
    values = dict(options or {})
    if name == "encoder":
        if seg_model is None:
            raise ValueError("the 'encoder' features need the segmentation model (seg_model=)")
        values["model"] = _load_seg(seg_model)
    if name == "handcrafted" and n_jobs is not None:
        values.setdefault("n_jobs", n_jobs)
    return values


def _extract(
    names: Sequence[str],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seg_model: Any = None,
    n_jobs: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Concatenated features of several extractors: ``float32 (N, D)`` and ``D`` names."""
    from cxrlib.tb.features import extract_features

    blocks, all_names = [], []
    for name in names:
        opts = _extractor_options(name, (options or {}).get(name), seg_model, n_jobs)
        X, feature_names = extract_features(name, images, masks, progress=progress, **opts)
        blocks.append(np.asarray(X, np.float32))
        all_names += list(feature_names)
    return np.concatenate(blocks, axis=1), all_names


def _unavailable(name: str, error: Exception) -> FeatureUnavailable:
    from cxrlib.tb.features.cnn import WeightsUnavailableError

    if isinstance(error, WeightsUnavailableError):
        status = f"weights not available: put {error.weights_file} in {error.searched[0]}"
    else:
        status = f"not available: {str(error).splitlines()[0] if str(error) else error}"
    return FeatureUnavailable(name, status, str(error))


def extract_feature_sets(
    names: Sequence[str],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    seg_model: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    known: Mapping[str, tuple[np.ndarray, list[str]]] | None = None,
    n_jobs: int | None = None,
    progress: bool = False,
) -> dict[str, tuple[np.ndarray, list[str]] | FeatureUnavailable]:
    """Features of each extractor, for a comparison; unavailable ones are recorded, not raised.

    Parameters
    ----------
    names : sequence of str
        Extractor names (see :func:`cxrlib.tb.features.available_extractors`).
    images : numpy.ndarray
        ``float32 (N, H, W)`` radiographs in ``[0, 1]``.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks.
    seg_model : keras.Model or path, optional
        Needed by ``"encoder"``.
    options : mapping, optional
        Options per extractor name.
    known : mapping, optional
        Feature sets already computed (``name -> (X, names)``), used as they are.
    n_jobs : int, optional
        Worker processes of the hand-crafted extractor.
    progress : bool, default False

    Returns
    -------
    dict
        ``name -> (X float32 (N, D), feature names)`` or :class:`FeatureUnavailable`
        (e.g. ImageNet weights absent: ``status`` says which file to put where).
    """
    from cxrlib.tb.features.cnn import WeightsUnavailableError

    out: dict[str, tuple[np.ndarray, list[str]] | FeatureUnavailable] = {}
    for name in names:
        if known and name in known:
            X, feature_names = known[name]
            if len(X) != len(images):
                raise ValueError(
                    f"known features {name!r} have {len(X)} rows for {len(images)} images"
                )
            out[name] = (np.asarray(X, np.float32), list(feature_names))
            continue
        try:
            out[name] = _extract(
                [name],
                images,
                masks,
                options=options,
                seg_model=seg_model,
                n_jobs=n_jobs,
                progress=progress,
            )
        except WeightsUnavailableError as error:
            out[name] = _unavailable(name, error)
    return out


def compare_pipelines(
    X_by_extractor: Mapping[str, Any],
    y: Any,
    strata: Any = None,
    classifiers: Sequence[str] = ("logreg", "svm", "gboost", "mlp"),
    *,
    n_splits: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
    n_boot: int = 2000,
    threshold: float = 0.5,
    progress: bool = False,
    return_results: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[tuple[str, str], Any]]:
    """Cross-validate every extractor x classifier pair; one row each, best AUC first.

    Parameters
    ----------
    X_by_extractor : mapping
        ``name -> X`` (``(N, D)`` array), ``name -> (X, feature names)``, or
        ``name -> FeatureUnavailable`` / an exception (listed with its status, not run).
    y : array_like, shape (N,)
        Labels 0/1.
    strata : array_like, shape (N,), optional
        Site of each radiograph (folds are stratified by site and label).
    classifiers : sequence of str
        :func:`cxrlib.tb.classifiers.make_classifier` names.
    n_splits, n_repeats, seed
        See :func:`cxrlib.tb.evaluate.cross_validate`.
    n_boot : int, default 2000
        Bootstrap resamples of the AUC interval.
    threshold : float, default 0.5
    progress : bool, default False
        A progress bar over the pipelines.
    return_results : bool, default False
        Also return the :class:`cxrlib.tb.evaluate.CVResult` of every pipeline run.

    Returns
    -------
    pandas.DataFrame
        Columns ``extractor``, ``classifier``, ``n``, ``n_features``, ``auc``,
        ``auc_low``, ``auc_high``, ``accuracy``, ``sensitivity``, ``specificity``,
        ``status`` (``"ok"`` or why the pipeline did not run; its numbers are NaN);
        sorted by AUC (descending). An unavailable extractor gets one row, last, with
        the classifier ``"any"``.
    dict, optional
        ``(extractor, classifier) -> CVResult`` when ``return_results``.
    """
    from cxrlib.tb.evaluate import cross_validate

    classifiers = list(classifiers)
    if not classifiers:
        raise ValueError("classifiers must name at least one classifier")
    rows, results = [], {}
    pairs = [(e, c) for e in X_by_extractor for c in classifiers]
    bar = tqdm(total=len(pairs), desc="Pipelines", disable=not progress)
    with bar:
        for name, value in X_by_extractor.items():
            if isinstance(value, Exception):
                value = _unavailable(name, value)
            if isinstance(value, FeatureUnavailable):
                row = {"extractor": name, "classifier": ANY_CLASSIFIER, "status": value.status}
                rows.append(row)
                bar.update(len(classifiers))
                continue
            X = value[0] if isinstance(value, tuple) else value
            X = np.asarray(X)
            for clf in classifiers:
                cv = cross_validate(
                    X, y, strata, clf, n_splits=n_splits, n_repeats=n_repeats, seed=seed
                )
                summary = cv.summary(threshold=threshold, n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        "extractor": name,
                        "classifier": clf,
                        "n": summary["n"],
                        "n_features": int(X.shape[1]),
                        **{k: summary[k] for k in ("auc", "auc_low", "auc_high")},
                        **{k: summary[k] for k in ("accuracy", "sensitivity", "specificity")},
                        "status": "ok",
                    }
                )
                results[(name, clf)] = cv
                bar.update()
    table = pd.DataFrame(rows).reindex(columns=list(COMPARISON_COLUMNS))
    table["available"] = table["status"] == "ok"
    table = table.sort_values(["available", "auc"], ascending=[False, False], kind="stable")
    table = table.drop(columns="available").reset_index(drop=True)
    table = table.astype({"n": "Int64", "n_features": "Int64"})
    return (table, results) if return_results else table


def pipeline_label(extractor: str, classifier: str) -> str:
    """``"extractor + classifier"``, or ``"extractor (any classifier)"`` for an unavailable one."""
    if classifier == ANY_CLASSIFIER:
        return f"{extractor} (any classifier)"
    return f"{extractor} + {classifier}"


def format_comparison(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A readable version of a :func:`compare_pipelines` table.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`compare_pipelines` (possibly several concatenated).
    digits : int, default 3

    Returns
    -------
    pandas.DataFrame
        Indexed by ``pipeline`` (:func:`pipeline_label`); columns ``n``,
        ``features``, ``AUC (95% CI)`` (e.g. ``"0.921 [0.897, 0.941]"``),
        ``accuracy``, ``sensitivity``, ``specificity`` (strings; ``"-"`` where the
        pipeline did not run) and ``status``.
    """

    def number(value: Any) -> str:
        return "-" if pd.isna(value) else f"{float(value):.{digits}f}"

    rows = []
    for row in table.itertuples(index=False):
        ok = row.status == "ok"
        auc = f"{number(row.auc)} [{number(row.auc_low)}, {number(row.auc_high)}]"
        rows.append(
            {
                "pipeline": pipeline_label(row.extractor, row.classifier),
                "n": "-" if pd.isna(row.n) else str(int(row.n)),
                "features": "-" if pd.isna(row.n_features) else str(int(row.n_features)),
                "AUC (95% CI)": auc if ok else "-",
                "accuracy": number(row.accuracy),
                "sensitivity": number(row.sensitivity),
                "specificity": number(row.specificity),
                "status": row.status,
            }
        )
    columns = ["pipeline", "n", "features", "AUC (95% CI)", "accuracy", "sensitivity"]
    columns += ["specificity", "status"]
    return pd.DataFrame(rows, columns=columns).set_index("pipeline")


def wilson_interval(proportion: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. an accuracy measured on ``n`` images).

    Parameters
    ----------
    proportion : float
        Observed proportion in ``[0, 1]``.
    n : int
        Number of trials (images), ``>= 1``.
    ci : float, default 0.95

    Returns
    -------
    (low, high) : tuple of float
    """
    from scipy.stats import norm

    if not 0.0 <= float(proportion) <= 1.0:
        raise ValueError(f"proportion must be in [0, 1], got {proportion!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    z = float(norm.ppf(0.5 + ci / 2.0))
    p, n = float(proportion), int(n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_relation(value: float, low: float, high: float) -> str:
    """Where ``value`` lies relative to the interval ``[low, high]``, in words.

    Returns
    -------
    str
        ``"below"``, ``"inside"`` or ``"above"`` (``"undefined"`` for NaN bounds).
    """
    if any(pd.isna(v) for v in (value, low, high)):
        return "undefined"
    if float(value) < float(low):
        return "below"
    if float(value) > float(high):
        return "above"
    return "inside"


# --------------------------------------------------------------------------- predictor


class TBPredictor:
    """A finished TB pipeline: segmentation model, feature extractors and classifier.

    Parameters
    ----------
    classifier : sklearn Pipeline
        Fitted; ``predict_proba(X)[:, 1]`` is the TB probability.
    config : TBConfig
    seg_model : keras.Model or path
    n_features : int
        Feature dimension the classifier was fitted on.
    feature_names : list of str, optional
    seg_equalize : {None, "hist", "clahe"}
        Equalization of the segmentation model's inputs (see :func:`prepare_inputs`).
    """

    def __init__(
        self,
        classifier: Any,
        config: TBConfig,
        seg_model: Any,
        n_features: int,
        feature_names: Sequence[str] | None = None,
        seg_equalize: str | None = None,
    ) -> None:
        self.classifier = classifier
        self.config = config
        self.seg_model = _load_seg(seg_model)
        self.n_features = int(n_features)
        self.feature_names = list(feature_names or [])
        self.seg_equalize = seg_equalize

    @property
    def image_size(self) -> int:
        """Side of the images and masks the features are computed at."""
        return self.config.image_size

    def prepare(self, paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> TBInputs:
        """:func:`prepare_inputs` with this pipeline's model and sizes."""
        return prepare_inputs(
            paths,
            self.seg_model,
            self.config.image_size,
            mask_threshold=self.config.mask_threshold,
            seg_equalize=self.seg_equalize,
            **kwargs,
        )

    def features(
        self, images: np.ndarray, masks: np.ndarray, *, n_jobs: int | None = None
    ) -> np.ndarray:
        """Features ``float32 (N, D)`` of images and masks at :attr:`image_size`.

        Raises
        ------
        TBRunError
            If the dimension differs from the one the classifier was fitted on.
        """
        X, _ = _extract(
            self.config.features,
            images,
            masks,
            options=self.config.feature_options,
            seg_model=self.seg_model,
            n_jobs=n_jobs,
        )
        fitted = getattr(self.classifier, "n_features_in_", self.n_features)
        for expected in {self.n_features, int(fitted)}:
            if X.shape[1] != expected:
                raise TBRunError(
                    f"the TB model expects {expected} features ({'+'.join(self.config.features)}"
                    f" at {self.config.image_size} px) but got {X.shape[1]}: the feature "
                    "extractor changed since the run was trained (another cxrlib version or "
                    "edited settings); retrain with cxrlib train-tb"
                )
        return X

    def score(self, images: np.ndarray, masks: np.ndarray, *, n_jobs: int | None = None) -> Any:
        """TB probabilities ``float64 (N,)`` of images with given lung masks."""
        X = self.features(images, masks, n_jobs=n_jobs)
        return np.asarray(self.classifier.predict_proba(X))[:, 1].astype(np.float64)


# --------------------------------------------------------------------------- run folders


def _describe_foreign(run_dir: Path) -> str | None:
    """What made ``run_dir`` when it is not a TB run (None: nothing recognisable)."""
    key = _read_json(run_dir / "key.json")
    if isinstance(key, dict) and "train_segmentation" in str(key.get("what", "")):
        return "a segmentation run, not a TB run (made by cxrlib train-seg)"
    if (run_dir / "model.keras").is_file() and (run_dir / "config.json").is_file():
        return "a segmentation run, not a TB run (made by cxrlib train-seg)"
    if (run_dir / "lungs.csv").is_file():
        return "a folder of segmented masks, not a TB run (made by cxrlib segment)"
    return None


def _check_tb_run(run_dir: str | os.PathLike[str]) -> Path:
    """Return ``run_dir`` if it holds a finished TB run, else raise :class:`TBRunError`."""
    path = Path(run_dir)
    if not path.exists():
        raise TBRunError(f"RUN_DIR {path} does not exist; make one with cxrlib train-tb")
    if not path.is_dir():
        raise TBRunError(f"RUN_DIR {path} is not a folder")
    marker = _read_json(path / RUN_MARKER)
    if not isinstance(marker, dict) or marker.get("run_type") != RUN_TYPE:
        foreign = _describe_foreign(path)
        if foreign:
            raise TBRunError(f"RUN_DIR {path} is {foreign}")
        raise TBRunError(
            f"RUN_DIR {path} is not a TB run (no {RUN_MARKER} marker): pass a folder made "
            "by cxrlib train-tb"
        )
    if marker.get("status") != "done":
        raise TBRunError(
            f"RUN_DIR {path} holds an unfinished TB run (status {marker.get('status')!r}); "
            "run cxrlib train-tb again to finish it"
        )
    missing = [n for n in ("tb_model.joblib", "tb_config.json") if not (path / n).is_file()]
    if missing:
        raise TBRunError(f"RUN_DIR {path} is a TB run but lacks {missing}; retrain it")
    return path


def _load_classifier(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as error:  # unpickling raises many types
        raise TBRunError(f"{path}: cannot load the TB classifier ({error})") from error


def load_predictor(run_dir: str | os.PathLike[str]) -> TBPredictor:
    """The :class:`TBPredictor` of a finished TB run folder.

    Raises
    ------
    TBRunError
        If ``run_dir`` is not a finished TB run (the message says what it is).
    """
    path = _check_tb_run(run_dir)
    stored = _read_json(path / "tb_config.json")
    if not isinstance(stored, dict) or "config" not in stored:
        raise TBRunError(f"{path / 'tb_config.json'} is not a readable TB configuration")
    config = TBConfig.from_dict(stored["config"])
    seg_path = path / stored["seg_model"]
    if not seg_path.is_file():
        raise TBRunError(f"the run's segmentation model {seg_path} is missing")
    classifier = _load_classifier(path / "tb_model.joblib")
    return TBPredictor(
        classifier,
        config,
        seg_path,
        stored["n_features"],
        stored.get("feature_names"),
        seg_equalize=stored.get("seg_equalize"),
    )


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_identity(table: pd.DataFrame) -> list[list[Any]]:
    rows = []
    for row in table.itertuples(index=False):
        stat = os.stat(row.image_path)
        rows.append(
            [str(row.id), str(row.site), int(row.label), row.image_path, stat.st_size,
             stat.st_mtime_ns]
        )  # fmt: skip
    return rows


def _run_key(config: TBConfig, table: pd.DataFrame, seg_source: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        "what": "cxrlib.tb.pipeline.train_tb",
        "format": TB_FORMAT_VERSION,
        "config": config.to_dict(),
        "data_sha256": hash_key(_data_identity(table)),
        "n_images": len(table),
        "segmentation": seg_source,
    }
    return {"key": hash_key(inputs), **inputs}


def _clear_run(run_dir: Path) -> None:
    for name in TB_RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _labelled_table(data_dir: str | os.PathLike[str], progress: bool) -> pd.DataFrame:
    from cxrlib.data.datasets import scan_dataset

    table = scan_dataset(data_dir, progress=progress).table
    labelled = table[table["label"].notna()].reset_index(drop=True)
    if labelled.empty:
        raise ValueError(
            f"{data_dir} holds {len(table)} radiograph(s) but none with a label: TB training "
            "needs normal and TB radiographs whose names end in _0 (normal) or _1 (TB), e.g. "
            "CHNCXR_0001_0.png"
        )
    counts = labelled["label"].astype(int).value_counts()
    if len(counts) < 2:
        only = "normal" if int(counts.index[0]) == 0 else "TB"
        raise ValueError(
            f"{data_dir}: TB training needs both normal and TB radiographs, but all "
            f"{len(labelled)} labelled radiographs are {only}"
        )
    labelled["label"] = labelled["label"].astype(int)
    return labelled


# --------------------------------------------------------------------------- result


@dataclass
class TBRunResult:
    """What :func:`train_tb` produced (or found in the run folder).

    Attributes
    ----------
    run_dir : pathlib.Path
    config : TBConfig
    key : str
    trained : bool
        False when a finished run with the same key was reused.
    table : pandas.DataFrame
        The radiographs used, in feature-row order (``id``, ``site``, ``label``,
        ``image_path``, ``mask_path``).
    X : numpy.ndarray
        ``float32 (N, D)`` features.
    feature_names : list of str
    cv : cxrlib.tb.evaluate.CVResult
        Out-of-fold probabilities of the cross-validation.
    seg_model_path : pathlib.Path
        The segmentation model used (inside the run folder).
    seg_result : cxrlib.seg.train.TrainResult or None
        The segmentation training, when this run trained its model.
    skipped : list of (str, str)
        Radiographs left out, with the reason.
    timings : dict
        Seconds per step.
    inputs : TBInputs or None
        Images and predicted masks (in memory after training; None when reused:
        see :meth:`load_inputs`).
    """

    run_dir: Path
    config: TBConfig
    key: str
    trained: bool
    table: pd.DataFrame
    X: np.ndarray
    feature_names: list[str]
    cv: Any
    seg_model_path: Path
    seg_result: Any = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    inputs: TBInputs | None = None

    @property
    def y(self) -> np.ndarray:
        """``int64 (N,)`` labels."""
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def sites(self) -> np.ndarray:
        """``object (N,)`` site of each radiograph."""
        return self.table["site"].astype(str).to_numpy(dtype=object)

    @property
    def probability(self) -> np.ndarray:
        """``float64 (N,)`` out-of-fold TB probability (mean over the repeats)."""
        return self.cv.mean_proba

    def summary(self, n_boot: int = 2000) -> dict[str, Any]:
        """AUC with CI, accuracy, sensitivity, specificity (see ``CVResult.summary``)."""
        config = self.config
        return self.cv.summary(threshold=config.threshold, n_boot=n_boot, seed=config.seed)

    def classification_report(self) -> pd.DataFrame:
        """Scikit-learn's classification report of the out-of-fold predictions."""
        from cxrlib.tb.evaluate import classification_report_table

        return classification_report_table(self.y, self.probability, self.config.threshold)

    def confusion_matrix(self) -> pd.DataFrame:
        """Confusion matrix of the out-of-fold predictions at the threshold."""
        from cxrlib.tb.evaluate import confusion_matrix_table

        return confusion_matrix_table(self.y, self.probability, self.config.threshold)

    def roc(self, n_boot: int = 2000) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
        """ROC curve ``(fpr, tpr, auc, (low, high))`` of the out-of-fold probabilities."""
        from cxrlib.tb.evaluate import roc_with_ci

        return roc_with_ci(self.y, self.probability, n_boot=n_boot, seed=self.config.seed)

    def operating_points(self) -> pd.DataFrame:
        """WHO operating points (sensitivity >= 0.90, specificity >= 0.70)."""
        from cxrlib.tb.evaluate import operating_points

        return operating_points(self.y, self.probability)

    def per_site(self, n_boot: int = 1000) -> pd.DataFrame:
        """AUC (with CI), accuracy, sensitivity and specificity per site and overall."""
        from cxrlib.tb.evaluate import per_site_metrics

        return per_site_metrics(
            self.y,
            self.probability,
            self.sites,
            threshold=self.config.threshold,
            n_boot=n_boot,
            seed=self.config.seed,
        )

    def roc_curves(
        self, n_boot: int = 2000
    ) -> dict[str, tuple[np.ndarray, np.ndarray, float, tuple[float, float]]]:
        """ROC curves with AUC intervals of all radiographs and of each site.

        Returns
        -------
        dict
            ``"all"`` first, then each site with both labels:
            ``(fpr, tpr, auc, (low, high))`` as :func:`cxrlib.tb.evaluate.roc_with_ci`.
        """
        from cxrlib.tb.evaluate import roc_with_ci

        curves = {"all": self.roc(n_boot=n_boot)}
        for site in sorted(set(self.sites)):
            keep = self.sites == site
            if np.unique(self.y[keep]).size == 2:
                curves[site] = roc_with_ci(
                    self.y[keep], self.probability[keep], n_boot=n_boot, seed=self.config.seed
                )
        return curves

    def cross_site(self, n_boot: int = 2000) -> pd.DataFrame:
        """Train on one site, test on the other, for every ordered pair of sites.

        Returns
        -------
        pandas.DataFrame
            One row per pair (``train_site``, ``test_site``, ``n_train``,
            ``n_test``, ``auc``, ``auc_low``, ``auc_high``, ``accuracy``,
            ``sensitivity``, ``specificity``); empty with these columns when fewer
            than two sites have both labels.
        """
        from cxrlib.tb.evaluate import cross_site

        usable = [
            s for s in sorted(set(self.sites)) if np.unique(self.y[self.sites == s]).size == 2
        ]
        rows = []
        for train_site in usable:
            for test_site in usable:
                if train_site == test_site:
                    continue
                result = cross_site(
                    self.X,
                    self.y,
                    self.sites,
                    self.config.classifier,
                    train_site,
                    test_site,
                    seed=self.config.seed,
                    threshold=self.config.threshold,
                    n_boot=n_boot,
                )
                rows.append(result.summary())
        columns = ["train_site", "test_site", "n_train", "n_test", "auc", "auc_low", "auc_high"]
        columns += ["accuracy", "sensitivity", "specificity"]
        return pd.DataFrame(rows, columns=columns)

    def predictor(self) -> TBPredictor:
        """The fitted pipeline saved in the run folder (:func:`load_predictor`)."""
        return load_predictor(self.run_dir)

    def load_inputs(self, progress: bool = False) -> TBInputs:
        """Images and predicted masks of :attr:`table` (recomputed if not in memory)."""
        if self.inputs is None:
            predictor = self.predictor()
            inputs = predictor.prepare(self.table["image_path"].tolist(), progress=progress)
            if len(inputs.kept) != len(self.table):
                raise TBRunError(
                    f"{len(self.table) - len(inputs.kept)} radiograph(s) of the run could not "
                    f"be prepared again: {_listed(inputs.skipped)}"
                )
            self.inputs = inputs
        return self.inputs


def _cv_from_table(oof: pd.DataFrame, config: TBConfig) -> Any:
    from cxrlib.tb.evaluate import CVResult

    repeats = sorted(int(c.split("_r")[1]) for c in oof.columns if c.startswith("proba_r"))
    return CVResult(
        y=oof["label"].to_numpy(np.int64),
        strata=oof["site"].astype(str).to_numpy(dtype=object),
        proba=np.stack([oof[f"proba_r{r}"].to_numpy(np.float64) for r in repeats]),
        folds=np.stack([oof[f"fold_r{r}"].to_numpy(np.int64) for r in repeats]),
        classifier=config.classifier,
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
    )


def load_run(run_dir: str | os.PathLike[str]) -> TBRunResult:
    """Read a finished TB run folder back into a :class:`TBRunResult` (``trained=False``)."""
    path = _check_tb_run(run_dir)
    stored = _read_json(path / "tb_config.json")
    if not isinstance(stored, dict) or "config" not in stored:
        raise TBRunError(f"{path / 'tb_config.json'} is not a readable TB configuration")
    config = TBConfig.from_dict(stored["config"])
    try:
        oof = pd.read_csv(
            path / "oof_predictions.csv",
            dtype={"id": str, "site": str, "file": str, "mask_file": str},
            keep_default_na=False,
        )
        with np.load(path / "features.npz", allow_pickle=False) as data:
            X = data["X"].astype(np.float32)
            names = [str(n) for n in data["feature_names"]]
    except (OSError, ValueError, KeyError) as error:
        raise TBRunError(f"TB run {path} has unreadable result files ({error})") from error
    table = oof[["id", "site", "label", "file"]].rename(columns={"file": "image_path"})
    masks = oof["mask_file"] if "mask_file" in oof else [None] * len(oof)
    table["mask_path"] = pd.Series([_mask_value(v) for v in masks], dtype=object)
    marker = _read_json(path / RUN_MARKER) or {}
    return TBRunResult(
        run_dir=path,
        config=config,
        key=str(marker.get("key", "")),
        trained=False,
        table=table,
        X=X,
        feature_names=names,
        cv=_cv_from_table(oof, config),
        seg_model_path=path / stored["seg_model"],
        skipped=[tuple(s) for s in stored.get("skipped", [])],
        timings=stored.get("timings", {}),
    )


# --------------------------------------------------------------------------- training


def _versions() -> dict[str, str]:
    import sklearn

    versions = {
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }
    try:
        import keras

        versions["keras"] = keras.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


def _seg_source(config: TBConfig, seg_model: Path | None) -> dict[str, Any]:
    if seg_model is not None:
        return {"given": str(seg_model), "sha256": _sha256(seg_model)}
    return {"trained": config.seg_config().to_dict()}


def _obtain_seg_model(
    data: pd.DataFrame,
    config: TBConfig,
    run_dir: Path,
    seg_model: Path | None,
    *,
    overwrite: bool,
    progress: bool,
    n_jobs: int | None,
) -> tuple[str, Any, str | None]:
    """Copy the given model into the run, or train one.

    Returns ``(path relative to run_dir, TrainResult or None, input equalization)``.
    """
    if seg_model is not None:
        target = run_dir / "seg_model.keras"
        atomic_write(target, lambda tmp: shutil.copyfile(seg_model, tmp), ".keras")
        return target.name, None, seg_model_equalize(seg_model)
    from cxrlib.seg.train import train_segmentation

    result = train_segmentation(
        data,
        config.seg_config(),
        run_dir / SEG_RUN_NAME,
        overwrite=overwrite,
        progress=progress,
        n_jobs=n_jobs,
    )
    rel = f"{SEG_RUN_NAME}/model.keras"
    return rel, result, seg_model_equalize(run_dir / rel)


def _cv_metrics(result: TBRunResult, n_boot: int) -> dict[str, Any]:
    report = result.classification_report()
    return {
        "summary": result.summary(n_boot=n_boot),
        "threshold": result.config.threshold,
        "classification_report": report.to_dict(orient="index"),
        "confusion_matrix": result.confusion_matrix().to_dict(orient="index"),
        "operating_points": result.operating_points().to_dict(orient="index"),
        "per_site": result.per_site().to_dict(orient="index"),
        "n_splits": result.config.n_splits,
        "n_repeats": result.config.n_repeats,
    }


def _mask_text(value: Any) -> str:
    """A table's ``mask_path`` as CSV text: "" (none), a path, or a JSON list of paths."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, tuple | list):
        return json.dumps([os.fspath(v) for v in value])
    return os.fspath(value)


def _mask_value(text: Any) -> Any:
    """Inverse of :func:`_mask_text`."""
    if not isinstance(text, str) or not text:
        return None
    return tuple(json.loads(text)) if text.startswith("[") else text


def _oof_table(table: pd.DataFrame, cv: Any) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "id": table["id"].astype(str).to_numpy(),
            "site": table["site"].astype(str).to_numpy(),
            "label": table["label"].to_numpy(np.int64),
            "file": table["image_path"].astype(str).to_numpy(),
            "probability": cv.mean_proba,
        }
    )
    masks = [_mask_text(v) for v in table["mask_path"]]
    for r in range(cv.proba.shape[0]):
        out[f"proba_r{r}"] = cv.proba[r]
        out[f"fold_r{r}"] = cv.folds[r]
    out["mask_file"] = masks
    return out


def _save_features(path: Path, X: np.ndarray, names: list[str], ids: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                X=X.astype(np.float32),
                feature_names=np.asarray(names, dtype=str),
                ids=np.asarray(ids, dtype=str),
            )

    atomic_write(path, write, ".npz")


def _save_classifier(path: Path, model: Any) -> None:
    import joblib

    atomic_write(path, lambda tmp: joblib.dump(model, tmp), ".joblib")


def _check_run_dir(run_dir: Path, key: dict[str, Any], overwrite: bool) -> bool:
    """True when ``run_dir`` already holds the finished run of this key."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TBRunError(f"run_dir {run_dir} exists and is not a folder")
    marker = _read_json(run_dir / RUN_MARKER)
    if isinstance(marker, dict) and marker.get("run_type") == RUN_TYPE:
        if marker.get("key") == key["key"] and marker.get("status") == "done":
            return True
        if marker.get("key") != key["key"] and not overwrite:
            raise TBRunError(
                f"{run_dir} holds another TB run ({_differences(marker, key)}); pass "
                "overwrite=True (cxrlib train-tb --overwrite) or choose another RUN_DIR"
            )
        _clear_run(run_dir)
        return False
    foreign = _describe_foreign(run_dir) if run_dir.is_dir() else None
    if foreign:
        raise TBRunError(f"{run_dir} is {foreign}; choose another RUN_DIR for the TB run")
    return False


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts = []
    old_cfg, new_cfg = old.get("config") or {}, new["config"]
    for name in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(name) != new_cfg.get(name):
            parts.append(f"{name}: {old_cfg.get(name)!r} -> {new_cfg.get(name)!r}")
    if old.get("data_sha256") != new["data_sha256"]:
        parts.append(f"data changed ({old.get('n_images')} -> {new['n_images']} images)")
    if old.get("segmentation") != new["segmentation"]:
        parts.append("another segmentation model")
    return "; ".join(parts) or "another key"


def train_tb(
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    config: TBConfig | None = None,
    *,
    seg_model: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    n_jobs: int | None = None,
    n_boot: int = 2000,
) -> TBRunResult:
    """Train (or reuse) a TB classifier on a dataset folder and cross-validate it.

    Parameters
    ----------
    data_dir : path
        A dataset folder (:func:`cxrlib.data.datasets.scan_dataset`); radiographs with a
        label (file name ending in ``_0`` / ``_1``) are used, with or without masks.
    run_dir : path
        Folder for the run's files (created).
    config : TBConfig, optional
        Default ``TBConfig()``: hand-crafted features at 512 px + logistic regression.
    seg_model : path, optional
        A ``.keras`` segmentation model (or a ``cxrlib train-seg`` run folder),
        copied into the run. None: a model is trained on the radiographs with
        masks in ``data_dir`` (:meth:`TBConfig.seg_config`) into
        ``run_dir/segmentation`` (load-or-train).
    overwrite : bool, default False
        Replace another TB run in ``run_dir`` (and another segmentation run in
        ``run_dir/segmentation``).
    progress : bool, default True
    n_jobs : int, optional
        Worker processes for loading and hand-crafted features (default: all cores).
    n_boot : int, default 2000
        Bootstrap resamples of the AUC intervals in ``cv_metrics.json``.

    Returns
    -------
    TBRunResult

    Raises
    ------
    ValueError
        No labelled radiographs, or only one class; too few per class for the folds.
    TBRunError
        ``run_dir`` holds another run (TB or segmentation).
    cxrlib.tb.features.cnn.WeightsUnavailableError
        An ImageNet extractor was asked for and its weights are not on disk.
    """
    start = time.perf_counter()
    config = TBConfig() if config is None else config
    if not isinstance(config, TBConfig):
        raise ValueError(f"config must be a TBConfig, got {type(config).__name__}")
    run_dir = Path(run_dir)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"dataset folder {data_dir} does not exist or is not a folder")
    seg_path = find_seg_model(seg_model) if seg_model is not None else None
    table = _labelled_table(data_dir, progress)
    counts = table["label"].value_counts()
    if counts.min() < config.n_splits:
        raise ValueError(
            f"{data_dir}: {config.n_splits}-fold cross-validation needs at least "
            f"{config.n_splits} radiographs of each class, got {int(counts.get(0, 0))} normal "
            f"and {int(counts.get(1, 0))} TB"
        )
    key = _run_key(config, table, _seg_source(config, seg_path))
    if _check_run_dir(run_dir, key, overwrite):
        logger.info("reusing the TB run in %s (same key %s)", run_dir, key["key"][:12])
        return load_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = {"run_type": RUN_TYPE, "format": TB_FORMAT_VERSION, "key": key["key"]}
    _write_json(run_dir / RUN_MARKER, {**marker, "status": "training", **key})

    timings: dict[str, float] = {}
    tick = time.perf_counter()
    seg_rel, seg_result, seg_equalize = _obtain_seg_model(
        table, config, run_dir, seg_path, overwrite=overwrite, progress=progress, n_jobs=n_jobs
    )
    timings["segmentation_seconds"] = time.perf_counter() - tick

    from cxrlib.seg.inference import load_segmentation_model

    model = load_segmentation_model(run_dir / seg_rel)
    tick = time.perf_counter()
    inputs = prepare_inputs(
        table["image_path"].tolist(),
        model,
        config.image_size,
        mask_threshold=config.mask_threshold,
        seg_equalize=seg_equalize,
        progress=progress,
    )
    timings["masks_seconds"] = time.perf_counter() - tick
    if inputs.skipped:
        warnings.warn(
            f"{len(inputs.skipped)} radiograph(s) left out: {_listed(inputs.skipped)}",
            stacklevel=2,
        )
    used = table.iloc[inputs.kept].reset_index(drop=True)
    used = used[["id", "site", "label", "image_path", "mask_path"]]

    tick = time.perf_counter()
    X, names = _extract(
        config.features,
        inputs.images,
        inputs.masks,
        options=config.feature_options,
        seg_model=model,
        n_jobs=n_jobs,
        progress=progress,
    )
    timings["features_seconds"] = time.perf_counter() - tick

    from cxrlib.tb.classifiers import make_classifier
    from cxrlib.tb.evaluate import cross_validate

    tick = time.perf_counter()
    y = used["label"].to_numpy(np.int64)
    cv = cross_validate(
        X,
        y,
        used["site"].astype(str).to_numpy(),
        config.classifier,
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
        progress=progress,
    )
    timings["cv_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    from threadpoolctl import threadpool_limits

    # one BLAS thread, as in cross_validate: the matrices are small, and on a busy
    # machine more threads made this fit several times slower
    with threadpool_limits(limits=1, user_api="blas"):
        final = make_classifier(config.classifier, seed=config.seed).fit(X, y)
    timings["fit_seconds"] = time.perf_counter() - tick

    result = TBRunResult(
        run_dir=run_dir,
        config=config,
        key=key["key"],
        trained=True,
        table=used,
        X=X,
        feature_names=names,
        cv=cv,
        seg_model_path=run_dir / seg_rel,
        seg_result=seg_result,
        skipped=inputs.skipped,
        timings=timings,
        inputs=inputs,
    )
    _save_classifier(run_dir / "tb_model.joblib", final)
    _save_features(run_dir / "features.npz", X, names, used["id"].astype(str).tolist())
    _write_csv(run_dir / "oof_predictions.csv", _oof_table(used, cv))
    _write_json(run_dir / "cv_metrics.json", _cv_metrics(result, n_boot))
    timings["total_seconds"] = time.perf_counter() - start
    by_site = used.groupby(["site", "label"]).size()
    _write_json(
        run_dir / "tb_config.json",
        {
            "config": config.to_dict(),
            "features": list(config.features),
            "n_features": int(X.shape[1]),
            "feature_names": names,
            "seg_model": seg_rel,
            "seg_equalize": seg_equalize,
            "seg_model_source": str(seg_path) if seg_path else "trained for this run",
            "data_dir": str(data_dir.resolve()),
            "n_images": len(used),
            "by_site_label": {f"{s}|{lab}": int(n) for (s, lab), n in by_site.items()},
            "skipped": [list(s) for s in inputs.skipped],
            "timings": timings,
            "versions": _versions(),
        },
    )
    _write_json(run_dir / RUN_MARKER, {**marker, "status": "done", **key})
    return result


# --------------------------------------------------------------------------- masks


def compare_masks(
    result: TBRunResult,
    classifiers: Sequence[str] | None = None,
    *,
    n_boot: int = 2000,
    n_jobs: int | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predicted against ground-truth lung masks: their overlap, and the classifier's AUC.

    On the radiographs of ``result`` that have a ground-truth mask, the run's
    features are computed again with the ground-truth masks, and both feature sets
    (ground truth, predicted) are cross-validated like the run.

    Parameters
    ----------
    result : TBRunResult
    classifiers : sequence of str, optional
        Default: the run's classifier.
    n_boot : int, default 2000
    n_jobs : int, optional
        Worker processes of the hand-crafted features.
    progress : bool, default False

    Returns
    -------
    table : pandas.DataFrame
        :func:`compare_pipelines` rows named ``"<features>, ground-truth masks"``
        and ``"<features>, predicted masks"`` (empty when fewer than
        ``n_splits`` radiographs of each class have a mask).
    dice : pandas.DataFrame
        ``id``, ``site``, ``dice`` of each predicted mask against its ground truth
        (at the feature size).
    """
    from cxrlib.data.imageio import read_mask
    from cxrlib.preprocess import resize_mask
    from cxrlib.seg.metrics import dice as dice_score

    config = result.config
    has_mask = result.table["mask_path"].notna().to_numpy()
    rows = np.flatnonzero(has_mask)
    inputs = result.load_inputs()
    size = inputs.images.shape[1:]
    truth = np.zeros((len(rows), *size), bool)
    for k, i in enumerate(rows):
        source = result.table["mask_path"].iloc[i]
        mask = read_mask(list(source) if isinstance(source, tuple | list) else source)
        truth[k] = resize_mask(mask, size)
    scores = [dice_score(inputs.masks[i], truth[k]) for k, i in enumerate(rows)]
    dice = pd.DataFrame(
        {
            "id": result.table["id"].iloc[rows].astype(str).to_numpy(),
            "site": result.table["site"].iloc[rows].astype(str).to_numpy(),
            "dice": np.asarray(scores, np.float64),
        }
    )
    y = result.y[rows]
    counts = np.bincount(y, minlength=2)
    name = "+".join(config.features)
    if counts.min() < config.n_splits:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS)), dice
    keep = truth.any(axis=(1, 2))
    X_truth, _ = _extract(
        config.features,
        inputs.images[rows][keep],
        truth[keep],
        options=config.feature_options,
        seg_model=result.seg_model_path,
        n_jobs=n_jobs,
        progress=progress,
    )
    sets = {
        f"{name}, ground-truth masks": X_truth,
        f"{name}, predicted masks": result.X[rows][keep],
    }
    table = compare_pipelines(
        sets,
        y[keep],
        result.sites[rows][keep],
        list(classifiers or [config.classifier]),
        n_splits=config.n_splits,
        n_repeats=config.n_repeats,
        seed=config.seed,
        n_boot=n_boot,
        threshold=config.threshold,
    )
    return table, dice


# --------------------------------------------------------------------------- classify


@dataclass
class ClassifyReport:
    """What :func:`classify` did.

    Attributes
    ----------
    out_csv : pathlib.Path
    table : pandas.DataFrame
        The rows written: ``file`` (relative to the images folder),
        ``probability``, ``prediction`` (1 = TB, 0 = normal).
    skipped : list of (str, str)
        ``(file, reason)`` of the files not classified (not images, unreadable,
        no lungs found, duplicates).
    threshold : float
    seconds : float
    """

    out_csv: Path
    table: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.5
    seconds: float = 0.0

    def summary(self) -> str:
        """A short human-readable description."""
        n_tb = int(self.table["prediction"].sum()) if len(self.table) else 0
        lines = [
            f"classified {len(self.table)} radiograph(s) into {self.out_csv}: {n_tb} TB, "
            f"{len(self.table) - n_tb} normal at threshold {self.threshold:g} "
            f"({self.seconds:.1f} s)"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _images_to_classify(images_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    from cxrlib.data.datasets import DatasetError, scan_dataset

    try:
        scan = scan_dataset(images_dir)
    except DatasetError as error:
        raise ValueError(f"no radiographs to classify in {images_dir}: {error}") from None
    skipped = [
        (_relative(s.path, images_dir), s.reason)
        for s in scan.report.skipped
        if s.kind not in ("clutter",)
    ]
    skipped += [
        (_relative(d.path, images_dir), f"duplicate of {_relative(d.kept, images_dir)}")
        for d in scan.report.duplicates
    ]
    paths = sorted(scan.table["image_path"].astype(str), key=lambda p: _relative(p, images_dir))
    return paths, skipped


def classify(
    run_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    progress: bool = True,
    n_jobs: int | None = None,
) -> ClassifyReport:
    """Write the TB probability of every radiograph in a folder, with a finished TB run.

    Parameters
    ----------
    run_dir : path
        A folder made by :func:`train_tb` (``cxrlib train-tb``).
    images_dir : path
        Radiographs at any depth, any names (a dataset folder works too: its
        masks and readings are not classified).
    out_csv : path
        CSV written atomically: ``file,probability,prediction`` (``file`` relative
        to ``images_dir``; ``prediction`` 1 = TB, 0 = normal at the run's threshold).
    progress : bool, default True
    n_jobs : int, optional
        Worker processes of the hand-crafted features.

    Returns
    -------
    ClassifyReport
        Unreadable images and images without lungs are skipped and listed.

    Raises
    ------
    TBRunError
        ``run_dir`` is not a finished TB run (the message says what it is) or the
        features do not fit the model.
    ValueError
        ``images_dir`` is missing or holds no radiograph.
    """
    start = time.perf_counter()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"images folder {images_dir} does not exist or is not a folder")
    predictor = load_predictor(run_dir)
    paths, skipped = _images_to_classify(images_dir)
    rows: list[dict[str, Any]] = []
    threshold = predictor.config.threshold
    bar = tqdm(total=len(paths), desc="Classifying", unit="img", disable=not progress)
    with bar:
        for begin in range(0, len(paths), _CHUNK):
            part = paths[begin : begin + _CHUNK]
            inputs = predictor.prepare(part)
            skipped += [(_relative(p, images_dir), reason) for p, reason in inputs.skipped]
            if len(inputs.kept):
                probs = predictor.score(inputs.images, inputs.masks, n_jobs=n_jobs)
                for index, p in zip(inputs.kept, probs, strict=True):
                    rows.append(
                        {
                            "file": _relative(part[index], images_dir),
                            "probability": float(p),
                            "prediction": int(p >= threshold),
                        }
                    )
            bar.update(len(part))
    table = pd.DataFrame(rows, columns=["file", "probability", "prediction"])
    out_csv = Path(out_csv)
    if out_csv.parent and not out_csv.parent.exists():
        out_csv.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(out_csv, table)
    skipped.sort()
    return ClassifyReport(out_csv, table, skipped, threshold, time.perf_counter() - start)
