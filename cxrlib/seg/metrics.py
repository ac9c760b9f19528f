"""Numpy evaluation of lung masks: overlap, surface distances, per-site summaries.

Masks are ``bool`` arrays (any numeric dtype is accepted and thresholded at
0.5). Single-mask functions take ``(H, W)`` or ``(H, W, 1)``; batch functions
take ``(N, H, W)`` or ``(N, H, W, 1)``.

Conventions for empty masks (documented here once, used everywhere):

* :func:`dice` and :func:`iou`: 1.0 when both masks are empty (nothing to find,
  nothing found), 0.0 when exactly one is empty.
* :func:`hd95` and :func:`mean_surface_distance`: 0.0 when both are empty;
  ``nan`` when exactly one is empty (a distance to nothing is undefined).
  :func:`summarize_by_site` reports how many such ``nan`` values it ignored.

Surface distances use the boundary pixels of each mask (the mask minus its
erosion by a 4-connected cross; pixels on the image border count as boundary)
and Euclidean distance transforms (:func:`scipy.ndimage.distance_transform_edt`)
with the pixel ``spacing``. :func:`hd95` is the 95th percentile of the pooled
boundary distances in both directions (A to B and B to A), the definition of
``medpy.metric.hd95``; :func:`mean_surface_distance` is the mean of the same
pooled distances (the average symmetric surface distance, ASSD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from cxrlib.stats import bootstrap_ci

__all__ = [
    "dice",
    "iou",
    "hd95",
    "mean_surface_distance",
    "surface_distances",
    "per_image_scores",
    "summarize_by_site",
]

Spacing = float | Sequence[float]


def _as_mask(mask: Any, name: str) -> np.ndarray:
    """Return a 2-D bool mask from ``(H, W)`` or ``(H, W, 1)``."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 1), got {array.shape}")
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be bool or numeric, got dtype {array.dtype}")
    return array > 0.5


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "pred")
    t = _as_mask(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth shapes differ: {p.shape} vs {t.shape}")
    return p, t


def dice(pred: Any, truth: Any) -> float:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of two masks.

    Parameters
    ----------
    pred, truth : ndarray, shape (H, W) or (H, W, 1)
        Masks, bool or numeric (numeric values are thresholded at 0.5).

    Returns
    -------
    float
        In ``[0, 1]``; 1.0 when both masks are empty.
    """
    p, t = _pair(pred, truth)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def iou(pred: Any, truth: Any) -> float:
    """Intersection over union (Jaccard index) ``|P & T| / |P | T|`` of two masks.

    Parameters
    ----------
    pred, truth : ndarray, shape (H, W) or (H, W, 1)
        Masks, bool or numeric (numeric values are thresholded at 0.5).

    Returns
    -------
    float
        In ``[0, 1]``; 1.0 when both masks are empty.
    """
    p, t = _pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union


def _spacing(spacing: Spacing) -> tuple[float, float]:
    values = np.asarray(spacing, dtype=float)
    if values.ndim == 0:
        values = np.full(2, float(values))
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be a positive number or (row, col) pair, got {spacing!r}")
    return float(values[0]), float(values[1])


def _boundary(mask: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def surface_distances(pred: Any, truth: Any, spacing: Spacing = 1.0) -> np.ndarray | None:
    """Distances from each boundary pixel of one mask to the other mask's boundary.

    Parameters
    ----------
    pred, truth : ndarray, shape (H, W) or (H, W, 1)
        Masks, bool or numeric (thresholded at 0.5).
    spacing : float or (float, float), default 1.0
        Pixel size along rows and columns (e.g. millimetres per pixel).

    Returns
    -------
    ndarray of float64, shape (n_pred_boundary + n_truth_boundary,) or None
        Pred-to-truth distances followed by truth-to-pred distances, in units
        of ``spacing``; an empty array when both masks are empty; ``None`` when
        exactly one mask is empty.
    """
    p, t = _pair(pred, truth)
    sampling = _spacing(spacing)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return np.zeros(0, dtype=np.float64)
    if has_p != has_t:
        return None
    bp, bt = _boundary(p), _boundary(t)
    to_t = ndimage.distance_transform_edt(~bt, sampling=sampling)
    to_p = ndimage.distance_transform_edt(~bp, sampling=sampling)
    return np.concatenate([to_t[bp], to_p[bt]])


def hd95(pred: Any, truth: Any, spacing: Spacing = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance between two mask boundaries.

    The 95th percentile of the pooled boundary distances in both directions
    (see :func:`surface_distances`), as ``medpy.metric.hd95``.

    Parameters
    ----------
    pred, truth : ndarray, shape (H, W) or (H, W, 1)
        Masks, bool or numeric (thresholded at 0.5).
    spacing : float or (float, float), default 1.0
        Pixel size along rows and columns.

    Returns
    -------
    float
        In units of ``spacing``; 0.0 when both masks are empty, ``nan`` when
        exactly one is empty.
    """
    distances = surface_distances(pred, truth, spacing)
    if distances is None:
        return float("nan")
    if distances.size == 0:
        return 0.0
    return float(np.percentile(distances, 95))


def mean_surface_distance(pred: Any, truth: Any, spacing: Spacing = 1.0) -> float:
    """Average symmetric surface distance (mean of the pooled boundary distances).

    Parameters
    ----------
    pred, truth : ndarray, shape (H, W) or (H, W, 1)
        Masks, bool or numeric (thresholded at 0.5).
    spacing : float or (float, float), default 1.0
        Pixel size along rows and columns.

    Returns
    -------
    float
        In units of ``spacing``; 0.0 when both masks are empty, ``nan`` when
        exactly one is empty.
    """
    distances = surface_distances(pred, truth, spacing)
    if distances is None:
        return float("nan")
    if distances.size == 0:
        return 0.0
    return float(distances.mean())


def _as_batch(masks: Any, name: str) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {array.shape}")
    return array


def per_image_scores(
    preds: Any,
    truths: Any,
    ids: Sequence[Any] | None = None,
    sites: Sequence[Any] | None = None,
    *,
    spacing: Spacing = 1.0,
) -> pd.DataFrame:
    """Score a batch of predicted masks against the references, one row per image.

    Parameters
    ----------
    preds, truths : ndarray, shape (N, H, W) or (N, H, W, 1)
        Predicted and reference masks, bool or numeric (thresholded at 0.5; pass
        probabilities or binarised masks).
    ids : sequence, length N, optional
        Image identifiers; defaults to ``0 .. N-1``.
    sites : sequence, length N, optional
        Acquisition site of each image (e.g. ``"MC"``, ``"CHN"``); defaults to
        ``"unknown"``.
    spacing : float or (float, float), default 1.0
        Pixel size for :func:`hd95`.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``site``, ``dice``, ``iou``, ``hd95`` (float64), one row
        per image in input order.

    Raises
    ------
    ValueError
        If shapes or lengths do not match.
    """
    p = _as_batch(preds, "preds")
    t = _as_batch(truths, "truths")
    if p.shape != t.shape:
        raise ValueError(f"preds and truths shapes differ: {p.shape} vs {t.shape}")
    n = p.shape[0]
    ids = list(range(n)) if ids is None else list(ids)
    sites = ["unknown"] * n if sites is None else list(sites)
    for name, values in (("ids", ids), ("sites", sites)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but there are {n} masks")
    rows = [
        {
            "id": ids[i],
            "site": sites[i],
            "dice": dice(p[i], t[i]),
            "iou": iou(p[i], t[i]),
            "hd95": hd95(p[i], t[i], spacing),
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["id", "site", "dice", "iou", "hd95"])


_SUMMARY_COLUMNS = [
    "n",
    "dice_mean",
    "dice_low",
    "dice_high",
    "iou_mean",
    "iou_low",
    "iou_high",
    "hd95_median",
    "hd95_undefined",
]


def _summary_row(group: pd.DataFrame, n_boot: int, ci: float, seed: int) -> dict[str, Any]:
    dice_est, dice_lo, dice_hi = bootstrap_ci(group["dice"], n_boot=n_boot, ci=ci, seed=seed)
    iou_est, iou_lo, iou_hi = bootstrap_ci(group["iou"], n_boot=n_boot, ci=ci, seed=seed)
    hd = group["hd95"].to_numpy(dtype=float)
    finite = hd[~np.isnan(hd)]
    return {
        "n": len(group),
        "dice_mean": dice_est,
        "dice_low": dice_lo,
        "dice_high": dice_hi,
        "iou_mean": iou_est,
        "iou_low": iou_lo,
        "iou_high": iou_hi,
        "hd95_median": float(np.median(finite)) if finite.size else float("nan"),
        "hd95_undefined": int(hd.size - finite.size),
    }


def summarize_by_site(
    df: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Summarise per-image scores per site and over all images.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`per_image_scores` (columns ``site``, ``dice``, ``iou``,
        ``hd95``).
    n_boot, ci, seed
        Passed to :func:`cxrlib.stats.bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``site`` (each site in sorted order, then ``"all"``), columns
        ``n``, ``dice_mean``, ``dice_low``, ``dice_high``, ``iou_mean``,
        ``iou_low``, ``iou_high`` (mean with a percentile-bootstrap CI),
        ``hd95_median`` (median over images with a defined HD95) and
        ``hd95_undefined`` (number of images whose HD95 is ``nan`` because one
        mask was empty).

    Raises
    ------
    ValueError
        If a required column is missing or ``df`` is empty.
    """
    missing = [c for c in ("site", "dice", "iou", "hd95") if c not in df.columns]
    if missing:
        raise ValueError(f"summarize_by_site: df lacks column(s) {missing}")
    if df.empty:
        raise ValueError("summarize_by_site: df has no rows")
    rows = {}
    for site, group in df.groupby(df["site"].astype(str), sort=True):
        rows[site] = _summary_row(group, n_boot, ci, seed)
    rows["all"] = _summary_row(df, n_boot, ci, seed)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=_SUMMARY_COLUMNS)
    out.index.name = "site"
    return out
