"""Figures (and the small tables behind them) for the augmentation chapter.

Every plotting function returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.book.plots import overlay_mask
from cxrlib.seg.augment import AugmentationConfig

__all__ = [
    "transform_titles",
    "intensity_summary",
    "augmentation_gallery",
    "augmented_draws",
    "intensity_histograms",
    "leakage_chart",
]

_ImageMask = tuple[np.ndarray, np.ndarray]


def transform_titles(config: AugmentationConfig | None = None) -> dict[str, str]:
    """Human-readable panel titles, with the settings, for each transform name.

    Parameters
    ----------
    config : AugmentationConfig, optional
        The settings quoted in the titles (defaults: :class:`AugmentationConfig`).

    Returns
    -------
    dict of str -> str
        Keys as returned by :func:`cxrlib.seg.augment.augment_examples`.
    """
    cfg = AugmentationConfig() if config is None else config
    low, high = cfg.scale_range
    return {
        "original": "original",
        "contrast_v1": f"contrast v1 (b={cfg.brightness:g}, c={cfg.contrast:g})",
        "contrast_v2": f"contrast v2 (alpha={cfg.alpha:g}, beta={cfg.beta:g})",
        "noise": f"noise ({cfg.noise_kind}, epsilon={cfg.noise_epsilon:g})",
        "rotation": f"rotation ({cfg.rotation_deg:g} degrees)",
        "shift": f"shift ({cfg.shift_fraction:.0%} of each side)",
        "scale": f"scale (x{high:g}; range {low:g}-{high:g})",
        "hflip": "left-right flip",
    }


def _image_2d(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    return array[..., 0] if array.ndim == 3 else array


def _check_examples(examples: Mapping[str, _ImageMask]) -> None:
    if not examples:
        raise ValueError("examples is empty: pass the dict returned by augment_examples")


def intensity_summary(examples: Mapping[str, _ImageMask]) -> pd.DataFrame:
    """Grey-level statistics of each augmented image.

    Parameters
    ----------
    examples : mapping of str -> (image, mask)
        As returned by :func:`cxrlib.seg.augment.augment_examples`; images
        ``(H, W)`` or ``(H, W, 1)`` float in [0, 1].

    Returns
    -------
    pandas.DataFrame
        Index: the transform names (input order); float columns ``min``,
        ``p1``, ``median``, ``p99``, ``max``, ``range`` (``max - min``) and
        ``std``.
    """
    _check_examples(examples)
    rows = {}
    for name, (image, _) in examples.items():
        values = _image_2d(image).ravel().astype(np.float64)
        p1, median, p99 = np.percentile(values, [1, 50, 99])
        rows[name] = {
            "min": values.min(),
            "p1": p1,
            "median": median,
            "p99": p99,
            "max": values.max(),
            "range": values.max() - values.min(),
            "std": values.std(),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "transform"
    return table


def augmentation_gallery(
    examples: Mapping[str, _ImageMask],
    *,
    config: AugmentationConfig | None = None,
    ncols: int = 4,
    size: float = 2.6,
) -> Figure:
    """Each augmentation of one radiograph, with its (moved) mask outlined.

    Images are drawn on the fixed grey scale [0, 1], so a contrast loss shows
    as a loss of contrast.

    Parameters
    ----------
    examples : mapping of str -> (image, mask)
        As returned by :func:`cxrlib.seg.augment.augment_examples`.
    config : AugmentationConfig, optional
        Settings quoted in the panel titles (see :func:`transform_titles`).
    ncols : int, default 4
    size : float, default 2.6
        Panel side in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    _check_examples(examples)
    titles = transform_titles(config)
    count = len(examples)
    ncols = max(1, min(ncols, count))
    nrows = int(np.ceil(count / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_axis_off()
    for ax, (name, (image, mask)) in zip(axes.flat, examples.items(), strict=False):
        overlay_mask(ax, image, mask)
        ax.set_title(titles.get(name, name), fontsize=8)
    fig.tight_layout()
    return fig


def augmented_draws(
    image: np.ndarray,
    mask: np.ndarray,
    config: AugmentationConfig | None = None,
    *,
    n: int = 8,
    seed: int = 0,
    ncols: int = 4,
    size: float = 2.2,
) -> Figure:
    """``n`` random draws of the training augmentation of one radiograph.

    This is what :class:`cxrlib.seg.augment.Augmenter` makes of the same image in
    ``n`` different batches: each transform applied with its probability.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 1), float in [0, 1]
    mask : ndarray, shape (H, W) or (H, W, 1)
    config : AugmentationConfig, optional
    n : int, default 8
    seed : int, default 0
    ncols : int, default 4
    size : float, default 2.2

    Returns
    -------
    matplotlib.figure.Figure
    """
    from cxrlib.book.plots import example_grid
    from cxrlib.seg.augment import Augmenter

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    img = _image_2d(image)[None, ..., None]
    msk = np.asarray(mask).reshape(img.shape)
    images, masks = Augmenter(config, seed=seed)(
        np.repeat(img, n, axis=0), np.repeat(msk, n, axis=0)
    )
    titles = [f"draw {i + 1}" for i in range(n)]
    return example_grid(images, masks, titles, ncols=ncols, size=size)


def intensity_histograms(
    examples: Mapping[str, _ImageMask],
    names: Sequence[str] = ("original", "contrast_v1", "contrast_v2", "noise"),
    *,
    config: AugmentationConfig | None = None,
    bins: int = 128,
) -> Figure:
    """Grey-level histograms of the intensity augmentations, one panel each.

    Every panel spans the full grey scale [0, 1] on the x axis (each has its
    own y scale), so a squeezed image shows as a narrow spike.

    Parameters
    ----------
    examples : mapping of str -> (image, mask)
        As returned by :func:`cxrlib.seg.augment.augment_examples`.
    names : sequence of str
        Which transforms to show, in order.
    config : AugmentationConfig, optional
        Settings quoted in the titles.
    bins : int, default 128

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If a name is not in ``examples``.
    """
    import matplotlib.pyplot as plt

    _check_examples(examples)
    missing = [n for n in names if n not in examples]
    if missing or not names:
        raise ValueError(
            f"names {missing or list(names)} not usable; examples has {list(examples)}"
        )
    titles = transform_titles(config)
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 2.4), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=True):
        values = _image_2d(examples[name][0]).ravel()
        ax.hist(values, bins=bins, range=(0.0, 1.0), color="0.3")
        ax.set_xlim(0.0, 1.0)
        ax.set_title(titles.get(name, name), fontsize=8)
        ax.set_xlabel("grey level", fontsize=8)
        ax.set_yticks([])
        ax.text(
            0.02,
            0.95,
            f"{values.min():.3f}-{values.max():.3f}",
            transform=ax.transAxes,
            fontsize=7,
            va="top",
        )
    axes.flat[0].set_ylabel("pixels", fontsize=8)
    fig.tight_layout()
    return fig


