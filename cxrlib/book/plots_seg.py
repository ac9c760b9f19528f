"""Figures for the segmentation chapters. Every function returns a matplotlib Figure.

* :func:`training_curves`: loss, Dice and learning rate per epoch, training vs validation,
  for one run or several side by side;
* :func:`outline_cases`: radiographs with the reference and the predicted lung outline;
* :func:`site_scores_chart`: per-site Dice and IoU with 95 % intervals for several runs;
* :func:`cross_site_chart`: the cross-site experiment (train on one site, test on each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.book.plots import SITE_COLORS

__all__ = [
    "TRUTH_COLOR",
    "PRED_COLOR",
    "training_curves",
    "outline_cases",
    "site_scores_chart",
    "cross_site_chart",
]

#: Outline colours: reference mask (green) and prediction (orange).
TRUTH_COLOR = "#2ca02c"
PRED_COLOR = "#ff7f0e"
_SERIES_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_PANELS = (("loss", "loss (BCE + Dice)"), ("dice", "Dice"), ("learning_rate", "learning rate"))


def _as_histories(histories: Mapping[str, pd.DataFrame] | pd.DataFrame) -> dict:
    if isinstance(histories, pd.DataFrame):
        histories = {"": histories}
    out = dict(histories)
    if not out:
        raise ValueError("training_curves needs at least one history")
    for name, table in out.items():
        missing = [c for c in ("loss", "val_loss", "dice", "val_dice") if c not in table]
        if missing:
            raise ValueError(f"history {name!r} lacks column(s) {missing}")
    return out


def training_curves(
    histories: Mapping[str, pd.DataFrame] | pd.DataFrame, *, size: float = 3.4
) -> Figure:
    """Loss, Dice and learning rate per epoch; training dashed, validation solid.

    Parameters
    ----------
    histories : pandas.DataFrame or mapping of str -> pandas.DataFrame
        ``TrainResult.history`` tables (columns ``loss``, ``val_loss``, ``dice``,
        ``val_dice`` and optionally ``epoch``, ``learning_rate``), keyed by a
        name shown in the legend when there are several.
    size : float, default 3.4
        Height of the panels in inches.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels; the best validation Dice of each run is marked with a dot.
    """
    import matplotlib.pyplot as plt

    runs = _as_histories(histories)
    fig, axes = plt.subplots(1, 3, figsize=(3.4 * size, size), squeeze=False)
    for index, (name, table) in enumerate(runs.items()):
        color = _SERIES_COLORS[index % len(_SERIES_COLORS)]
        epochs = table["epoch"].to_numpy() + 1 if "epoch" in table else np.arange(1, len(table) + 1)
        label = f"{name} " if name else ""
        for ax, (column, _title) in zip(axes[0], _PANELS, strict=True):
            if column == "learning_rate":
                if column in table:
                    ax.plot(epochs, table[column], color=color, label=name or None)
                continue
            ax.plot(epochs, table[column], "--", color=color, label=f"{label}train")
            ax.plot(epochs, table[f"val_{column}"], "-", color=color, label=f"{label}validation")
        best = int(np.nanargmax(table["val_dice"].to_numpy()))
        axes[0, 1].plot(epochs[best], table["val_dice"].iloc[best], "o", color=color)
    for ax, (column, title) in zip(axes[0], _PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if column == "learning_rate":
            ax.set_yscale("log")
            if len(runs) > 1:
                ax.legend(fontsize=8)
        else:
            ax.legend(fontsize=8)
    axes[0, 1].set_ylim(0, 1)
    fig.tight_layout()
    return fig


def _wrap_title(title: str, width: int) -> str:
    """Break a ``" · "``-separated panel title into lines of at most ``width`` characters."""
    lines: list[str] = []
    for part in str(title).split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def outline_cases(
    images: np.ndarray,
    truths: np.ndarray,
    preds: np.ndarray,
    titles: Sequence[str],
    *,
    ncols: int = 4,
    size: float = 2.8,
) -> Figure:
    """Radiographs with the reference (green) and predicted (orange) lung outlines.

    Parameters
    ----------
    images : ndarray, float, shape (N, H, W) or (N, H, W, 1), values in [0, 1]
    truths, preds : ndarray, bool, shape (N, H, W) or (N, H, W, 1)
    titles : sequence of str, length N
        Titles longer than the panel is wide break into lines at ``" · "``.
    ncols : int, default 4
    size : float, default 2.8
        Side of one panel in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    images, truths, preds = (
        _planes(a, name) for a, name in ((images, "images"), (truths, "truths"), (preds, "preds"))
    )
    count = len(images)
    if count == 0:
        raise ValueError("outline_cases needs at least one image")
    if not len(truths) == len(preds) == len(titles) == count:
        raise ValueError(
            f"images ({count}), truths ({len(truths)}), preds ({len(preds)}) and titles "
            f"({len(titles)}) must have the same length"
        )
    ncols = max(1, min(int(ncols), count))
    nrows = int(np.ceil(count / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False
    )
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= count:
            continue
        ax.imshow(images[index], cmap="gray", vmin=0.0, vmax=1.0)
        for mask, color, style in (
            (truths[index], TRUTH_COLOR, "solid"),
            (preds[index], PRED_COLOR, "dashed"),
        ):
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.1, linestyles=style)
        ax.set_title(_wrap_title(titles[index], int(size * 14)), fontsize=8)
    handles = [
        Line2D([], [], color=TRUTH_COLOR, label="reference mask"),
        Line2D([], [], color=PRED_COLOR, linestyle="--", label="prediction"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.03, 1, 1))
    return fig


