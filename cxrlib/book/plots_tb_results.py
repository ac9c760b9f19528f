"""Figures of the TB classification results. Every function returns a Figure.

Inputs are the tables of :mod:`cxrlib.tb.metrics`, :mod:`cxrlib.tb.calibration` and
:mod:`cxrlib.book.tb_experiments` (:func:`~cxrlib.book.tb_experiments.compare_pipelines`,
``roc_with_ci``, ``confusion_matrix_table``, ``operating_points``,
``reliability_table``) and the occlusion maps of :mod:`cxrlib.tb.saliency`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cxrlib.book.plots import overlay_mask
from cxrlib.book.tb_experiments import pipeline_label
from cxrlib.tb.metrics import WHO_MIN_SENSITIVITY, WHO_MIN_SPECIFICITY

__all__ = [
    "pipeline_comparison",
    "roc_curves",
    "confusion_matrix",
    "reliability_diagrams",
    "saliency_grid",
]

_OK = "ok"
_MARKERS = {"logreg": "o", "svm": "s", "gboost": "^", "mlp": "D", "ensemble": "P"}
_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]


def pipeline_comparison(
    table: pd.DataFrame,
    *,
    references: Mapping[str, float] | None = None,
    width: float = 7.0,
) -> Figure:
    """AUC with its 95 % interval for every pipeline, unavailable ones listed in grey.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`cxrlib.tb.pipeline.compare_pipelines` (columns
        ``extractor``, ``classifier``, ``auc``, ``auc_low``, ``auc_high``, ``status``).
    references : mapping of str to float, optional
        Published AUCs drawn as labelled vertical lines (e.g. ``{"Jaeger 2014, CHN": 0.90}``).
    width : float, default 7
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One row per pipeline, best first; a marker per classifier, a colour per
        extractor; rows that did not run show the short form of their status
        (before the first colon) instead of a point.
    """
    import matplotlib.pyplot as plt

    needed = {"extractor", "classifier", "auc", "auc_low", "auc_high", "status"}
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(f"table lacks column(s) {missing} (see compare_pipelines)")
    if table.empty:
        raise ValueError("table has no pipeline: nothing to plot")
    rows = table.reset_index(drop=True)
    extractors = list(dict.fromkeys(rows["extractor"]))
    colors = {e: _COLORS[i % len(_COLORS)] for i, e in enumerate(extractors)}
    fig, ax = plt.subplots(figsize=(width, 0.32 * len(rows) + 1.4))
    ys = np.arange(len(rows))[::-1]
    ok = rows["status"] == _OK
    lows = rows.loc[ok, "auc_low"].astype(float)
    left = min(0.5, float(lows.min()) - 0.05) if ok.any() else 0.5
    for y, row in zip(ys, rows.itertuples(index=False), strict=True):
        if row.status == _OK:
            ax.errorbar(
                row.auc,
                y,
                xerr=[[row.auc - row.auc_low], [row.auc_high - row.auc]],
                fmt=_MARKERS.get(row.classifier, "o"),
                color=colors[row.extractor],
                capsize=2,
                markersize=5,
            )
        else:
            short = str(row.status).split(":")[0]  # the table has the details
            ax.text(left + 0.005, y, short, va="center", fontsize=7, color="0.45")
    labels = [pipeline_label(r.extractor, r.classifier) for r in rows.itertuples(index=False)]
    ax.set_yticks(ys, labels, fontsize=8)
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axvline(value, color="0.5", linestyle=("--", ":", "-.")[i % 3], linewidth=0.9)
        ax.text(value, len(rows) - 0.4, name, rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlim(left, 1.0)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("cross-validated ROC AUC (95 % bootstrap interval)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _check_curve(name: str, curve: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, float, Any]:
    try:
        fpr, tpr, auc, interval = curve
    except (TypeError, ValueError):
        raise ValueError(
            f"curve {name!r} must be (fpr, tpr, auc, (low, high)) as from roc_with_ci"
        ) from None
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    if fpr.shape != tpr.shape or fpr.ndim != 1:
        raise ValueError(f"curve {name!r}: fpr and tpr must be 1-D arrays of one length")
    return fpr, tpr, float(auc), interval


def roc_curves(
    curves: Mapping[str, Sequence[Any]],
    *,
    operating_points: pd.DataFrame | None = None,
    size: float = 4.6,
) -> Figure:
    """ROC curves with their AUC and interval, and the WHO target region.

    Parameters
    ----------
    curves : mapping of str to (fpr, tpr, auc, (low, high))
        As returned by :func:`cxrlib.tb.evaluate.roc_with_ci`, e.g. ``{"all": ...,
        "shenzhen": ...}``; drawn in order, the first one thicker.
    operating_points : pandas.DataFrame, optional
        :func:`cxrlib.tb.evaluate.operating_points` of the first curve: each point is
        marked with a letter (A, B, ...) explained in the legend, filled when it
        meets the WHO target.
    size : float, default 4.6
        Figure side in inches.

    Returns
    -------
    matplotlib.figure.Figure
        Sensitivity against 1 - specificity; the shaded corner is the WHO
        target (sensitivity >= 0.90 at specificity >= 0.70).
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig, ax = plt.subplots(figsize=(size, size))
    ax.fill_between(
        [0.0, 1.0 - WHO_MIN_SPECIFICITY],
        WHO_MIN_SENSITIVITY,
        1.0,
        color="#55a868",
        alpha=0.15,
        label="WHO target",
    )
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=0.8)
    for i, (name, curve) in enumerate(curves.items()):
        fpr, tpr, auc, (low, high) = _check_curve(name, curve)
        ax.plot(
            fpr,
            tpr,
            color=_COLORS[i % len(_COLORS)],
            linewidth=2.0 if i == 0 else 1.2,
            label=f"{name}: AUC {auc:.3f} [{low:.3f}, {high:.3f}]",
        )
    if operating_points is not None and len(operating_points):
        offsets = [(6, -13), (-13, 5)]
        for k, (name, row) in enumerate(operating_points.iterrows()):
            letter = chr(ord("A") + k)
            point = (1.0 - row["specificity"], row["sensitivity"])
            ax.plot(
                *point,
                marker="o",
                markersize=6,
                color="black",
                markerfacecolor="black" if row["meets_target"] else "white",
                linestyle="none",
                label=f"{letter}: {name}",
            )
            ax.annotate(
                letter,
                point,
                textcoords="offset points",
                xytext=offsets[k % 2],
                fontsize=8,
                fontweight="bold",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (normal radiographs called TB)")
    ax.set_ylabel("sensitivity (TB radiographs found)")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def confusion_matrix(table: pd.DataFrame, *, title: str | None = None, size: float = 3.6) -> Figure:
    """A 2 x 2 confusion matrix with counts and the share of each true class.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`cxrlib.tb.evaluate.confusion_matrix_table` (rows ``true ...``,
        columns ``predicted ...``).
    title : str, optional
    size : float, default 3.6

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    values = np.asarray(table, dtype=float)
    if values.shape != (2, 2):
        raise ValueError(f"table must be 2 x 2, got shape {values.shape}")
    totals = values.sum(axis=1, keepdims=True)
    shares = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    fig, ax = plt.subplots(figsize=(size + 0.6, size))
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (r, c), count in np.ndenumerate(values):
        color = "white" if shares[r, c] > 0.6 else "black"
        ax.text(c, r, f"{int(count)}\n({shares[r, c]:.0%})", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], list(table.columns), fontsize=8)
    ax.set_yticks([0, 1], list(table.index), fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


_RELIABILITY_COLUMNS = ("site", "count", "mean_predicted", "observed")


def reliability_diagrams(
    table: pd.DataFrame,
    *,
    before: pd.DataFrame | None = None,
    size: float = 3.2,
) -> Figure:
    """Reliability diagrams, one panel per site: observed fraction of TB against prediction.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`cxrlib.tb.calibration.reliability_table` (e.g. of the calibrated
        out-of-fold probabilities); a panel per ``site``, in the table's order.
    before : pandas.DataFrame, optional
        The same of the uncalibrated probabilities, drawn in grey for comparison.
    size : float, default 3.2
        Panel side in inches.

    Returns
    -------
    matplotlib.figure.Figure
        In each panel: the diagonal (a calibrated classifier), each bin's observed
        fraction with its Wilson interval at its mean predicted probability (marker
        area grows with the bin's count, which is also shown as grey bars at the
        bottom), and the panel's number of radiographs in the title.
    """
    import matplotlib.pyplot as plt

    for name, frame in (("table", table), ("before", before)):
        if frame is None:
            continue
        missing = sorted(set(_RELIABILITY_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing} (see reliability_table)")
    if table.empty:
        raise ValueError("table has no bin: nothing to plot")
    sites = list(dict.fromkeys(table["site"]))
    fig, axes = plt.subplots(
        1, len(sites), figsize=(size * len(sites), size + 0.4), squeeze=False, sharey=True
    )
    for ax, site in zip(axes[0], sites, strict=True):
        part = table[table["site"] == site]
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=0.9)
        if "bin_low" in part and "bin_high" in part:
            widths = (part["bin_high"] - part["bin_low"]).to_numpy(float)
            share = part["count"].to_numpy(float) / part["count"].max() * 0.15
            ax.bar(part["bin_low"], share, width=widths, align="edge", color="0.85", zorder=0)
        if before is not None:
            old = before[before["site"] == site]
            ax.plot(
                old["mean_predicted"],
                old["observed"],
                marker="s",
                markersize=3,
                color="0.55",
                linewidth=0.8,
                label="uncalibrated",
            )
        errors = None
        if {"observed_low", "observed_high"} <= set(part.columns):
            errors = [
                (part["observed"] - part["observed_low"]).to_numpy(float),
                (part["observed_high"] - part["observed"]).to_numpy(float),
            ]
        ax.errorbar(
            part["mean_predicted"],
            part["observed"],
            yerr=errors,
            color=_COLORS[0],
            linewidth=1.2,
            capsize=2,
            label="calibrated" if before is not None else None,
        )
        ax.scatter(
            part["mean_predicted"],
            part["observed"],
            s=8 + 60 * part["count"] / part["count"].max(),
            color=_COLORS[0],
            zorder=3,
        )
        ax.set_title(f"{site} (n = {int(part['count'].sum())})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted TB probability", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("observed fraction with TB", fontsize=8)
    if before is not None:
        axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def _heat(item: Any) -> np.ndarray:
    heat = getattr(item, "heatmap", item)
    return np.asarray(heat, dtype=np.float32)


def saliency_grid(
    images: np.ndarray,
    masks: np.ndarray,
    maps: Sequence[Any],
    titles: Sequence[str],
    *,
    size: float = 2.4,
    alpha: float = 0.8,
) -> Figure:
    """Radiographs with their lung masks (top) and occlusion sensitivity (bottom).

    Parameters
    ----------
    images : numpy.ndarray
        ``float32 (N, H, W)`` in ``[0, 1]``.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks the pipeline used.
    maps : sequence
        ``N`` :class:`cxrlib.tb.saliency.OcclusionMap` (or ``(H, W)`` arrays).
    titles : sequence of str
        ``N`` column titles.
    size : float, default 2.4
        Panel side in inches.
    alpha : float, default 0.8
        Opacity of the sensitivity overlay where it is strongest (it fades to
        transparent where the sensitivity is 0).

    Returns
    -------
    matplotlib.figure.Figure
        Two rows of ``N`` panels and one colour bar: red where occluding the
        region lowers the TB probability (the region supports TB), blue where
        it raises it; one symmetric scale for all panels.
    """
    import matplotlib.pyplot as plt

    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == 4:
        images = images[..., 0]
    if masks.ndim == 4:
        masks = masks[..., 0]
    count = len(images)
    if count == 0:
        raise ValueError("saliency_grid needs at least one image")
    if not (len(masks) == len(maps) == len(titles) == count):
        raise ValueError(
            f"got {count} images, {len(masks)} masks, {len(maps)} maps and {len(titles)} titles"
        )
    heats = [_heat(m) for m in maps]
    for heat, image in zip(heats, images, strict=True):
        if heat.shape != image.shape:
            raise ValueError(f"a map of shape {heat.shape} does not match its image {image.shape}")
    limit = max(float(np.max(np.abs(h))) for h in heats) or 1e-6
    norm = Normalize(vmin=-limit, vmax=limit)
    cmap = plt.get_cmap("RdBu_r")
    fig, axes = plt.subplots(
        2, count, figsize=(size * count + 0.9, 2 * size + 0.3), squeeze=False, layout="constrained"
    )
    for k in range(count):
        overlay_mask(axes[0, k], images[k], masks[k])
        axes[0, k].set_title(titles[k], fontsize=8)
        axes[1, k].imshow(images[k], cmap="gray", vmin=0.0, vmax=1.0)
        colours = cmap(norm(heats[k]))
        colours[..., 3] = alpha * np.clip(np.abs(heats[k]) / limit, 0.0, 1.0) ** 0.5
        axes[1, k].imshow(colours)
        axes[1, k].contour(masks[k], levels=[0.5], colors=["#f0e442"], linewidths=0.6)
        axes[1, k].set_axis_off()
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=axes, shrink=0.45, pad=0.02)
    bar.set_label("drop of TB probability", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig
