"""What segmenting one radiograph writes: lung areas, an overlay picture, PNG bytes.

* :func:`lung_areas`: the mask's share of the image, split into the patient's right and
  left lung by the column of each component's centroid (on a posterior-anterior
  radiograph the patient's **right** lung is on the image's **left** half).
* :func:`overlay_indices` / :func:`overlay_image`: the radiograph in grey with the lungs
  tinted green and outlined in yellow, as palette indices (small PNGs) or RGB.
* :func:`png_bytes`: fast PNG encoding (zlib level 1) of a mask or an overlay.

:mod:`cxrlib.seg.folder` writes these for every image of a folder.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["OVERLAY_PALETTE", "lung_areas", "overlay_image", "overlay_indices", "png_bytes"]

_EIGHT = np.ones((3, 3), bool)


def _labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, count = ndimage.label(mask, structure=_EIGHT)
    return labels, int(count)


def lung_areas(mask: np.ndarray) -> tuple[float, float, float]:
    """Lung area fractions of one mask: total, patient's right, patient's left.

    Parameters
    ----------
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    (total, right, left) : tuple of float
        Shares of the image area. Each 8-connected component goes to the side of
        its centroid: the image's left half is the patient's right lung.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    labels, count = _labels(mask)
    if count == 0:
        return 0.0, 0.0, 0.0
    height, width = mask.shape
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:]
    columns = np.tile(np.arange(width, dtype=np.float64), height)
    centroids = np.bincount(flat, weights=columns, minlength=count + 1)[1:] / sizes
    on_image_left = centroids < (width - 1) / 2.0
    area = float(mask.size)
    right, left = float(sizes[on_image_left].sum()), float(sizes[~on_image_left].sum())
    return (right + left) / area, right / area, left / area


def _overlay_palette() -> list[int]:
    grey = [2 * i + 1 for i in range(128)]
    palette = [value for g in grey for value in (g, g, g)]
    tint = np.array([26, 230, 77], np.float64)
    for g in grey[:127]:
        palette.extend(int(round(0.65 * g + 0.35 * t)) for t in tint)
    palette.extend([255, 217, 0])  # outline
    return palette


OVERLAY_PALETTE = _overlay_palette()
"""The overlay's 256 RGB entries, flattened (``Image.putpalette`` order)."""


def overlay_indices(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Palette indices of the overlay: 128 grey levels, 127 tinted levels, an outline.

    Parameters
    ----------
    image : ndarray, float, shape (H, W), values in [0, 1]
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    ndarray, uint8, shape (H, W)
        0..127 grey outside the lungs, 128..254 tinted inside, 255 the outline.
    """
    mask = np.asarray(mask, dtype=bool)
    grey = (np.clip(np.asarray(image, np.float32), 0, 1) * 255.0).astype(np.uint8) >> 1
    index = grey.copy()
    index[mask] = 128 + np.minimum(grey[mask], 126)
    width = max(1, min(mask.shape) // 512)
    inner = mask.copy()
    for _ in range(width):  # erode with a 4-neighbour cross (border pixels stay inside)
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    index[mask & ~inner] = 255
    return index


def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey radiograph with the lung mask tinted green and outlined in yellow.

    Parameters
    ----------
    image : ndarray, float, shape (H, W), values in [0, 1]
    mask : ndarray, bool, shape (H, W)

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)
    """
    palette = np.asarray(OVERLAY_PALETTE, np.uint8).reshape(-1, 3)
    return palette[overlay_indices(image, mask)]


def png_bytes(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """Encode a uint8 (H, W) array (or palette indices) as PNG, fast (zlib level 1)."""
    picture = Image.fromarray(array)
    if palette is not None:
        picture.putpalette(palette)  # an "L" image becomes a palette ("P") image
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