def _planes(array: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(array)
    if values.ndim == 4 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {values.shape}")
    return values


def _errorbars(ax, table: pd.DataFrame, metric: str, group: str, x: str, colors: Mapping) -> None:
    """Points with 95 % interval bars: one series per ``group`` value, categories ``x``."""
    categories = list(dict.fromkeys(table[x].astype(str)))
    groups = list(dict.fromkeys(table[group].astype(str)))
    width = 0.7 / max(1, len(groups))
    for gi, name in enumerate(groups):
        part = table[table[group].astype(str) == name]
        part = part.set_axis(part[x].astype(str), axis=0)
        xs, ys, lows, highs = [], [], [], []
        for ci, category in enumerate(categories):
            if category not in part.index:
                continue
            row = part.loc[category]
            xs.append(ci + (gi - (len(groups) - 1) / 2) * width)
            ys.append(row[f"{metric}_mean"])
            lows.append(row[f"{metric}_mean"] - row[f"{metric}_low"])
            highs.append(row[f"{metric}_high"] - row[f"{metric}_mean"])
        color = colors.get(name, _SERIES_COLORS[gi % len(_SERIES_COLORS)])
        ax.errorbar(
            xs, ys, yerr=[lows, highs], fmt="o", capsize=4, color=color, label=name, markersize=6
        )
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def site_scores_chart(scores: pd.DataFrame, *, size: float = 3.4) -> Figure:
    """Mean Dice and IoU per site with 95 % bootstrap intervals, one series per run.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`cxrlib.book.seg_tables.score_table` output (columns ``name``, ``site``,
        ``dice_mean``, ``dice_low``, ``dice_high``, ``iou_mean``, ``iou_low``,
        ``iou_high``; optionally ``n``).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (Dice, IoU). The y axis does not start at zero.
    """
    import matplotlib.pyplot as plt

    needed = ["name", "site"] + [
        f"{m}_{s}" for m in ("dice", "iou") for s in ("mean", "low", "high")
    ]
    missing = [c for c in needed if c not in scores]
    if missing:
        raise ValueError(f"scores lacks column(s) {missing}")
    if scores.empty:
        raise ValueError("scores has no rows")
    table = scores.copy()
    if "n" in table:
        table["site"] = table["site"].astype(str) + "\n(n=" + table["n"].astype(str) + ")"
        # the same site can have different n per run only if the splits differ
        table["site"] = table.groupby(scores["site"].astype(str))["site"].transform("first")
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.6, size), squeeze=False)
    for ax, metric in zip(axes[0], ("dice", "iou"), strict=True):
        _errorbars(ax, table, metric, "name", "site", {})
        name = "Dice" if metric == "dice" else "IoU"
        ax.set_ylabel(f"mean {name} (95 % CI)")
        ax.set_title(name)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def cross_site_chart(table: pd.DataFrame, *, size: float = 3.4) -> Figure:
    """Mean Dice (95 % CI) on each test site, per training site; one panel per model.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`cxrlib.book.crosssite.cross_site_experiment` output (columns
        ``train_site``, ``test_site``, ``model``, ``dice_mean``, ``dice_low``,
        ``dice_high``).

    Returns
    -------
    matplotlib.figure.Figure
        Points coloured by training site (the site colours of :mod:`cxrlib.book.plots`);
        filled where the test site is the training site, hollow across sites.
    """
    import matplotlib.pyplot as plt

    needed = ["train_site", "test_site", "model", "dice_mean", "dice_low", "dice_high"]
    missing = [c for c in needed if c not in table]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    if table.empty:
        raise ValueError("table has no rows")
    models = list(dict.fromkeys(table["model"].astype(str)))
    fig, axes = plt.subplots(
        1, len(models), figsize=(size * len(models) + 0.6, size), squeeze=False, sharey=True
    )
    for ax, model in zip(axes[0], models, strict=True):
        part = table[table["model"].astype(str) == model].rename(
            columns={"train_site": "trained on"}
        )
        _errorbars(ax, part, "dice", "trained on", "test_site", SITE_COLORS)
        for line in ax.lines:
            line.set_markerfacecolor(line.get_color())
        _hollow_cross_site(ax, part)
        ax.set_title(model)
        ax.set_xlabel("test site")
        ax.legend(title="trained on", fontsize=8, title_fontsize=8)
    axes[0, 0].set_ylabel("mean Dice (95 % CI)")
    fig.tight_layout()
    return fig


def _hollow_cross_site(ax, part: pd.DataFrame) -> None:
    """Overdraw the cross-site points hollow (white face)."""
    categories = list(dict.fromkeys(part["test_site"].astype(str)))
    groups = list(dict.fromkeys(part["trained on"].astype(str)))
    width = 0.7 / max(1, len(groups))
    for gi, name in enumerate(groups):
        rows = part[
            (part["trained on"].astype(str) == name) & (part["test_site"].astype(str) != name)
        ]
        for row in rows.itertuples():
            x = categories.index(str(row.test_site)) + (gi - (len(groups) - 1) / 2) * width
            color = SITE_COLORS.get(name, "#333333")
            ax.plot(
                x,
                row.dice_mean,
                "o",
                markerfacecolor="white",
                markeredgecolor=color,
                markersize=6,
                zorder=3,
            )
