"""Descriptive statistics of a dataset: lung size, intensities, label balance, readings.

All functions take the tidy table of :func:`cxrlib.data.datasets.scan_dataset` and/or the arrays
of :func:`cxrlib.preprocess.load_arrays` and return pandas DataFrames that the data chapter
plots and quotes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "lung_statistics",
    "lung_size_summary",
    "compare_sites",
    "label_counts",
    "site_balance",
    "intensity_samples",
]

_LABEL_NAMES = {0: "normal", 1: "tb"}


def _squeeze(stack: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(stack)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {array.shape}")
    return array


def lung_statistics(table: pd.DataFrame, masks: np.ndarray, has_mask: np.ndarray) -> pd.DataFrame:
    """Measure the lungs of every radiograph that has a mask.

    Parameters
    ----------
    table
        The dataset table (columns ``id``, ``site``, ``label``), in the same order as
        ``masks``.
    masks
        ``bool`` array of shape ``(N, H, W)`` or ``(N, H, W, 1)``.
    has_mask
        ``bool`` array of shape ``(N,)``; rows without a mask are left out.

    Returns
    -------
    pandas.DataFrame
        One row per masked radiograph: ``id``, ``site``, ``label``, ``lung_fraction``
        (lung pixels / image pixels), ``right_lung_fraction`` and ``left_lung_fraction``
        (the patient's right lung is on the image's left), ``lung_height`` and
        ``lung_width`` (extent of the lung fields as fractions of the image side).
    """
    stack = _squeeze(masks, "masks").astype(bool)
    flags = np.asarray(has_mask, dtype=bool)
    if len(table) != stack.shape[0] or flags.shape != (stack.shape[0],):
        raise ValueError(
            f"table has {len(table)} rows, masks {stack.shape[0]}, has_mask {flags.shape}: "
            "they must describe the same radiographs"
        )
    n, height, width = stack.shape
    half = width // 2
    area = stack.sum(axis=(1, 2)).astype(float)
    rows_any = stack.any(axis=2)
    cols_any = stack.any(axis=1)

    def extent(profile: np.ndarray) -> np.ndarray:
        first = np.argmax(profile, axis=1)
        last = profile.shape[1] - 1 - np.argmax(profile[:, ::-1], axis=1)
        return np.where(profile.any(axis=1), last - first + 1, 0).astype(float)

    stats = pd.DataFrame(
        {
            "id": table["id"].to_numpy(),
            "site": table["site"].to_numpy(),
            "label": table["label"].to_numpy(),
            "lung_fraction": area / (height * width),
            "right_lung_fraction": stack[:, :, :half].sum(axis=(1, 2)) / (height * width),
            "left_lung_fraction": stack[:, :, half:].sum(axis=(1, 2)) / (height * width),
            "lung_height": extent(rows_any) / height,
            "lung_width": extent(cols_any) / width,
        }
    )
    return stats[flags].reset_index(drop=True)


def lung_size_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Summarise lung size per site.

    Parameters
    ----------
    stats
        Output of :func:`lung_statistics`.

    Returns
    -------
    pandas.DataFrame
        Indexed by site: ``n``, mean and standard deviation of ``lung_fraction``, median,
        mean ``lung_height`` and ``lung_width``.
    """
    if stats.empty:
        raise ValueError("no radiograph with a lung mask: cannot summarise lung size")
    grouped = stats.groupby("site")
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "mean_lung_fraction": grouped["lung_fraction"].mean(),
            "sd_lung_fraction": grouped["lung_fraction"].std(ddof=1),
            "median_lung_fraction": grouped["lung_fraction"].median(),
            "mean_lung_height": grouped["lung_height"].mean(),
            "mean_lung_width": grouped["lung_width"].mean(),
        }
    )


def compare_sites(
    stats: pd.DataFrame, column: str = "lung_fraction", a: str = "montgomery", b: str = "shenzhen"
) -> dict[str, float]:
    """Compare one lung measure between two sites.

    Returns
    -------
    dict
        ``ratio`` (mean of ``b`` / mean of ``a``), ``difference`` (mean ``b`` - mean ``a``),
        ``p_value`` of a two-sided Mann-Whitney U test, and both means and counts. NaN
        values when a site has no masked radiograph.
    """
    from scipy.stats import mannwhitneyu

    first = stats.loc[stats["site"] == a, column].to_numpy(float)
    second = stats.loc[stats["site"] == b, column].to_numpy(float)
    result = {
        f"mean_{a}": float(first.mean()) if first.size else float("nan"),
        f"mean_{b}": float(second.mean()) if second.size else float("nan"),
        f"n_{a}": float(first.size),
        f"n_{b}": float(second.size),
    }
    if first.size and second.size:
        result["ratio"] = result[f"mean_{b}"] / result[f"mean_{a}"]
        result["difference"] = result[f"mean_{b}"] - result[f"mean_{a}"]
        result["p_value"] = float(mannwhitneyu(first, second, alternative="two-sided").pvalue)
    else:
        result.update(ratio=float("nan"), difference=float("nan"), p_value=float("nan"))
    return result