_LEAKAGE_COLUMNS = ("val_dice", "test_dice", "val_low", "val_high", "test_low", "test_high")


def leakage_chart(results: pd.DataFrame) -> Figure:
    """Validation and test Dice per design (left) and the validation optimism (right).

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`cxrlib.book.leakage_run.leakage_experiment`: index the design
        names, columns ``val_dice``, ``test_dice`` and their 95 % interval
        bounds ``val_low``, ``val_high``, ``test_low``, ``test_high``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: bars of the mean Dice with 95 % intervals (the y axis is zoomed
        to the values and says where it starts). Right: ``val - test`` per
        design, bars from zero, with the interval ``gap_low``-``gap_high``
        when the table has it.

    Raises
    ------
    ValueError
        If a column is missing or the table is empty.
    """
    import matplotlib.pyplot as plt

    missing = [c for c in _LEAKAGE_COLUMNS if c not in results.columns]
    if missing or results.empty:
        raise ValueError(
            f"results must be the table of leakage_experiment; missing columns {missing}"
            if missing
            else "results is empty"
        )
    designs = [str(d) for d in results.index]
    x = np.arange(len(designs))
    width = 0.38
    labels: list[tuple[float, float]] = []
    fig, (ax, ax_gap) = plt.subplots(
        1, 2, figsize=(9.0, 3.4), gridspec_kw={"width_ratios": [1.6, 1.0]}
    )
    for offset, (key, label, color) in zip(
        (-width / 2, width / 2),
        (("val", "own validation set", "#ff7f0e"), ("test", "held-out test set", "#1f77b4")),
        strict=True,
    ):
        mean = results[f"{key}_dice"].to_numpy(float)
        low = results[f"{key}_low"].to_numpy(float)
        high = results[f"{key}_high"].to_numpy(float)
        yerr = np.vstack([mean - low, high - mean])
        ax.bar(
            x + offset, mean, width, yerr=np.nan_to_num(yerr), capsize=3, label=label, color=color
        )
        labels.extend(zip(x + offset, mean, strict=True))
    values = results[list(_LEAKAGE_COLUMNS)].to_numpy(float)
    floor = float(np.floor((np.nanmin(values) - 0.02) * 20) / 20)
    floor = min(max(floor, 0.0), 0.95)
    for xi, value in labels:  # each value inside its bar, near the base
        ax.text(
            xi,
            floor + 0.02 * (1.0 - floor),
            f"{value:.3f}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="white",
            fontweight="bold",
        )
    ax.set_ylim(floor, 1.0)
    ax.set_ylabel(f"mean Dice (axis starts at {floor:.2f})")
    ax.set_xticks(x, designs)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    gap = results["val_dice"].to_numpy(float) - results["test_dice"].to_numpy(float)
    if {"gap_low", "gap_high"} <= set(results.columns):
        gap_low = results["gap_low"].to_numpy(float)
        gap_high = results["gap_high"].to_numpy(float)
    else:
        gap_low = gap_high = gap
    gap_err = np.nan_to_num(np.vstack([gap - gap_low, gap_high - gap]))
    colors = ["#d62728" if g > 0 else "#7f7f7f" for g in gap]
    ax_gap.bar(x, gap, 0.5, yerr=gap_err, capsize=3, color=colors)
    ax_gap.axhline(0.0, color="black", linewidth=0.8)
    for xi, value in zip(x, gap, strict=True):  # the value next to each bar
        ax_gap.text(xi + 0.27, value, f"{value:+.3f}", ha="left", va="center", fontsize=8)
    ax_gap.set_xticks(x, designs)
    ax_gap.set_xlim(-0.6, len(designs) - 0.1)
    ax_gap.set_ylabel("validation - test Dice")
    extremes = np.concatenate([gap, gap_low, gap_high, [0.0]])
    extremes = extremes[np.isfinite(extremes)]
    margin = max(float(np.ptp(extremes)) * 0.15, 0.005)
    ax_gap.set_ylim(float(extremes.min()) - margin, float(extremes.max()) + margin)
    for axis in (ax, ax_gap):
        axis.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig
