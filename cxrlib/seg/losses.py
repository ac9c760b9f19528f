"""Segmentation losses and training metrics written with ``keras.ops`` only.

Every function takes ``y_true`` and ``y_pred`` of shape ``(N, H, W[, C])``:
``y_true`` a 0/1 mask (any numeric or bool dtype), ``y_pred`` probabilities in
``[0, 1]`` (the sigmoid output of :mod:`cxrlib.seg.models`). Both are cast to
``float32`` first, so losses and metrics stay in float32 under mixed precision.

Losses return one value per image, shape ``(N,)`` (Keras averages them over the
batch, honouring ``sample_weight``):

* :func:`dice_loss`: ``1 - (2 |A.B| + s) / (|A| + |B| + s)`` per image, soft
  (no threshold), smoothing ``s = 1``. Note that the original notebooks
  computed one Dice over the whole flattened batch; per image is what the
  evaluation reports and weighs small and large lungs equally.
* :func:`jaccard_loss`: ``1 - (|A.B| + s) / (|A| + |B| - |A.B| + s)``, ``s = 1``.
* :func:`bce_loss`: pixel-wise binary cross-entropy averaged over each image.
* :func:`bce_dice_loss`: ``bce_loss + dice_loss``.

Metrics for ``model.compile(metrics=...)``: :class:`DiceCoefficient` and
:class:`IoU` (mean over images of the Dice / IoU of the prediction thresholded
at 0.5; an image where both masks are empty scores 1, as in
:func:`cxrlib.seg.metrics.dice`), and :func:`default_metrics`, which adds Keras'
pixel-wise precision and recall at 0.5.

All objects are registered with ``keras.saving.register_keras_serializable(
package="cxrlib")``, so a saved ``.keras`` model reloads with
``keras.models.load_model(path)`` once :mod:`cxrlib.seg.losses` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

__all__ = [
    "SMOOTH",
    "dice_loss",
    "jaccard_loss",
    "bce_loss",
    "bce_dice_loss",
    "dice_coefficient",
    "iou_coefficient",
    "DiceCoefficient",
    "IoU",
    "default_metrics",
    "get_loss",
    "LOSSES",
]

#: Smoothing constant of the soft Dice and Jaccard losses.
SMOOTH = 1.0

_register = keras.saving.register_keras_serializable(package="cxrlib")


def _prepare(y_true: Any, y_pred: Any) -> tuple[Any, Any, tuple[int, ...]]:
    """Cast to float32 and return the axes to reduce over (all but the batch axis)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if len(y_pred.shape) < 2:
        raise ValueError(
            f"y_pred must have a batch axis and image axes (N, H, W[, C]), got shape "
            f"{tuple(y_pred.shape)}"
        )
    axes = tuple(range(1, len(y_pred.shape)))
    return y_true, y_pred, axes


def _overlap(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Per-image intersection and sum of sizes, each ``(N,)`` float32."""
    y_true, y_pred, axes = _prepare(y_true, y_pred)
    y_true = ops.reshape(y_true, ops.shape(y_pred))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return intersection, total


@_register
def dice_coefficient(y_true: Any, y_pred: Any, smooth: float = SMOOTH) -> Any:
    """Soft Dice coefficient per image, ``(2 |A.B| + s) / (|A| + |B| + s)``.

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])
        Reference mask (0/1) and predicted probabilities.
    smooth : float, default 1.0
        Smoothing added to numerator and denominator.

    Returns
    -------
    tensor, float32, shape (N,)
    """
    intersection, total = _overlap(y_true, y_pred)
    return (2.0 * intersection + smooth) / (total + smooth)


@_register
def iou_coefficient(y_true: Any, y_pred: Any, smooth: float = SMOOTH) -> Any:
    """Soft IoU (Jaccard index) per image, ``(|A.B| + s) / (|A| + |B| - |A.B| + s)``.

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])
        Reference mask (0/1) and predicted probabilities.
    smooth : float, default 1.0
        Smoothing added to numerator and denominator.

    Returns
    -------
    tensor, float32, shape (N,)
    """
    intersection, total = _overlap(y_true, y_pred)
    return (intersection + smooth) / (total - intersection + smooth)


@_register
def dice_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice loss per image, ``1 - dice_coefficient`` (smooth = 1).

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])

    Returns
    -------
    tensor, float32, shape (N,)
        0 for a perfect prediction, close to 1 for disjoint masks.
    """
    return 1.0 - dice_coefficient(y_true, y_pred)


@_register
def jaccard_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Jaccard (IoU) loss per image, ``1 - iou_coefficient`` (smooth = 1).

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])

    Returns
    -------
    tensor, float32, shape (N,)
    """
    return 1.0 - iou_coefficient(y_true, y_pred)


@_register
def bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy averaged over the pixels of each image.

    Probabilities are clipped to ``[eps, 1 - eps]`` (Keras' epsilon) before the log.

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])

    Returns
    -------
    tensor, float32, shape (N,)
    """
    y_true, y_pred, axes = _prepare(y_true, y_pred)
    y_true = ops.reshape(y_true, ops.shape(y_pred))
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return ops.mean(bce, axis=axes)


