"""Occlusion sensitivity: which parts of a radiograph push a classifier towards TB.

A square patch slides over the image; at each position the patch is replaced by
a featureless version of itself (a strong blur, its mean, or a constant) and the
whole pipeline scores the occluded image again. The drop of the TB probability,

    ``sensitivity(patch) = score(original) - score(occluded)``,

is spread over the patch's pixels and averaged where patches overlap. Positive
values mark regions whose content supports "TB"; negative values regions whose
content argues for "normal".

The method needs nothing but a scoring function ``score(images, masks)`` (a
batch of images with their lung masks in, TB probabilities out), so it works
for any feature extractor and classifier (Zeiler and Fergus, 2014). The lung
masks stay fixed while the image is occluded: the map explains the
classification of the lung contents, not the segmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

__all__ = ["OcclusionMap", "occlusion_map", "occlusion_maps", "patch_positions", "select_examples"]

ScoreFn = Callable[[np.ndarray, np.ndarray], Any]


@dataclass
class OcclusionMap:
    """The occlusion sensitivity of one radiograph.

    Attributes
    ----------
    heatmap : numpy.ndarray
        ``float32 (H, W)``: mean drop of the TB probability when the pixel is
        occluded (0 where no patch was evaluated).
    base_score : float
        TB probability of the unoccluded image.
    n_patches : int
        Patch positions evaluated.
    patch, stride : int
    """

    heatmap: np.ndarray
    base_score: float
    n_patches: int
    patch: int
    stride: int


def patch_positions(
    shape: tuple[int, int],
    patch: int,
    stride: int,
    mask: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Top-left corners of the patches, covering the whole image.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)`` of the image.
    patch : int
        Patch side in pixels (at most ``min(H, W)``).
    stride : int
        Step between patches; the last row and column of patches are aligned
        with the image border so that every pixel is covered.
    mask : numpy.ndarray, optional
        ``bool (H, W)``: keep only patches that overlap it.

    Returns
    -------
    list of (int, int)
        ``(row, column)`` corners, row by row.
    """
    height, width = (int(s) for s in shape)
    for name, value in (("patch", patch), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if patch > min(height, width):
        raise ValueError(f"patch {patch} is larger than the image ({height}x{width})")

    def starts(size: int) -> list[int]:
        values = list(range(0, size - patch + 1, stride))
        if values[-1] != size - patch:
            values.append(size - patch)
        return values

    corners = [(r, c) for r in starts(height) for c in starts(width)]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"mask shape {mask.shape} differs from the image's {(height, width)}")
        corners = [(r, c) for r, c in corners if mask[r : r + patch, c : c + patch].any()]
    return corners


def _fill_image(image: np.ndarray, patch: int, fill: str | float) -> np.ndarray | None:
    """The image a patch is replaced with (None: each patch's own mean)."""
    if isinstance(fill, str):
        if fill == "blur":
            return ndimage.gaussian_filter(image, sigma=max(patch / 2.0, 1.0), mode="reflect")
        if fill == "mean":
            return None
        raise ValueError(f"fill must be 'blur', 'mean' or a number, got {fill!r}")
    value = float(fill)
    if not np.isfinite(value):
        raise ValueError(f"fill must be finite, got {fill!r}")
    return np.full_like(image, value)


