"""Is a predicted mask shaped like two lungs on a frontal chest radiograph?

A segmentation network always returns *something*: given an inverted radiograph, a
lateral view or a photograph it paints a region with the same confidence as on the
films it learnt from. :func:`anatomy_problems` checks the few facts every frontal
(posterior-anterior or anterior-posterior) chest radiograph's lung mask obeys, with
bounds set well outside what the 563 reference masks of the Montgomery and Shenzhen
sets show (their range in brackets):

* two lung fields (connected components), not one;
* one on each side of the image: the centroid of one in the left 45 % of the width, of
  the other in the right 45 % [centroids at 0.20-0.40 and 0.57-0.81 of the width];
* the smaller field at least a tenth the size of the larger [0.10-1.00];
* together 5 % to 55 % of the image [8 % to 43 %].

:mod:`cxrlib.seg.quality` turns a failed check into a flagged mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["AREA_RANGE", "MIN_SIZE_RATIO", "SIDE_LIMIT", "anatomy_problems"]

#: Lung share of the image a plausible mask has (both fields together).
AREA_RANGE: tuple[float, float] = (0.05, 0.55)
#: The smaller lung field's area over the larger one's, at least.
MIN_SIZE_RATIO: float = 0.10
#: Each field's centroid lies within this share of the width from its own edge.
SIDE_LIMIT: float = 0.45

_EIGHT = np.ones((3, 3), dtype=bool)


def anatomy_problems(mask: np.ndarray) -> list[str]:
    """What makes a lung mask implausible on a frontal chest radiograph (empty: nothing).

    Parameters
    ----------
    mask : ndarray, bool, shape (H, W)
        A post-processed mask (the two largest components kept, holes filled).

    Returns
    -------
    list of str
        Short reasons, e.g. ``"one lung field"`` or ``"lung area 0.71 of the image
        (expected 0.05-0.55)"``; an empty list for a plausible mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((100, 100), bool)
    >>> mask[20:80, 15:40] = mask[20:80, 60:85] = True
    >>> anatomy_problems(mask)
    []
    >>> anatomy_problems(mask[:, :50])
    ['one lung field']
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    problems: list[str] = []
    area = float(mask.mean())
    if not AREA_RANGE[0] <= area <= AREA_RANGE[1]:
        problems.append(
            f"lung area {area:.2f} of the image (expected {AREA_RANGE[0]:.2f}-{AREA_RANGE[1]:.2f})"
        )
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return ["no lung found"]
    if count == 1:
        return [*problems, "one lung field"]
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    largest = np.argsort(sizes)[::-1][:2]
    ratio = float(sizes[largest[1]] / sizes[largest[0]])
    if ratio < MIN_SIZE_RATIO:
        problems.append(f"one lung field {ratio:.2f} the size of the other")
    width = mask.shape[1]
    centres = ndimage.center_of_mass(mask, labels, largest + 1)
    columns = sorted(float(c[1]) / max(1, width - 1) for c in centres)
    if columns[0] > SIDE_LIMIT or columns[1] < 1 - SIDE_LIMIT:
        problems.append("the lung fields are not one on each side")
    return problems