@_register
def bce_dice_loss(y_true: Any, y_pred: Any) -> Any:
    """Sum of :func:`bce_loss` and :func:`dice_loss` per image.

    Parameters
    ----------
    y_true, y_pred : tensor or ndarray, shape (N, H, W[, C])

    Returns
    -------
    tensor, float32, shape (N,)
    """
    return bce_loss(y_true, y_pred) + dice_loss(y_true, y_pred)


#: Loss functions by name (see :func:`get_loss`).
LOSSES: dict[str, Callable[[Any, Any], Any]] = {
    "dice": dice_loss,
    "jaccard": jaccard_loss,
    "bce": bce_loss,
    "bce_dice": bce_dice_loss,
}


def get_loss(name: str | Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Return a loss function by name.

    Parameters
    ----------
    name : str or callable
        ``"dice"``, ``"jaccard"``, ``"bce"`` or ``"bce_dice"`` (case-insensitive;
        ``-`` and ``_loss`` suffixes are accepted, e.g. ``"bce-dice"``,
        ``"dice_loss"``). A callable is returned unchanged.

    Returns
    -------
    callable
        ``loss(y_true, y_pred) -> (N,)`` tensor.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known names.
    """
    if callable(name):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = key.removesuffix("_loss")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[key]


def _hard_scores(y_true: Any, y_pred: Any, threshold: float) -> tuple[Any, Any]:
    """Per-image Dice and IoU of ``y_pred > threshold`` vs ``y_true > 0.5``; empty/empty = 1."""
    y_true, y_pred, axes = _prepare(y_true, y_pred)
    y_true = ops.reshape(y_true, ops.shape(y_pred))
    truth = ops.cast(y_true > 0.5, "float32")
    pred = ops.cast(y_pred > threshold, "float32")
    intersection = ops.sum(truth * pred, axis=axes)
    total = ops.sum(truth, axis=axes) + ops.sum(pred, axis=axes)
    union = total - intersection
    empty = total <= 0.0
    safe_total = ops.where(empty, 1.0, total)
    safe_union = ops.where(empty, 1.0, union)
    dice = ops.where(empty, 1.0, 2.0 * intersection / safe_total)
    iou = ops.where(empty, 1.0, intersection / safe_union)
    return dice, iou


class _MeanPerImageScore(keras.metrics.Metric):
    """Mean over images of a thresholded overlap score (float32 state)."""

    _index = 0

    def __init__(self, threshold: float = 0.5, name: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add the scores of one batch.

        ``sample_weight`` weighs images: shape ``(N,)``, or per pixel, in which
        case each image's weight is the mean of its pixel weights.
        """
        scores = _hard_scores(y_true, y_pred, self.threshold)[self._index]
        if sample_weight is None:
            weights = ops.ones_like(scores)
        else:
            weights = ops.cast(sample_weight, "float32")
            if len(weights.shape) > 1:
                weights = ops.mean(weights, axis=tuple(range(1, len(weights.shape))))
            weights = ops.broadcast_to(weights, ops.shape(scores))
        self.total.assign_add(ops.sum(scores * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self) -> Any:
        """Mean score so far (0 before any update)."""
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        """Forget all batches."""
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        """Serializable configuration."""
        return {**super().get_config(), "threshold": self.threshold}


@_register
class DiceCoefficient(_MeanPerImageScore):
    """Mean per-image Dice of the prediction thresholded at ``threshold``.

    Matches :func:`cxrlib.seg.metrics.dice` averaged over images (an image with both
    masks empty scores 1).

    Parameters
    ----------
    threshold : float, default 0.5
        Probabilities above it count as lung.
    name : str, default "dice"
    """

    _index = 0

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)


@_register
class IoU(_MeanPerImageScore):
    """Mean per-image IoU (Jaccard index) of the prediction thresholded at ``threshold``.

    Matches :func:`cxrlib.seg.metrics.iou` averaged over images (an image with both
    masks empty scores 1).

    Parameters
    ----------
    threshold : float, default 0.5
        Probabilities above it count as lung.
    name : str, default "iou"
    """

    _index = 1

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)


def default_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """Metrics for ``model.compile``: Dice, IoU, pixel precision and recall.

    Parameters
    ----------
    threshold : float, default 0.5
        Decision threshold of every metric.

    Returns
    -------
    list of keras.metrics.Metric
        Fresh metric objects named ``dice``, ``iou``, ``precision``, ``recall``.
    """
    return [
        DiceCoefficient(threshold=threshold),
        IoU(threshold=threshold),
        keras.metrics.Precision(thresholds=threshold, name="precision"),
        keras.metrics.Recall(thresholds=threshold, name="recall"),
    ]
