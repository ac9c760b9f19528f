"""Image-derived TB statistics: what the radiographs themselves say about the label.

Every folder has images, not every folder has clinical readings. This module measures the
lung fields of each radiograph (:func:`lung_appearance`), compares the measures between the
normal and the TB radiographs of each site (:func:`appearance_by_label`), and averages the
two groups pixel by pixel (:func:`mean_difference_image`). Functions take plain numpy
arrays and the dataset table of :func:`cxrlib.data.datasets.scan_dataset`, and return
pandas tables or numpy arrays.

Left and right are the patient's (the patient's right lung is on the image's left); the
lungs and their upper and lower thirds are those of
:func:`cxrlib.tb.features.regions.lung_regions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from cxrlib.book.explore import _squeeze, lung_statistics
from cxrlib.tb.features.regions import SIDES, lung_regions

__all__ = [
    "FEATURES",
    "lung_appearance",
    "appearance_by_label",
    "mean_difference_image",
]

#: The measures of :func:`lung_appearance`, in column order.
FEATURES: tuple[str, ...] = (
    "lung_fraction",
    "lung_mean",
    "lung_std",
    "lung_texture",
    "upper_minus_lower",
    "left_right_asymmetry",
)

_TEXTURE_SIGMA = 1.0  # pixels: scale of the gradient behind lung_texture
_TEXTURE_MARGIN = 3  # pixels eroded from the mask so the lung edge does not count as texture


def _labels(labels: object, n: int) -> np.ndarray:
    """Labels as ``float`` ``(n,)``: 0 normal, 1 TB, NaN unknown."""
    values = pd.to_numeric(pd.Series(list(np.asarray(labels, dtype=object))), errors="coerce")
    array = values.to_numpy(dtype=float, na_value=np.nan)
    if array.shape != (n,):
        raise ValueError(f"labels has {array.shape[0]} entries but there are {n} images")
    bad = ~np.isnan(array) & ~np.isin(array, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0 (normal), 1 (TB) or missing, got {array[bad][0]!r}")
    return array


def _mean(image: np.ndarray, region: np.ndarray) -> float:
    """Mean of ``image`` inside ``region``; NaN for an empty region."""
    return float(image[region].mean()) if region.any() else float("nan")


def _appearance(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """``lung_mean`` .. ``left_right_asymmetry`` of one radiograph (NaN where undefined)."""
    regions = lung_regions(mask)
    lungs = regions["lungs"]
    if not lungs.any():
        return [float("nan")] * (len(FEATURES) - 1)
    inner = ndimage.binary_erosion(lungs, iterations=_TEXTURE_MARGIN)
    inner = inner if inner.any() else lungs
    gradient = ndimage.gaussian_gradient_magnitude(image.astype(np.float64), _TEXTURE_SIGMA)
    zone = {
        name: np.logical_or(*(regions[f"{side}_{name}"] for side in SIDES))
        for name in ("upper", "lower")
    }
    return [
        _mean(image, lungs),
        float(image[lungs].std()),
        _mean(gradient, inner),
        _mean(image, zone["upper"]) - _mean(image, zone["lower"]),
        abs(_mean(image, regions["right"]) - _mean(image, regions["left"])),
    ]


def lung_appearance(
    table: pd.DataFrame, images: np.ndarray, masks: np.ndarray, has_mask: np.ndarray
) -> pd.DataFrame:
    """Measure the lung fields of every radiograph that has a mask.

    Parameters
    ----------
    table
        The dataset table (columns ``id``, ``site``, ``label``), in the order of ``images``.
    images
        ``float`` array ``(N, H, W)`` or ``(N, H, W, 1)``, intensities in ``[0, 1]``.
    masks
        Lung masks of the same shape, ``bool`` or 0/1.
    has_mask
        ``bool`` array ``(N,)``; rows without a mask are left out.

    Returns
    -------
    pandas.DataFrame
        One row per radiograph with a mask, in table order: ``id``, ``site``, ``label``, then
        the :data:`FEATURES` (``float``):

        ``lung_fraction``
            lung pixels / image pixels;
        ``lung_mean``, ``lung_std``
            mean and standard deviation of the intensity inside the lungs;
        ``lung_texture``
            mean gradient magnitude (Gaussian derivative, sigma 1 pixel; intensity per
            pixel) inside the lungs eroded by 3 pixels, so the lung edge is left out; it
            depends on the image size: compare radiographs at one size only;
        ``upper_minus_lower``
            mean intensity of the upper third of both lungs minus that of the lower third
            (thirds of each lung's rows);
        ``left_right_asymmetry``
            absolute difference of the mean intensity of the two lungs (the two largest
            connected components of the mask, or its halves at the centre column).

        A measure whose region is empty (an empty mask, a single lung) is NaN.

    Raises
    ------
    ValueError
        When the shapes of ``images``, ``masks``, ``has_mask`` and ``table`` disagree.
    """
    image_stack = _squeeze(images, "images")
    mask_stack = _squeeze(masks, "masks").astype(bool)
    if image_stack.shape != mask_stack.shape:
        raise ValueError(f"images {image_stack.shape} and masks {mask_stack.shape} differ")
    stats = lung_statistics(table, mask_stack, has_mask)[["id", "site", "label", "lung_fraction"]]
    chosen = np.flatnonzero(np.asarray(has_mask, dtype=bool))
    values = np.array(
        [_appearance(image_stack[i], mask_stack[i]) for i in chosen], dtype=float
    ).reshape(len(chosen), len(FEATURES) - 1)
    for column, feature in enumerate(FEATURES[1:]):
        stats[feature] = values[:, column]
    return stats


def _auc(values: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels.astype(int), values))


def appearance_by_label(
    stats: pd.DataFrame,
    features: Sequence[str] = FEATURES,
    *,
    sites: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Compare each measure between the normal and the TB radiographs of each site.

    Parameters
    ----------
    stats
        Output of :func:`lung_appearance` (columns ``site``, ``label`` and ``features``).
    features
        The measures to compare, in the order of the result.
    sites
        The sites to report, in order; None: those in ``stats``, sorted. A site without
        radiographs gets counts of 0 and NaN values.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(site, feature)``, sites in order and features in the order of
        ``features`` within each: ``n_normal``, ``n_tb`` (radiographs with a value),
        ``median_normal``, ``median_tb``, and ``auc``, the area under the ROC curve of the
        measure as a TB score (0.5: no signal; 1: every TB radiograph scores higher than
        every normal one; 0: every one lower). NaN where a site lacks one of the labels.
        Radiographs without a label, and NaN values, are left out.
    """
    missing = [c for c in ("site", "label", *features) if c not in stats.columns]
    if missing:
        raise ValueError(f"stats lacks the columns {missing}: pass tb_images.lung_appearance()")
    labels = _labels(stats["label"], len(stats))
    known = stats.assign(label=labels)[~np.isnan(labels)]
    order = sorted(known["site"].unique(), key=str) if sites is None else list(sites)
    rows = []
    for site in order:
        subset = known[known["site"] == site]
        for feature in features:
            values = subset[feature].to_numpy(dtype=float)
            keep = ~np.isnan(values)
            values, label = values[keep], subset["label"].to_numpy()[keep]
            normal, tb = values[label == 0], values[label == 1]
            rows.append(
                {
                    "site": site,
                    "feature": feature,
                    "n_normal": int(normal.size),
                    "n_tb": int(tb.size),
                    "median_normal": float(np.median(normal)) if normal.size else np.nan,
                    "median_tb": float(np.median(tb)) if tb.size else np.nan,
                    "auc": _auc(values, label),
                }
            )
    columns = ["site", "feature", "n_normal", "n_tb", "median_normal", "median_tb", "auc"]
    return pd.DataFrame(rows, columns=columns).set_index(["site", "feature"])


def _group_mean(stack: np.ndarray, masks: np.ndarray | None, members: np.ndarray) -> np.ndarray:
    """Pixel-wise mean of ``stack[members]``, inside ``masks`` when given (NaN: no pixel)."""
    where = members[:, None, None] if masks is None else members[:, None, None] & masks
    total = np.sum(stack, axis=0, where=where, dtype=np.float64)
    count = np.sum(np.broadcast_to(where, stack.shape), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def mean_difference_image(
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Mean TB radiograph minus mean normal radiograph, pixel by pixel.

    Parameters
    ----------
    images
        ``float`` array ``(N, H, W)`` or ``(N, H, W, 1)``, intensities in ``[0, 1]``.
    labels
        ``(N,)``: 0 normal, 1 TB; missing labels (None, NaN, ``pd.NA``) are left out.
    masks
        Optional lung masks of the shape of ``images`` (``bool`` or 0/1). When given, each
        pixel averages only the radiographs whose mask covers it, and pixels that no
        radiograph of a label covers are NaN.
    strata
        Optional ``(N,)`` group of each radiograph, e.g. its site. When given, the
        difference is computed within each stratum that has both labels and the strata's
        differences are averaged, weighted by their number of radiographs: a label's
        different share at each site then does not show as a difference of the labels.

    Returns
    -------
    numpy.ndarray
        ``float32 (H, W)``: positive where the TB radiographs are brighter on average.

    Raises
    ------
    ValueError
        For bad shapes, when no radiograph has one of the labels (the message names it),
        or when no stratum has both labels.
    """
    stack = _squeeze(images, "images")
    n = stack.shape[0]
    label = _labels(labels, n)
    lungs = None if masks is None else _squeeze(masks, "masks").astype(bool)
    if lungs is not None and lungs.shape != stack.shape:
        raise ValueError(f"images {stack.shape} and masks {lungs.shape} differ")
    for value, name in ((0, "normal"), (1, "TB")):
        if not (label == value).any():
            raise ValueError(f"no {name} radiograph (label {value}): cannot compare the labels")
    groups = np.zeros(n, dtype=object) if strata is None else np.asarray(strata, dtype=object)
    if groups.shape != (n,):
        raise ValueError(f"strata has shape {groups.shape}, expected ({n},)")
    differences, sizes = [], []
    for group in pd.unique(groups):
        normal = (groups == group) & (label == 0)
        tb = (groups == group) & (label == 1)
        if normal.any() and tb.any():
            mean_tb = _group_mean(stack, lungs, tb)
            differences.append(mean_tb - _group_mean(stack, lungs, normal))
            sizes.append(float(normal.sum() + tb.sum()))
    if not differences:
        raise ValueError("no stratum has both normal and TB radiographs")
    stacked = np.stack(differences)
    size = np.array(sizes)[:, None, None] * ~np.isnan(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.nansum(stacked * size, axis=0) / size.sum(axis=0)
    return result.astype(np.float32)
