"""The feature-extractor interface and the input checks every extractor shares.

An extractor is a small object with a ``name``, a ``needs_mask`` flag and an
``extract(images, masks)`` method that turns a batch of radiographs into a
feature matrix ``float32 (N, D)`` and ``D`` feature names. Images are the
arrays of :func:`cxrlib.preprocess.load_arrays`: ``float32 (N, H, W, 1)`` (or
``(N, H, W)``) in ``[0, 1]``; masks are ``bool`` arrays of the same shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from cxrlib.errors import CxrlibError

__all__ = [
    "FeatureError",
    "FeatureExtractor",
    "FeatureSet",
    "check_images",
    "check_masks",
]

#: What every extractor returns: ``(X float32 (N, D), feature_names list of D str)``.
FeatureSet = tuple[np.ndarray, list[str]]

_MAX_LISTED = 10


class FeatureError(CxrlibError, ValueError):
    """Bad input to a feature extractor (shape, dtype, values, missing masks)."""


def _listed(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_MAX_LISTED])
    more = f", ... ({len(indices) - _MAX_LISTED} more)" if len(indices) > _MAX_LISTED else ""
    return shown + more


def check_images(images: Any, name: str = "images", *, unit_range: bool = False) -> np.ndarray:
    """Validate a batch of gray images and return it as ``float32 (N, H, W)``.

    Parameters
    ----------
    images : array_like, shape (N, H, W) or (N, H, W, 1)
        Gray radiographs, real numbers (typically in ``[0, 1]``).
    name : str
        Parameter name used in error messages.
    unit_range : bool, default False
        Require values in ``[0, 1]`` (with a tolerance of 1e-3).

    Returns
    -------
    numpy.ndarray
        ``float32 (N, H, W)``.

    Raises
    ------
    FeatureError
        For a wrong shape, a non-numeric dtype, no images, NaN/infinite values
        (the message lists the offending image indices) or, with
        ``unit_range``, values outside ``[0, 1]``.
    """
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise FeatureError(
            f"{name} must have shape (N, H, W) or (N, H, W, 1), got {np.shape(images)}"
        )
    if array.shape[0] == 0 or min(array.shape[1:]) < 2:
        raise FeatureError(
            f"{name} must be a batch (N, H, W) of at least one image of 2x2 pixels or more, "
            f"got shape {np.shape(images)} (for a single image pass image[None])"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise FeatureError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=(1, 2)))
    if bad.size:
        raise FeatureError(f"{name} contain NaN or infinite values in image(s) {_listed(bad)}")
    if unit_range:
        lo, hi = float(array.min()), float(array.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise FeatureError(
                f"{name} must have values in [0, 1], got [{lo:.4g}, {hi:.4g}]; scale them "
                "first (e.g. divide 8-bit values by 255), as cxrlib.preprocess.load_arrays does"
            )
    return array


def check_masks(
    masks: Any, shape: tuple[int, ...], name: str = "masks", *, allow_empty: bool = False
) -> np.ndarray:
    """Validate lung masks for a batch of images and return them as ``bool (N, H, W)``.

    Parameters
    ----------
    masks : array_like, shape (N, H, W) or (N, H, W, 1)
        Lung masks; bool, or numbers thresholded at 0.5.
    shape : tuple of int
        ``(N, H, W)`` of the images they belong to.
    name : str
        Parameter name used in error messages.
    allow_empty : bool, default False
        Accept masks without any lung pixel.

    Returns
    -------
    numpy.ndarray
        ``bool (N, H, W)``.

    Raises
    ------
    FeatureError
        If the shape differs from the images' or a mask is empty (the message
        lists the image indices).
    """
    array = np.asarray(masks)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != tuple(shape):
        raise FeatureError(
            f"{name} shape {np.shape(masks)} does not match the images' shape {tuple(shape)} "
            "(one (H, W) mask per image)"
        )
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number):
            raise FeatureError(f"{name} must be bool or numeric, got dtype {array.dtype}")
        array = array > 0.5
    if not allow_empty:
        empty = np.flatnonzero(~array.any(axis=(1, 2)))
        if empty.size:
            raise FeatureError(
                f"{name}: image(s) {_listed(empty)} have an empty lung mask; lung features "
                "need at least one lung pixel (drop those images or fix their masks)"
            )
    return array


class FeatureExtractor(ABC):
    """Base class of the feature extractors.

    Attributes
    ----------
    name : str
        Registry name, also the prefix of the feature names.
    needs_mask : bool
        Whether :meth:`extract` requires lung masks.
    """

    name: str = "base"
    needs_mask: bool = False

    def __call__(self, images: Any, masks: Any = None, **kwargs: Any) -> FeatureSet:
        """Shortcut for :meth:`extract`."""
        return self.extract(images, masks, **kwargs)

    def _inputs(self, images: Any, masks: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Validate images (values in [0, 1]) and, if given or needed, masks."""
        array = check_images(images, unit_range=True)
        if masks is None:
            if self.needs_mask:
                raise FeatureError(
                    f"feature extractor {self.name!r} needs lung masks: pass masks= (the "
                    "ground-truth masks, or those predicted by a segmentation model)"
                )
            return array, None
        return array, check_masks(masks, array.shape)

    @abstractmethod
    def extract(
        self,
        images: Any,
        masks: Any = None,
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> FeatureSet:
        """Compute features for a batch of radiographs.

        Parameters
        ----------
        images : array_like, shape (N, H, W) or (N, H, W, 1)
            Gray radiographs, ``float32`` in ``[0, 1]``.
        masks : array_like, shape (N, H, W) or (N, H, W, 1), optional
            Lung masks (``bool``); required when :attr:`needs_mask` is true.
        batch_size : int, default 16
            Images per batch (network inference) or per worker task.
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        X : numpy.ndarray
            ``float32 (N, D)``.
        feature_names : list of str
            ``D`` names, in column order.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_batch_size(batch_size: Any) -> int:
    """Return ``batch_size`` as a positive int or raise :class:`FeatureError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise FeatureError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise FeatureError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)
