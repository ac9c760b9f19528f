"""The lung regions the hand-crafted features are measured in: each lung and its thirds.

Left and right are the patient's: in a PA radiograph the patient's right lung is on the
image's left. The two lungs are the two largest connected components of the mask (when the
second has at least 10% of the first's area); a single component that spans the image
centre is split at the centre column (:func:`split_lungs`). Each lung is cut into an
upper, middle and lower third by the rows of its bounding box (:func:`lung_regions`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["SIDES", "ZONES", "lung_regions", "split_lungs"]

#: The zones of each lung, top to bottom.
ZONES = ("upper", "middle", "lower")
#: The patient's sides.
SIDES = ("right", "left")
_MIN_SECOND_LUNG = 0.1  # area of the second component relative to the first


def split_lungs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a lung-field mask into the patient's right and left lung.

    Parameters
    ----------
    mask : numpy.ndarray
        ``bool (H, W)`` lung field (both lungs).

    Returns
    -------
    right, left : numpy.ndarray
        ``bool (H, W)`` masks of the patient's right lung (image left) and left
        lung (image right). The two largest 8-connected components are the
        lungs when the smaller has at least 10% of the larger's area (smaller
        specks are dropped); otherwise the mask is split at the image's centre
        column (a lung missing from the mask gives an empty one).
    """
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count >= 2:
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        first, second = np.argsort(areas)[::-1][:2] + 1
        if areas[second - 1] >= _MIN_SECOND_LUNG * areas[first - 1]:
            a, b = labels == first, labels == second
            if _centre_column(a) > _centre_column(b):
                a, b = b, a
            return a, b
    centre = mask.shape[1] // 2
    right, left = mask.copy(), mask.copy()
    right[:, centre:] = False
    left[:, :centre] = False
    return right, left


def _centre_column(region: np.ndarray) -> float:
    return float(np.nonzero(region)[1].mean())


def _zones(lung: np.ndarray) -> list[np.ndarray]:
    """Upper, middle and lower third (by rows of its bounding box) of one lung."""
    rows = np.flatnonzero(lung.any(axis=1))
    if rows.size == 0:
        return [lung.copy() for _ in ZONES]
    top, height = rows[0], rows[-1] - rows[0] + 1
    cuts = [top + round(height * k / 3) for k in range(4)]
    zones = []
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        zone = np.zeros_like(lung)
        zone[start:stop] = lung[start:stop]
        zones.append(zone)
    return zones


def lung_regions(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The nine regions the features are measured in.

    Parameters
    ----------
    mask : numpy.ndarray
        ``bool (H, W)`` lung field.

    Returns
    -------
    dict of str to numpy.ndarray
        ``bool (H, W)`` masks, in order: ``lungs``, ``right``, ``left``,
        ``right_upper``, ``right_middle``, ``right_lower``, ``left_upper``,
        ``left_middle``, ``left_lower``.
    """
    mask = np.asarray(mask, dtype=bool)
    right, left = split_lungs(mask)
    regions = {"lungs": mask, "right": right, "left": left}
    for side, lung in (("right", right), ("left", left)):
        for zone, region in zip(ZONES, _zones(lung), strict=True):
            regions[f"{side}_{zone}"] = region
    return regions
