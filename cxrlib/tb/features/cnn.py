"""ImageNet CNN features (VGG16, ResNet50, InceptionResNetV2), pooled globally or in the lungs.

Each radiograph is resized to the backbone's input size (224 or 299 pixels,
bilinear), scaled to ``[0, 255]``, copied into three channels and passed
through the backbone's own ``keras.applications.<module>.preprocess_input``;
the last convolutional feature map of the network without its classifier
(``include_top=False``) is then averaged over all positions (``<backbone>``) or
over the lungs (``<backbone>_lung``: each position weighted by the fraction of
its area that lies inside the lung mask, the mask being resized to the feature
map's resolution by area averaging).

No network access, ever. The ImageNet weights are the files Keras itself would
download (``keras.applications`` with ``weights="imagenet"``), looked up under
the exact same names in the folder Keras caches them in: ``$KERAS_HOME/models/``
when the environment variable ``KERAS_HOME`` is set, else ``~/.keras/models/``
(and ``/tmp/.keras/models/``, Keras' fallback for a read-only home), or in a
folder given as ``weights_dir``. If the file is absent,
:class:`WeightsUnavailableError` says which file to put where and the URL Keras
would fetch it from, before Keras is even imported; callers that compare
extractors catch it and carry on with the others. A file whose MD5 differs from
the published one is used with a :class:`WeightsWarning`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from cxrlib.errors import CxrlibError
from cxrlib.preprocess import resize_image
from cxrlib.tb.features.base import (
    FeatureError,
    FeatureExtractor,
    FeatureSet,
    check_batch_size,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "CNNFeatures",
    "WeightsUnavailableError",
    "WeightsWarning",
    "factory",
    "find_weights",
    "lung_pool",
    "weights_search_dirs",
]

Pooling = Literal["global", "lung"]

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """What it takes to build one ``keras.applications`` backbone offline.

    Attributes
    ----------
    name : str
        Registry name.
    constructor : str
        ``keras.applications`` function, e.g. ``"VGG16"``.
    module : str
        ``keras.applications`` submodule holding its ``preprocess_input``.
    input_size : int
        Side of the square input the network was trained at.
    weights_file : str
        File name Keras caches the no-top ImageNet weights under.
    url : str
        Where Keras downloads that file from.
    md5 : str
        The file's published MD5 (the ``file_hash`` in Keras' source).
    n_features : int
        Channels of the last feature map (the feature dimension).
    """

    name: str
    constructor: str
    module: str
    input_size: int
    weights_file: str
    url: str
    md5: str
    n_features: int


def _backbone(
    name: str,
    constructor: str,
    module: str,
    size: int,
    folder: str,
    *,
    weights_file: str,
    md5: str,
    n_features: int,
) -> Backbone:
    url = f"{_KERAS_URL}{folder}{weights_file}"
    return Backbone(name, constructor, module, size, weights_file, url, md5, n_features)


#: The supported backbones, by registry name (file names and hashes as in Keras 3's source).
BACKBONES: dict[str, Backbone] = {
    "vgg16": _backbone(
        "vgg16",
        "VGG16",
        "vgg16",
        224,
        "vgg16/",
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="6d6bbae143d832006294945121d1f1fc",
        n_features=512,
    ),
    "resnet50": _backbone(
        "resnet50",
        "ResNet50",
        "resnet50",
        224,
        "resnet/",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="4d473c1dd8becc155b73f8504c6f6626",
        n_features=2048,
    ),
    "inceptionresnetv2": _backbone(
        "inceptionresnetv2",
        "InceptionResNetV2",
        "inception_resnet_v2",
        299,
        "inception_resnet_v2/",
        weights_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="d19885ff4a710c122648d3b5c3b684e4",
        n_features=1536,
    ),
}


class WeightsUnavailableError(CxrlibError, FileNotFoundError):
    """The ImageNet weight file of a backbone is not on disk (nothing is downloaded).

    Attributes
    ----------
    backbone : str
    weights_file : str
        The file name Keras uses.
    searched : list of pathlib.Path
        Folders that were searched, the first one being where to put it.
    url : str
        Where Keras would download it from.
    """

    def __init__(self, backbone: Backbone, searched: list[Path]) -> None:
        self.backbone = backbone.name
        self.weights_file = backbone.weights_file
        self.searched = searched
        self.url = backbone.url
        where = ", ".join(str(d) for d in searched)
        super().__init__(
            f"ImageNet weights for {backbone.name!r} are not available offline: no file "
            f"{backbone.weights_file!r} in {where}. Download it from {backbone.url} "
            f"(md5 {backbone.md5}) and put it at {searched[0] / backbone.weights_file} "
            "(or pass weights_dir=, or set KERAS_HOME to the folder above 'models/')"
        )


class WeightsWarning(UserWarning):
    """A weight file does not match the published ImageNet weights."""


def weights_search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for weight files, in order (the first is where to put one).

    Parameters
    ----------
    weights_dir : path, optional
        If given, only this folder.

    Returns
    -------
    list of pathlib.Path
        ``weights_dir``; or ``$KERAS_HOME/models`` (read now, when set), then
        ``~/.keras/models`` and ``/tmp/.keras/models`` -- where
        ``keras.utils.get_file(..., cache_subdir="models")`` keeps downloads.
    """
    if weights_dir is not None:
        return [Path(weights_dir).expanduser()]
    dirs = []
    home = os.environ.get("KERAS_HOME")
    if home:
        dirs.append(Path(home).expanduser() / "models")
    dirs += [Path("~/.keras/models").expanduser(), Path("/tmp/.keras/models")]
    unique: list[Path] = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def _backbone_spec(backbone: str) -> Backbone:
    key = str(backbone).lower()
    if key not in BACKBONES:
        raise FeatureError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[key]


