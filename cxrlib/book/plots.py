"""Figures for the book. Every function returns a :class:`matplotlib.figure.Figure`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "SITE_COLORS",
    "overlay_mask",
    "example_grid",
    "label_balance",
    "lung_size_by_site",
    "demographics",
    "intensity_histograms",
    "side_by_side",
]

#: One colour per site, used in every figure.
SITE_COLORS = {"montgomery": "#1f77b4", "shenzhen": "#d62728", "unknown": "#7f7f7f"}


def _gray(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    return array[..., 0] if array.ndim == 3 else array


def overlay_mask(ax, image: np.ndarray, mask: np.ndarray | None, *, color=(0.1, 0.9, 0.3)) -> None:
    """Draw ``image`` (``(H, W)`` float in [0, 1]) with ``mask`` as a tinted contour."""
    ax.imshow(_gray(image), cmap="gray", vmin=0.0, vmax=1.0)
    if mask is not None:
        mask2d = _gray(mask) > 0.5
        if mask2d.any():
            tint = np.zeros((*mask2d.shape, 4), np.float32)
            tint[mask2d] = (*color, 0.25)
            ax.imshow(tint)
            ax.contour(mask2d, levels=[0.5], colors=[color], linewidths=0.8)
    ax.set_axis_off()


def example_grid(
    images: np.ndarray,
    masks: np.ndarray | None,
    titles: Sequence[str],
    *,
    ncols: int = 4,
    size: float = 2.6,
) -> Figure:
    """A grid of radiographs with their lung masks outlined.

    Parameters
    ----------
    images
        ``(N, H, W)`` or ``(N, H, W, 1)`` float images in [0, 1].
    masks
        Matching bool masks, or None; an all-False mask draws no outline.
    titles
        One title per image.
    """
    import matplotlib.pyplot as plt

    count = len(images)
    if count == 0:
        raise ValueError("example_grid needs at least one image")
    ncols = max(1, min(ncols, count))
    nrows = int(np.ceil(count / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_axis_off()
            continue
        overlay_mask(ax, images[index], None if masks is None else masks[index])
        ax.set_title(titles[index], fontsize=8)
    fig.tight_layout()
    return fig


def label_balance(counts: pd.DataFrame) -> Figure:
    """Bar chart of radiographs per site and label (output of ``explore.label_counts``)."""
    import matplotlib.pyplot as plt

    columns = [c for c in ("normal", "tb", "unknown") if c in counts.columns]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    counts[columns].plot.bar(ax=ax, color=["#4c72b0", "#dd8452", "#999999"][: len(columns)])
    ax.set_xlabel("site")
    ax.set_ylabel("radiographs")
    ax.tick_params(axis="x", rotation=0)
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    ax.legend(title="label", frameon=False)
    fig.tight_layout()
    return fig


def lung_size_by_site(stats: pd.DataFrame) -> Figure:
    """Distributions of lung area fraction, height and width per site (box + points)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    measures = [
        ("lung_fraction", "lung area / image area"),
        ("lung_height", "lung height / image height"),
        ("lung_width", "lung width / image width"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    palette = {site: SITE_COLORS.get(site, "#7f7f7f") for site in stats["site"].unique()}
    for ax, (column, label) in zip(axes, measures, strict=True):
        with warnings.catch_warnings():
            # seaborn 0.13 passes matplotlib's deprecated `vert` argument to boxplot.
            warnings.filterwarnings("ignore", message="vert: bool", category=DeprecationWarning)
            sns.boxplot(
                data=stats, x="site", y=column, hue="site", palette=palette, ax=ax, fliersize=0
            )
        sns.stripplot(data=stats, x="site", y=column, color="k", size=2, alpha=0.4, ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


def demographics(table: pd.DataFrame) -> Figure:
    """Age distribution by site and label, and sex counts, from the clinical readings."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    known_age = table.dropna(subset=["age"])
    if known_age.empty:
        axes[0].text(0.5, 0.5, "no ages in the readings", ha="center", va="center")
        axes[0].set_axis_off()
    else:
        data = known_age.assign(
            label=known_age["label"].map({0: "normal", 1: "tb"}).fillna("unknown")
        )
        sns.histplot(data=data, x="age", hue="label", multiple="dodge", bins=15, ax=axes[0])
        axes[0].set_xlabel("age (years)")
    known_sex = table.dropna(subset=["sex"])
    if known_sex.empty:
        axes[1].text(0.5, 0.5, "no sex in the readings", ha="center", va="center")
        axes[1].set_axis_off()
    else:
        sns.countplot(data=known_sex, x="site", hue="sex", ax=axes[1])
        axes[1].set_ylabel("radiographs")
    fig.tight_layout()
    return fig


def intensity_histograms(samples: pd.DataFrame) -> Figure:
    """Intensity histograms inside and outside the lungs, one panel per site."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sites = list(dict.fromkeys(samples["site"]))
    fig, axes = plt.subplots(1, len(sites), figsize=(4.5 * len(sites), 3.2), squeeze=False)
    for ax, site in zip(axes.flat, sites, strict=True):
        subset = samples[samples["site"] == site]
        sns.histplot(
            data=subset,
            x="intensity",
            hue="region",
            stat="density",
            common_norm=False,
            element="step",
            bins=50,
            ax=ax,
        )
        ax.set_title(site)
        ax.set_xlim(0, 1)
    fig.tight_layout()
    return fig


def side_by_side(
    top: np.ndarray, bottom: np.ndarray | None, *, top_label: str, bottom_label: str
) -> Figure:
    """Two rows of radiographs (e.g. phantoms above, real radiographs below), no masks."""
    import matplotlib.pyplot as plt

    rows = [(top, top_label)] + ([(bottom, bottom_label)] if bottom is not None else [])
    ncols = max(len(r[0]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.8 * len(rows)))
    axes = np.atleast_2d(axes)
    for row, (stack, label) in enumerate(rows):
        for col in range(ncols):
            ax = axes[row, col]
            ax.set_axis_off()
            if col < len(stack):
                ax.imshow(_gray(stack[col]), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(label, loc="left", fontsize=10)
    fig.tight_layout()
    return fig