def _scores(score: ScoreFn, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    values = np.asarray(score(images, masks), dtype=np.float64).ravel()
    if values.shape != (len(images),):
        raise ValueError(
            f"score returned {values.size} values for {len(images)} images; it must return "
            "one TB probability per image"
        )
    return values


def occlusion_map(
    score: ScoreFn,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    patch: int,
    stride: int | None = None,
    fill: str | float = "blur",
    lungs_only: bool = True,
    batch_size: int = 32,
    progress: bool = False,
) -> OcclusionMap:
    """Occlusion sensitivity map of one radiograph.

    Parameters
    ----------
    score : callable
        ``score(images float32 (n, H, W), masks bool (n, H, W)) -> (n,)`` TB
        probabilities, e.g. :meth:`cxrlib.tb.predictor.TBPredictor.score`.
    image : numpy.ndarray
        ``float32 (H, W)`` radiograph in ``[0, 1]``.
    mask : numpy.ndarray
        ``bool (H, W)`` lung mask (kept fixed).
    patch : int
        Side of the occluding patch in pixels.
    stride : int, optional
        Step between patches (default ``patch // 2``).
    fill : {"blur", "mean"} or float, default "blur"
        Replace the patch by a Gaussian blur of the image (sigma ``patch / 2``),
        by the patch's own mean, or by a constant.
    lungs_only : bool, default True
        Evaluate only patches that overlap the lung mask (lung features cannot
        change elsewhere); the map is 0 outside them.
    batch_size : int, default 32
        Occluded images scored per call.
    progress : bool, default False

    Returns
    -------
    OcclusionMap
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 2 or mask.shape != image.shape:
        raise ValueError(
            f"image and mask must be 2-D arrays of one shape, got {image.shape} and {mask.shape}"
        )
    stride = max(1, patch // 2) if stride is None else stride
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    corners = patch_positions(image.shape, patch, stride, mask if lungs_only else None)
    filler = _fill_image(image, patch, fill)
    base = float(_scores(score, image[None], mask[None])[0])
    total = np.zeros(image.shape, np.float64)
    count = np.zeros(image.shape, np.float64)
    bar = tqdm(total=len(corners), desc="Occlusion", disable=not progress)
    with bar:
        for begin in range(0, len(corners), batch_size):
            part = corners[begin : begin + batch_size]
            batch = np.repeat(image[None], len(part), axis=0)
            for k, (r, c) in enumerate(part):
                window = (slice(r, r + patch), slice(c, c + patch))
                if filler is None:
                    batch[k][window] = image[window].mean()
                else:
                    batch[k][window] = filler[window]
            drops = base - _scores(score, batch, np.repeat(mask[None], len(part), axis=0))
            for (r, c), drop in zip(part, drops, strict=True):
                total[r : r + patch, c : c + patch] += drop
                count[r : r + patch, c : c + patch] += 1
            bar.update(len(part))
    heatmap = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return OcclusionMap(heatmap.astype(np.float32), base, len(corners), int(patch), int(stride))


def occlusion_maps(
    score: ScoreFn,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    patch: int,
    stride: int | None = None,
    fill: str | float = "blur",
    lungs_only: bool = True,
    batch_size: int = 32,
    progress: bool = False,
) -> list[OcclusionMap]:
    """:func:`occlusion_map` of each radiograph of a batch.

    Parameters
    ----------
    images : numpy.ndarray
        ``float32 (N, H, W)`` (or ``(N, H, W, 1)``).
    masks : numpy.ndarray
        ``bool (N, H, W)`` (or ``(N, H, W, 1)``).
    Other parameters
        As in :func:`occlusion_map`.

    Returns
    -------
    list of OcclusionMap
        One per image, in order.
    """
    images, masks = _squeeze(images, "images"), _squeeze(masks, "masks")
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    bar = tqdm(total=len(images), desc="Occlusion maps", disable=not progress)
    out = []
    with bar:
        for image, mask in zip(images, masks, strict=True):
            out.append(
                occlusion_map(
                    score,
                    image,
                    mask,
                    patch=patch,
                    stride=stride,
                    fill=fill,
                    lungs_only=lungs_only,
                    batch_size=batch_size,
                )
            )
            bar.update()
    return out


def _squeeze(array: Any, name: str) -> np.ndarray:
    values = np.asarray(array)
    if values.ndim == 4 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {values.shape}")
    return values


def select_examples(
    y: Sequence[int] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    n: int = 2,
) -> np.ndarray:
    """Indices of ``n`` confidently-correct TB and ``n`` normal cases, for saliency figures.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    p : array_like, shape (N,)
        Out-of-fold TB probabilities.
    n : int, default 2

    Returns
    -------
    numpy.ndarray
        ``int64 (<= 2 n,)``: the ``n`` TB cases with the highest probability,
        then the ``n`` normal cases with the lowest (fewer when a class has fewer).
    """
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} labels but p has {p.size} probabilities")
    tb = np.flatnonzero(y == 1)
    normal = np.flatnonzero(y == 0)
    tb = tb[np.argsort(-p[tb], kind="stable")][:n]
    normal = normal[np.argsort(p[normal], kind="stable")][:n]
    return np.concatenate([tb, normal]).astype(np.int64)