def label_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Count radiographs per site and label.

    Returns
    -------
    pandas.DataFrame
        Rows are sites, columns ``normal``, ``tb`` (and ``unknown`` when some labels are
        missing), plus ``total``.
    """
    labels = table["label"].map(lambda v: _LABEL_NAMES.get(v, "unknown") if pd.notna(v) else None)
    labels = labels.fillna("unknown")
    counts = pd.crosstab(table["site"], labels)
    for name in ("normal", "tb"):
        if name not in counts.columns:
            counts[name] = 0
    ordered = ["normal", "tb"] + (["unknown"] if "unknown" in counts.columns else [])
    counts = counts[ordered]
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts


def site_balance(
    counts: pd.DataFrame, sites: Sequence[str] = ("montgomery", "shenzhen")
) -> pd.DataFrame:
    """Radiographs and share of TB of each site, present or not.

    Parameters
    ----------
    counts
        Output of :func:`label_counts` (index = site, columns ``tb`` and ``total``).
    sites
        The sites to report, in order; a site without radiographs gets ``total`` 0.

    Returns
    -------
    pandas.DataFrame
        Index ``sites``; columns ``total`` (int) and ``pct_tb`` (percentage of the
        site's radiographs labelled TB; NaN without radiographs).
    """
    missing = [c for c in ("tb", "total") if c not in counts.columns]
    if missing:
        raise ValueError(f"counts lacks the columns {missing}: pass explore.label_counts()")
    chosen = counts.reindex(list(sites))[["tb", "total"]].fillna(0).astype("int64")
    total = chosen["total"].to_numpy()
    share = np.divide(
        100.0 * chosen["tb"].to_numpy(), total, out=np.full(total.shape, np.nan), where=total > 0
    )
    return pd.DataFrame({"total": chosen["total"], "pct_tb": share}, index=chosen.index)


def intensity_samples(
    images: np.ndarray,
    masks: np.ndarray,
    has_mask: np.ndarray,
    sites: np.ndarray,
    *,
    per_image: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Sample pixel intensities inside and outside the lungs, for histograms.

    Parameters
    ----------
    images
        ``float32`` array ``(N, H, W)`` or ``(N, H, W, 1)`` in ``[0, 1]``.
    masks
        ``bool`` array of the same shape.
    has_mask
        ``bool`` array ``(N,)``; images without a mask contribute to ``region="all"`` only.
    sites
        Array ``(N,)`` of site names.
    per_image
        Pixels sampled per image and region (keeps the table small).

    Returns
    -------
    pandas.DataFrame
        Columns ``site``, ``region`` (``lung``/``outside``/``all``), ``intensity``.
    """
    image_stack = _squeeze(images, "images")
    mask_stack = _squeeze(masks, "masks").astype(bool)
    if image_stack.shape != mask_stack.shape:
        raise ValueError(f"images {image_stack.shape} and masks {mask_stack.shape} differ")
    rng = np.random.default_rng(seed)
    parts = []
    for index, (image, mask) in enumerate(zip(image_stack, mask_stack, strict=True)):
        regions = {"all": np.ones_like(mask)}
        if has_mask[index]:
            regions = {"lung": mask, "outside": ~mask}
        for region, selector in regions.items():
            values = image[selector]
            if values.size == 0:
                continue
            pick = rng.choice(values.size, size=min(per_image, values.size), replace=False)
            parts.append(
                pd.DataFrame({"site": sites[index], "region": region, "intensity": values[pick]})
            )
    if not parts:
        raise ValueError("no pixels to sample: the image stack is empty")
    return pd.concat(parts, ignore_index=True)


def pick_examples(
    table: pd.DataFrame, has_mask: np.ndarray | None = None, *, n: int = 4, seed: int = 0
) -> np.ndarray:
    """Choose ``n`` row positions spread over sites and labels, preferring masked rows.

    Parameters
    ----------
    table
        The dataset table (``site``, ``label`` columns).
    has_mask
        ``bool`` array ``(N,)``; when given, rows with a mask are chosen first.
    n
        How many rows to return (fewer when the table is smaller).
    seed
        Seed of the random choice within each (site, label) group.

    Returns
    -------
    numpy.ndarray
        ``int`` positions into ``table``, grouped by site then label.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    preferred = np.ones(len(table), bool) if has_mask is None else np.asarray(has_mask, bool)
    keys = list(zip(table["site"], table["label"].astype("object").fillna(-1), strict=True))
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    queues = []
    for key in sorted(groups, key=str):
        members = np.array(groups[key])
        members = np.concatenate(
            [
                rng.permutation(members[preferred[members]]),
                rng.permutation(members[~preferred[members]]),
            ]
        )
        queues.append(list(members))
    chosen: list[int] = []
    while len(chosen) < min(n, len(table)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    order = sorted(chosen, key=lambda p: (str(keys[p][0]), str(keys[p][1])))
    return np.array(order, dtype=int)
