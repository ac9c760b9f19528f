"""Clean predicted lung masks: keep the largest components, fill holes.

A chest radiograph has two lungs, so a predicted mask is cleaned by keeping its
``k = 2`` largest connected components (8-connectivity) and filling the holes
inside them (background regions, 4-connected, that do not touch the image
border; the result of :func:`scipy.ndimage.binary_fill_holes`, computed faster). This
is what :func:`cxrlib.seg.folder.segment_folder` and the TB pipeline apply to
predicted masks. Every function accepts one mask ``(H, W)`` or ``(H, W, 1)``, or a
batch ``(N, H, W)`` or ``(N, H, W, 1)``, and returns a ``bool`` array of the
same shape. Numeric input is thresholded at ``threshold`` (default 0.5), so
probability maps can be passed directly.

Note the shape rule: a 3-D array whose last axis has length 1 is one mask with
a channel axis; any other 3-D array is a batch ``(N, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["keep_largest_components", "fill_holes", "postprocess_mask"]

_EIGHT = np.ones((3, 3), dtype=bool)


def _binarize(mask: Any, threshold: float) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"mask must be bool or numeric, got dtype {array.dtype}")
    return array > threshold


def _apply(mask: Any, func: Callable[[np.ndarray], np.ndarray], threshold: float) -> np.ndarray:
    """Apply a 2-D bool -> bool function to one mask or each mask of a batch."""
    array = _binarize(mask, threshold)
    shape = array.shape
    if array.ndim == 2:
        return func(array)
    if array.ndim == 3 and shape[-1] == 1:
        return func(array[..., 0])[..., None]
    if array.ndim == 3:
        return np.stack([func(m) for m in array]) if shape[0] else array.copy()
    if array.ndim == 4 and shape[-1] == 1:
        planes = [func(m) for m in array[..., 0]]
        return np.stack(planes)[..., None] if planes else array.copy()
    raise ValueError(
        f"mask must have shape (H, W), (H, W, 1), (N, H, W) or (N, H, W, 1), got {shape}"
    )


def _largest_2d(mask: np.ndarray, k: int) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count <= k:
        return mask.copy()
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    # stable sort: among equal sizes the component found first (raster order) wins
    keep = np.argsort(-sizes, kind="stable")[:k] + 1
    return np.isin(labels, keep)


def _fill_2d(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of one mask: background regions (4-connected) off the border.

    The result of :func:`scipy.ndimage.binary_fill_holes`, from one labelling of the
    background instead of an iterative flood fill (about 4x faster on 512 x 512 masks).
    """
    background, count = ndimage.label(~mask)
    if count == 0 or mask.size == 0:
        return mask.copy()
    edges = (background[0], background[-1], background[:, 0], background[:, -1])
    is_hole = np.ones(count + 1, bool)
    is_hole[np.unique(np.concatenate(edges))] = False
    is_hole[0] = False  # label 0 is the mask itself
    return mask | is_hole[background]


def keep_largest_components(mask: Any, k: int = 2, *, threshold: float = 0.5) -> np.ndarray:
    """Keep the ``k`` largest 8-connected components of each mask.

    Parameters
    ----------
    mask : ndarray, shape (H, W), (H, W, 1), (N, H, W) or (N, H, W, 1)
        Bool, or numeric thresholded at ``threshold``.
    k : int, default 2
        Components to keep (two lungs). Ties are broken in raster order.
    threshold : float, default 0.5
        Values above it are foreground (numeric input only).

    Returns
    -------
    ndarray, bool, same shape as ``mask``
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return _apply(mask, lambda m: _largest_2d(m, int(k)), threshold)


def fill_holes(mask: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Fill background regions not connected to the image border (4-connected).

    Parameters
    ----------
    mask : ndarray, shape (H, W), (H, W, 1), (N, H, W) or (N, H, W, 1)
        Bool, or numeric thresholded at ``threshold``.
    threshold : float, default 0.5

    Returns
    -------
    ndarray, bool, same shape as ``mask``
    """
    return _apply(mask, _fill_2d, threshold)


def postprocess_mask(
    mask: Any, k: int | None = 2, fill: bool = True, *, threshold: float = 0.5
) -> np.ndarray:
    """Keep the ``k`` largest components, then (optionally) fill their holes.

    Parameters
    ----------
    mask : ndarray, shape (H, W), (H, W, 1), (N, H, W) or (N, H, W, 1)
        Bool, or numeric (e.g. probabilities) thresholded at ``threshold``.
    k : int or None, default 2
        Components to keep; ``None`` keeps all.
    fill : bool, default True
        Fill holes after selecting components.
    threshold : float, default 0.5

    Returns
    -------
    ndarray, bool, same shape as ``mask`` (a new array)
    """
    if k is not None and (not isinstance(k, int | np.integer) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")

    def clean(plane: np.ndarray) -> np.ndarray:
        out = plane if k is None else _largest_2d(plane, int(k))
        return _fill_2d(out) if fill else out.copy()

    return _apply(mask, clean, threshold)
