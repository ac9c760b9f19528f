"""Features from a trained segmentation network's bottleneck (its deepest encoder map).

A U-Net or ResUNet (:mod:`cxrlib.seg.models`) trained to find the lungs has learnt a
compact description of the radiograph at its bottleneck. :class:`EncoderFeatures`
reads that feature map and averages it twice: over the whole map
(``encoder_gap_*``) and over the lungs (``encoder_lung_*``, each position
weighted by the fraction of its area inside the lung mask resized to the
bottleneck's resolution). Without given masks, the network's own segmentation
(probability > ``threshold``) is used, so the extractor needs nothing but the
images.

**Finding the bottleneck.** Among the model's layers whose output is a 4-D
feature map ``(N, h, w, C)``, those with the smallest spatial size ``h * w`` are
the bottleneck level; the *last* of them in the model's (topological) layer
order is taken, i.e. the output of the bottleneck block just before the
decoder's first up-sampling (``bottleneck_act2`` / its dropout in
:func:`cxrlib.seg.models.build_unet`, ``bridge2_conv`` / its dropout in
:func:`cxrlib.seg.models.build_resunet`). Pass ``layer=`` to pick another layer.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from tqdm import tqdm

from cxrlib.preprocess import resize_image
from cxrlib.tb.features.base import (
    FeatureError,
    FeatureExtractor,
    FeatureSet,
    check_batch_size,
    check_masks,
)
from cxrlib.tb.features.cnn import lung_pool

__all__ = ["EncoderFeatures", "find_bottleneck"]


def _spatial_shape(layer: Any) -> tuple[int, int] | None:
    """``(h, w)`` of a layer's single 4-D output, or None."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # no or several outputs
        return None
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def find_bottleneck(model: Any) -> str:
    """Name of the bottleneck layer of an encoder-decoder network.

    Parameters
    ----------
    model : keras.Model
        A functional model, e.g. from :func:`cxrlib.seg.models.build_unet`.

    Returns
    -------
    str
        The last layer (in ``model.layers`` order) whose 4-D output has the
        smallest spatial size ``h * w``.

    Raises
    ------
    FeatureError
        If no layer has a 4-D output of known size.
    """
    best, best_area = None, None
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        shape = _spatial_shape(layer)
        if shape is None:
            continue
        area = shape[0] * shape[1]
        if best_area is None or area <= best_area:
            best, best_area = layer.name, area
    if best is None:
        raise FeatureError(
            f"model {model.name!r} has no layer with a 4-D (N, h, w, C) output of known size; "
            "is it a segmentation network?"
        )
    return best


def _load(model: Any) -> Any:
    if not isinstance(model, str | os.PathLike):
        if not hasattr(model, "layers") or not hasattr(model, "inputs"):
            raise FeatureError(
                f"model must be a keras.Model or the path of a saved one, got {type(model)}"
            )
        return model
    import keras

    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FeatureError(f"segmentation model file {path!r} does not exist")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as error:
        raise FeatureError(f"could not load the segmentation model {path!r}: {error}") from None


class EncoderFeatures(FeatureExtractor):
    """Bottleneck features of a segmentation U-Net/ResUNet, pooled globally and in the lungs.

    Parameters
    ----------
    model : keras.Model or path
        The trained segmentation network, or a saved ``.keras`` / ``.h5`` file.
    layer : str, optional
        Name of the layer to read; default :func:`find_bottleneck`.
    threshold : float, default 0.5
        Probability above which the network's own output counts as lung (used
        when :meth:`extract` gets no masks).

    Attributes
    ----------
    layer : str
        The layer read.
    """

    name = "encoder"
    needs_mask = False

    def __init__(self, model: Any, *, layer: str | None = None, threshold: float = 0.5) -> None:
        self.model = _load(model)
        self.layer = layer or find_bottleneck(self.model)
        names = [lay.name for lay in self.model.layers]
        if self.layer not in names:
            raise FeatureError(f"model {self.model.name!r} has no layer {self.layer!r}")
        if _spatial_shape(self.model.get_layer(self.layer)) is None:
            raise FeatureError(f"layer {self.layer!r} does not output a 4-D feature map")
        if not 0.0 < float(threshold) < 1.0:
            raise FeatureError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self._reader: Any = None

    def _feature_model(self) -> Any:
        if self._reader is None:
            import keras

            inputs = self.model.inputs
            inputs = inputs[0] if len(inputs) == 1 else inputs
            outputs = [self.model.get_layer(self.layer).output, self.model.outputs[0]]
            self._reader = keras.Model(inputs, outputs, name="encoder_features")
        return self._reader

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """Resize ``(n, H, W)`` images to the model's input ``(n, H', W', C)``."""
        _, height, width, channels = self.model.inputs[0].shape
        if (height, width) != images.shape[1:]:
            if height is None or width is None:
                raise FeatureError("the model's input size is not fixed; resize images first")
            images = np.stack([resize_image(im, (height, width)) for im in images])
        return np.repeat(images[..., None], channels or 1, axis=-1).astype(np.float32)

    def extract(
        self,
        images: Any,
        masks: Any = None,
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> FeatureSet:
        """Bottleneck features of a batch of radiographs.

        Parameters
        ----------
        images : array_like, shape (N, H, W) or (N, H, W, 1)
            ``float32`` radiographs in ``[0, 1]``, resized to the model's input
            size if needed.
        masks : array_like, shape (N, H, W) or (N, H, W, 1), optional
            ``bool`` lung masks for the lung pooling; default: the model's own
            segmentation.
        batch_size : int, default 16
        progress : bool, default False

        Returns
        -------
        X : numpy.ndarray
            ``float32 (N, 2 C)``: ``C`` global averages, then ``C`` lung averages.
        feature_names : list of str
            ``encoder_gap_0000`` ..., ``encoder_lung_0000`` ...
        """
        array, lungs = self._inputs(images, None)
        if masks is not None:
            lungs = check_masks(masks, array.shape, allow_empty=True)
        batch_size = check_batch_size(batch_size)
        reader = self._feature_model()
        import keras

        rows, empty = [], []
        bar = tqdm(total=len(array), desc="Encoder features", disable=not progress)
        with bar:
            for start in range(0, len(array), batch_size):
                batch = array[start : start + batch_size]
                maps, probs = reader(self._prepare(batch), training=False)
                maps = keras.ops.convert_to_numpy(maps).astype(np.float32)
                if lungs is None:
                    probs = keras.ops.convert_to_numpy(probs).astype(np.float32)
                    batch_masks = probs[..., 0] > self.threshold
                else:
                    batch_masks = lungs[start : start + batch_size]
                empty += [start + i for i, m in enumerate(batch_masks) if not m.any()]
                pooled = [maps.mean(axis=(1, 2)), lung_pool(maps, batch_masks)]
                rows.append(np.concatenate(pooled, axis=1))
                bar.update(len(batch))
        if empty:
            warnings.warn(
                f"encoder features: image(s) {empty[:10]} have no lung pixels; their lung "
                "features are the global averages",
                stacklevel=2,
            )
        X = np.concatenate(rows, axis=0).astype(np.float32)
        channels = X.shape[1] // 2
        names = [f"encoder_{kind}_{i:04d}" for kind in ("gap", "lung") for i in range(channels)]
        return X, names
