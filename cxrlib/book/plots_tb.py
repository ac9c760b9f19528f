"""Figures of the tuberculosis chapter. Every function returns a :class:`matplotlib.figure.Figure`.

Inputs are the tidy dataset table of :func:`cxrlib.data.datasets.scan_dataset` and the
tables of :mod:`cxrlib.book.findings`, :mod:`cxrlib.book.explore` and
:mod:`cxrlib.book.tb_images`. When the data lack what a reading figure shows (no readings,
no ages), the figure still comes back, with a panel that says what is missing; the image
figures, whose input every folder has, raise a ValueError on empty or all-NaN input.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.book import findings, tb_images

__all__ = [
    "LABEL_COLORS",
    "counts_by_site",
    "normal_vs_tb",
    "keyword_bars",
    "age_by_label",
    "sex_by_label",
    "appearance_by_label_plot",
    "difference_image_plot",
]

#: One colour per label, used in every figure of the chapter.
LABEL_COLORS: dict[str, str] = {"normal": "#4c72b0", "TB": "#dd8452", "unknown": "#999999"}
_SEX_COLORS = {"female": "#8172b3", "male": "#55a868"}
#: Panel titles of the measures of :func:`cxrlib.book.tb_images.lung_appearance`.
_FEATURE_TITLES = {
    "lung_fraction": "lung fraction of the image",
    "lung_mean": "mean lung intensity",
    "lung_std": "s.d. of lung intensity",
    "lung_texture": "lung texture (mean gradient)",
    "upper_minus_lower": "upper minus lower third",
    "left_right_asymmetry": "left-right asymmetry",
}


def _message(ax, text: str) -> None:
    """Write ``text`` in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    ax.set_axis_off()


def counts_by_site(counts: pd.DataFrame) -> Figure:
    """Bar charts of radiographs per label, one panel per site.

    Parameters
    ----------
    counts
        Output of :func:`cxrlib.book.explore.label_counts`: index = site, columns ``normal``,
        ``tb`` (and ``unknown``), ``total``.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per site; each bar is labelled with its count and share of the site.
    """
    import matplotlib.pyplot as plt

    if counts.empty:
        raise ValueError("counts has no site: nothing to plot")
    columns = [c for c in ("normal", "tb", "unknown") if c in counts.columns]
    names = ["TB" if c == "tb" else c for c in columns]
    sites = list(counts.index)
    fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites) + 0.4, 3.2), squeeze=False)
    for ax, site in zip(axes.flat, sites, strict=True):
        values = counts.loc[site, columns].to_numpy(dtype=float)
        total = values.sum()
        bars = ax.bar(names, values, color=[LABEL_COLORS[n] for n in names])
        shares = values / total if total else np.zeros_like(values)
        labels = [f"{int(v)}\n({100 * s:.0f} %)" for v, s in zip(values, shares, strict=True)]
        ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
        ax.set_title(f"{str(site).capitalize()} ({int(total)})")
        ax.margins(y=0.25)
    axes.flat[0].set_ylabel("radiographs")
    fig.tight_layout()
    return fig


def _caption(row, wrap: int, max_lines: int) -> str:
    label = findings.LABEL_NAMES.get(int(row.label), "unknown") if pd.notna(row.label) else "?"
    head = f"{label} · {row.id}"
    reading = getattr(row, "reading", None)
    if reading is None or (isinstance(reading, float) and np.isnan(reading)) or not reading:
        return head
    lines = textwrap.wrap(f"“{reading}”", width=wrap)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, wrap - 1)].rstrip() + "…"
    return "\n".join([head, *lines])