def find_weights(backbone: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Locate a backbone's no-top ImageNet weight file without downloading anything.

    Parameters
    ----------
    backbone : str
        A key of :data:`BACKBONES`.
    weights_dir : path, optional
        Folder to look in instead of Keras' cache folders.

    Returns
    -------
    pathlib.Path
        The first existing file among :func:`weights_search_dirs`.

    Raises
    ------
    WeightsUnavailableError
        If no folder holds the file; the message names the file, the folder
        to put it in and the download URL.
    """
    spec = _backbone_spec(backbone)
    searched = weights_search_dirs(weights_dir)
    for folder in searched:
        path = folder / spec.weights_file
        if path.is_file():
            return path
    raise WeightsUnavailableError(spec, searched)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lung_pool(feature_maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Average feature maps over the lungs.

    Parameters
    ----------
    feature_maps : numpy.ndarray
        ``(N, h, w, C)`` feature maps.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks at any resolution; each is resized to
        ``(h, w)`` by area averaging, giving the fraction of every feature-map
        cell that is lung, used as weights.

    Returns
    -------
    numpy.ndarray
        ``float32 (N, C)``; an image whose mask covers nothing gets the global
        average.
    """
    n, h, w, _ = feature_maps.shape
    weights = np.stack(
        [resize_image(np.asarray(m, np.float32), (h, w), method="area") for m in masks]
    )
    totals = weights.sum(axis=(1, 2))
    weights[totals <= 0] = 1.0
    pooled = np.einsum("nhwc,nhw->nc", feature_maps.astype(np.float64), weights)
    return (pooled / weights.sum(axis=(1, 2))[:, None]).astype(np.float32)


class CNNFeatures(FeatureExtractor):
    """Features of an ImageNet CNN, globally or lung-pooled.

    Parameters
    ----------
    backbone : str
        ``"vgg16"``, ``"resnet50"`` or ``"inceptionresnetv2"``.
    pooling : {"global", "lung"}, default "global"
        Average over the whole feature map, or inside the lung mask (then
        ``needs_mask`` is true and the name gets a ``_lung`` suffix).
    weights_dir : path, optional
        Folder holding the weight file (default: Keras' cache folders, see
        :func:`weights_search_dirs`).
    input_size : int, optional
        Override the backbone's input size (e.g. a small one for tests).

    Notes
    -----
    The network is built and its weights loaded on the first :meth:`extract`
    (after the weight file is found), then kept for later calls.
    """

    def __init__(
        self,
        backbone: str,
        pooling: Pooling = "global",
        *,
        weights_dir: str | os.PathLike[str] | None = None,
        input_size: int | None = None,
    ) -> None:
        self.spec = _backbone_spec(backbone)
        if pooling not in ("global", "lung"):
            raise FeatureError(f"pooling must be 'global' or 'lung', got {pooling!r}")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 32):
            raise FeatureError(f"input_size must be an int >= 32, got {input_size!r}")
        self.pooling = pooling
        self.weights_dir = weights_dir
        self.input_size = input_size or self.spec.input_size
        self.name = self.spec.name + ("_lung" if pooling == "lung" else "")
        self.needs_mask = pooling == "lung"
        self._model: Any = None

    def load_model(self) -> Any:
        """Build the backbone and load its ImageNet weights (cached).

        Returns
        -------
        keras.Model
            Maps ``(N, S, S, 3)`` preprocessed images to ``(N, h, w, C)``.

        Raises
        ------
        WeightsUnavailableError
            If the weight file is absent (checked before importing Keras).
        FeatureError
            If the file cannot be loaded into the network (truncated, another model).
        """
        if self._model is not None:
            return self._model
        path = find_weights(self.spec.name, self.weights_dir)
        if _md5(path) != self.spec.md5:
            warnings.warn(
                f"{path} does not match the published ImageNet weights of {self.spec.name!r} "
                f"(md5 {self.spec.md5}); using it anyway",
                WeightsWarning,
                stacklevel=3,
            )
        import keras

        build = getattr(keras.applications, self.spec.constructor)
        model = build(
            include_top=False, weights=None, input_shape=(self.input_size, self.input_size, 3)
        )
        try:
            model.load_weights(str(path))
        except (OSError, ValueError, KeyError) as error:
            raise FeatureError(
                f"could not load the {self.spec.name} weights from {path} ({error}); the file "
                f"may be truncated or for another network: fetch it again from {self.spec.url}"
            ) from None
        self._model = model
        return model

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Resize gray ``float32 (N, H, W)`` images in ``[0, 1]`` to the backbone's input.

        Returns
        -------
        numpy.ndarray
            ``float32 (N, S, S, 3)`` after the backbone's ``preprocess_input``.
        """
        import importlib

        size = (self.input_size, self.input_size)
        resized = np.stack([resize_image(im, size, method="bilinear") for im in images])
        rgb = np.repeat(np.clip(resized, 0.0, 1.0)[..., None] * 255.0, 3, axis=-1)
        module = importlib.import_module(f"keras.applications.{self.spec.module}")
        return np.asarray(module.preprocess_input(rgb.astype(np.float32)), dtype=np.float32)

    def extract(
        self,
        images: Any,
        masks: Any = None,
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> FeatureSet:
        """CNN features of a batch of radiographs.

        Parameters
        ----------
        images : array_like, shape (N, H, W) or (N, H, W, 1)
            ``float32`` radiographs in ``[0, 1]``.
        masks : array_like, shape (N, H, W) or (N, H, W, 1), optional
            ``bool`` lung masks; required for ``pooling="lung"``, ignored otherwise.
        batch_size : int, default 16
        progress : bool, default False

        Returns
        -------
        X : numpy.ndarray
            ``float32 (N, C)`` (C = 512, 2048, 1536).
        feature_names : list of str
            ``<name>_0000`` ... in channel order.

        Raises
        ------
        WeightsUnavailableError
            If the ImageNet weight file is not on disk.
        """
        array, lungs = self._inputs(images, masks if self.needs_mask else None)
        batch_size = check_batch_size(batch_size)
        model = self.load_model()
        import keras

        rows = []
        bar = tqdm(total=len(array), desc=f"{self.name} features", disable=not progress)
        with bar:
            for start in range(0, len(array), batch_size):
                batch = self.preprocess(array[start : start + batch_size])
                maps = keras.ops.convert_to_numpy(model(batch, training=False)).astype(np.float32)
                if self.pooling == "lung":
                    rows.append(lung_pool(maps, lungs[start : start + batch_size]))
                else:
                    rows.append(maps.mean(axis=(1, 2)))
                bar.update(len(batch))
        X = np.concatenate(rows, axis=0).astype(np.float32)
        return X, [f"{self.name}_{i:04d}" for i in range(X.shape[1])]

    def __repr__(self) -> str:
        return f"CNNFeatures({self.spec.name!r}, pooling={self.pooling!r})"


def factory(backbone: str, pooling: Pooling = "global") -> Callable[..., CNNFeatures]:
    """A registry factory: ``factory("vgg16", "lung")(**options)`` builds the extractor."""
    spec = _backbone_spec(backbone)

    def make(**options: Any) -> CNNFeatures:
        return CNNFeatures(spec.name, pooling, **options)

    make.__name__ = f"{spec.name}_{pooling}"
    return make