def normal_vs_tb(
    images: np.ndarray,
    rows: pd.DataFrame,
    *,
    size: float = 2.4,
    wrap: int = 30,
    max_lines: int = 3,
) -> Figure:
    """Normal and TB radiographs side by side, one row per site.

    Parameters
    ----------
    images
        ``float32`` ``(N, H, W)`` or ``(N, H, W, 1)`` in ``[0, 1]``, in the order of ``rows``.
    rows
        The ``N`` table rows shown (columns ``id``, ``site``, ``label``; ``reading`` when
        available is quoted under the label), e.g. ``table.iloc[findings.pick_by_site_and_
        label(table, n)]``.
    size
        Side of each panel in inches.
    wrap, max_lines
        The reading is wrapped at ``wrap`` characters and cut after ``max_lines`` lines.

    Returns
    -------
    matplotlib.figure.Figure
        Rows are sites; normal radiographs on the left, TB on the right, a blank panel where
        a site has fewer radiographs of a label.
    """
    import matplotlib.pyplot as plt

    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim == 4 and stack.shape[-1] == 1:
        stack = stack[..., 0]
    if stack.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 1), got {stack.shape}")
    if len(rows) != stack.shape[0]:
        raise ValueError(f"rows has {len(rows)} entries but images has {stack.shape[0]}")
    if stack.shape[0] == 0:
        raise ValueError("normal_vs_tb needs at least one image")
    rows = rows.reset_index(drop=True)
    names = np.array(
        [
            findings.LABEL_NAMES.get(int(v), "unknown") if pd.notna(v) else "unknown"
            for v in rows["label"]
        ]
    )
    sites = list(dict.fromkeys(rows["site"]))
    width = {
        label: max(int(((rows["site"] == s) & (names == label)).sum()) for s in sites)
        for label in ("normal", "TB")
    }
    ncols = max(1, width["normal"] + width["TB"])
    fig, axes = plt.subplots(
        len(sites), ncols, figsize=(size * ncols, (size + 0.55) * len(sites)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for r, site in enumerate(sites):
        for label, offset in (("normal", 0), ("TB", width["normal"])):
            members = np.flatnonzero((rows["site"] == site).to_numpy() & (names == label))
            for k, index in enumerate(members):
                ax = axes[r, offset + k]
                ax.imshow(stack[index], cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_title(
                    _caption(rows.iloc[index], wrap, max_lines),
                    fontsize=7,
                    color=LABEL_COLORS[label],
                    loc="left",
                )
        axes[r, 0].text(
            -0.08,
            0.5,
            str(site).capitalize(),
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
            transform=axes[r, 0].transAxes,
        )
    fig.tight_layout()
    return fig


def keyword_bars(keywords: pd.DataFrame) -> Figure:
    """Horizontal bars: share of TB and of normal readings that mention each keyword family.

    Parameters
    ----------
    keywords
        Output of :func:`cxrlib.book.findings.keyword_table`.

    Returns
    -------
    matplotlib.figure.Figure
        Families sorted by their share among TB readings (most frequent on top); a panel
        that says so when the table is empty (no readings).
    """
    import matplotlib.pyplot as plt

    missing = [c for c in ("pct_tb", "pct_normal") if c not in keywords.columns]
    if missing:
        raise ValueError(f"keywords lacks the columns {missing}: pass findings.keyword_table()")
    n_rows = max(len(keywords), 1)
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * n_rows + 1.3))
    if keywords.empty:
        _message(ax, "no clinical readings in this folder:\nno keyword to count")
        return fig
    ordered = keywords.sort_values("pct_tb", ascending=True, kind="stable")
    positions = np.arange(len(ordered))
    height = 0.4
    for shift, column, name in (
        (height / 2, "pct_tb", "TB"),
        (-height / 2, "pct_normal", "normal"),
    ):
        values = ordered[column].fillna(0.0).to_numpy(dtype=float)
        bars = ax.barh(
            positions + shift, values, height=height, color=LABEL_COLORS[name], label=name
        )
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in values], fontsize=7, padding=2)
    ax.set_yticks(positions, list(ordered.index))
    ax.set_xlabel("readings that mention it (%)")
    ax.set_xlim(
        0, max(100.0, float(np.nanmax(ordered[["pct_tb", "pct_normal"]].to_numpy()))) * 1.08
    )
    ax.legend(title="readings", frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def age_by_label(table: pd.DataFrame) -> Figure:
    """Age by label, one panel per site: violins with the quartiles and the radiographs.

    Parameters
    ----------
    table
        The dataset table (columns ``site``, ``label``, ``age`` in years or NaN).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per site with known ages; a single panel with a note when no age is known.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    for column in ("site", "label", "age"):
        if column not in table.columns:
            raise ValueError(f"the dataset table has no {column!r} column")
    ages = pd.to_numeric(table["age"], errors="coerce")
    known = table.assign(age=ages)[ages.notna()]
    known = known.assign(
        label=[
            findings.LABEL_NAMES.get(int(v), "unknown") if pd.notna(v) else "unknown"
            for v in known["label"]
        ]
    )
    sites = sorted(known["site"].unique())
    fig, axes = plt.subplots(
        1,
        max(1, len(sites)),
        figsize=(3.4 * max(1, len(sites)) + 0.4, 3.4),
        squeeze=False,
        sharey=True,
    )
    if not sites:
        _message(axes[0, 0], "no patient ages in this folder (no clinical readings)")
        return fig
    order = [name for name in ("normal", "TB", "unknown") if name in set(known["label"])]
    for ax, site in zip(axes.flat, sites, strict=True):
        subset = known[known["site"] == site]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            sns.violinplot(
                data=subset,
                x="label",
                y="age",
                hue="label",
                order=order,
                hue_order=order,
                palette=LABEL_COLORS,
                inner="quart",
                cut=0,
                density_norm="width",
                legend=False,
                ax=ax,
            )
        sns.stripplot(
            data=subset, x="label", y="age", order=order, color="k", size=2, alpha=0.4, ax=ax
        )
        counts = subset["label"].value_counts()
        ax.set_xticks(range(len(order)), [f"{name}\n(n={counts.get(name, 0)})" for name in order])
        ax.set_title(str(site).capitalize())
        ax.set_xlabel("")
        ax.set_ylabel("age (years)")
    fig.tight_layout()
    return fig


def sex_by_label(table: pd.DataFrame) -> Figure:
    """Share of women and men per label and site, as stacked 100 % bars.

    Parameters
    ----------
    table
        The dataset table (columns ``site``, ``label``, ``sex`` as ``"M"``/``"F"``/None).

    Returns
    -------
    matplotlib.figure.Figure
        One bar per (site, label), annotated with the count of radiographs; a panel with a
        note when no sex is known.
    """
    import matplotlib.pyplot as plt

    shares = findings.sex_proportions(table)
    fig, ax = plt.subplots(figsize=(6.0, 0.45 * max(len(shares), 2) + 1.2))
    if shares.empty:
        _message(ax, "no patient sex in this folder (no clinical readings)")
        return fig
    labels = [
        f"{str(site).capitalize()} · {label} (n={int(n)})"
        for (site, label), n in shares["n"].items()
    ]
    positions = np.arange(len(shares))[::-1]
    left = np.zeros(len(shares))
    for column in ("female", "male"):
        values = shares[column].to_numpy(dtype=float)
        bars = ax.barh(positions, values, left=left, color=_SEX_COLORS[column], label=column)
        ax.bar_label(
            bars,
            labels=[f"{100 * v:.0f} %" if v >= 0.08 else "" for v in values],
            label_type="center",
            fontsize=8,
            color="white",
        )
        left += values
    ax.set_yticks(positions, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of radiographs")
    ax.legend(ncols=2, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def appearance_by_label_plot(
    stats: pd.DataFrame, features: Sequence[str] = tb_images.FEATURES, *, ncols: int = 3
) -> Figure:
    """Box plots of lung measures by site and label, one panel per measure.

    Parameters
    ----------
    stats
        Output of :func:`cxrlib.book.tb_images.lung_appearance`.
    features
        The measures shown, one panel each, in order.
    ncols
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(features)`` panels; in each, the sites side by side, normal and TB boxes in
        the chapter's label colours, and under each site the AUC of the measure as a TB
        score (:func:`cxrlib.book.tb_images.appearance_by_label`).

    Raises
    ------
    ValueError
        When ``stats`` lacks a column, has no labelled radiograph, or a measure has no value.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    features = list(features)
    missing = [c for c in ("site", "label", *features) if c not in stats.columns]
    if missing or not features:
        raise ValueError(
            f"stats lacks the columns {missing or ['(no feature)']}: "
            "pass tb_images.lung_appearance()"
        )
    names = pd.to_numeric(stats["label"], errors="coerce").map(findings.LABEL_NAMES)
    known = stats.assign(label=names.to_numpy())[names.notna().to_numpy()]
    if known.empty:
        raise ValueError("stats has no radiograph labelled normal or TB: nothing to plot")
    empty = [f for f in features if known[f].isna().all()]
    if empty:
        raise ValueError(f"the measures {empty} have no value (all NaN): nothing to plot")
    sites = sorted(known["site"].unique(), key=str)
    auc = tb_images.appearance_by_label(stats, features, sites=sites)["auc"]
    order = [name for name in ("normal", "TB") if name in set(known["label"])]
    ncols = max(1, min(ncols, len(features)))
    nrows = -(-len(features) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.0 * ncols + 0.4, 3.1 * nrows + 0.5), squeeze=False
    )
    for ax in axes.flat[len(features) :]:
        fig.delaxes(ax)
    for ax, feature in zip(axes.flat, features, strict=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)  # seaborn's bxp call
            sns.boxplot(
                data=known,
                x="site",
                y=feature,
                hue="label",
                order=sites,
                hue_order=order,
                palette=LABEL_COLORS,
                saturation=1.0,
                fliersize=1.5,
                linewidth=0.8,
                legend=False,
                ax=ax,
            )
        ticks = [f"{str(site).capitalize()}\nAUC {auc.loc[(site, feature)]:.2f}" for site in sites]
        ax.set_xticks(range(len(sites)), ticks, fontsize=8)
        ax.set_title(_FEATURE_TITLES.get(feature, feature), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=LABEL_COLORS[name]) for name in order]
    fig.legend(handles, order, ncols=len(order), frameon=False, loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def _image_2d(array: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(array, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) or (H, W, 1) array, got {image.shape}")
    return image


def difference_image_plot(diff: np.ndarray, mean_image: np.ndarray | None = None) -> Figure:
    """The mean TB radiograph minus the mean normal one, on a colour scale centred at 0.

    Parameters
    ----------
    diff
        ``float`` ``(H, W)`` or ``(H, W, 1)``, e.g. from
        :func:`cxrlib.book.tb_images.mean_difference_image`; NaN pixels are left blank.
    mean_image
        Optional mean radiograph of the same shape, shown on the left in gray.

    Returns
    -------
    matplotlib.figure.Figure
        The difference in a diverging colormap (red: TB brighter; blue: TB darker),
        symmetric about 0, with a colourbar; the mean radiograph beside it when given.

    Raises
    ------
    ValueError
        When ``diff`` is empty, all NaN or not 2-D, or ``mean_image`` has another shape.
    """
    import matplotlib.pyplot as plt

    image = _image_2d(diff, "diff")
    if np.isnan(image).all():
        raise ValueError("diff is all NaN: no pixel to show")
    panels = 1
    if mean_image is not None:
        mean = _image_2d(mean_image, "mean_image")
        if mean.shape != image.shape:
            raise ValueError(f"mean_image {mean.shape} and diff {image.shape} differ")
        panels = 2
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels + 0.9, 3.6), squeeze=False)
    if mean_image is not None:
        axes[0, 0].imshow(mean, cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, 0].set_title("mean radiograph", fontsize=9)
    ax = axes[0, -1]
    limit = float(np.nanmax(np.abs(image))) or 1e-6
    shown = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title("mean TB minus mean normal", fontsize=9)
    for panel in axes.flat:
        panel.set_axis_off()
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("intensity difference", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig
