"""Tests for cxrlib.book.plots_tb: every figure comes back with the expected axes and content."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cxrlib.book import (
    explore,
    findings,
    plots_tb,  # noqa: E402
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _table() -> pd.DataFrame:
    readings = [
        "normal",
        "normal",
        "right upper lobe infiltrate, consistent with TB",
        "Bilateral upper lobe cavitary lesions",
        "normal",
        "normal",
        "PTB in the left upper field",
        "bilateral PTB, right pleural effusion",
        "STB,ATB,tuberculosis pleuritis",
    ]
    return pd.DataFrame(
        {
            "id": [f"MCUCXR_{i:04d}" for i in range(4)] + [f"CHNCXR_{i:04d}" for i in range(5)],
            "site": ["montgomery"] * 4 + ["shenzhen"] * 5,
            "label": pd.array([0, 0, 1, 1, 0, 0, 1, 1, 1], dtype="Int64"),
            "sex": ["F", "M", "M", "F", "M", "F", "M", "M", "F"],
            "age": [30.0, 41.0, 55.0, 62.0, 25.0, 33.0, 48.0, 51.0, 39.0],
            "reading": readings,
        }
    )


def _texts(fig: Figure) -> str:
    parts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(parts)


def test_counts_by_site_one_panel_per_site_with_bar_heights():
    counts = explore.label_counts(_table())
    fig = plots_tb.counts_by_site(counts)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.patches]
    assert len(axes) == 2
    heights = {ax.get_title(): [p.get_height() for p in ax.patches] for ax in axes}
    assert heights == {"Montgomery (4)": [2, 2], "Shenzhen (5)": [2, 3]}
    assert "60 %" in _texts(fig)
    with pytest.raises(ValueError, match="no site"):
        plots_tb.counts_by_site(counts.iloc[:0])


def test_normal_vs_tb_puts_normals_left_and_tb_right_per_site():
    table = _table()
    chosen = findings.pick_by_site_and_label(table, 2, seed=0)
    rows = table.iloc[chosen]
    images = np.random.default_rng(0).random((len(rows), 16, 16, 1), dtype=np.float32)
    fig = plots_tb.normal_vs_tb(images, rows)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4  # two sites x (2 normal + 2 TB) columns
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(rows)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("normal") and titles[2].startswith("TB")
    assert titles[4].startswith("normal") and titles[6].startswith("TB")
    assert "PTB in the left upper" in _texts(fig) or "bilateral PTB" in _texts(fig)
    assert "Montgomery" in _texts(fig) and "Shenzhen" in _texts(fig)


def test_normal_vs_tb_without_readings_and_with_missing_groups():
    table = _table().assign(reading=None).iloc[[0, 4, 6, 7]]  # Montgomery has no TB here
    images = np.zeros((4, 8, 8), np.float32)
    fig = plots_tb.normal_vs_tb(images, table)
    assert len([ax for ax in fig.axes if ax.images]) == 4
    assert len(fig.axes) == 2 * 3  # 1 normal column + 2 TB columns
    assert "“" not in _texts(fig)  # no quoted reading
    with pytest.raises(ValueError, match="rows has 4 entries but images has 3"):
        plots_tb.normal_vs_tb(images[:3], table)
    with pytest.raises(ValueError, match="shape"):
        plots_tb.normal_vs_tb(np.zeros((4, 8)), table)


def test_keyword_bars_draws_two_bars_per_family_sorted_by_tb_share():
    table = _table()
    keywords = findings.keyword_table(table["reading"], table["label"])
    fig = plots_tb.keyword_bars(keywords)
    (ax,) = fig.axes
    assert len(ax.patches) == 2 * len(keywords)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert set(ticks) == set(keywords.index)
    assert ticks[-1] == keywords["pct_tb"].idxmax()  # the most frequent family on top
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths[-1] == pytest.approx(keywords["pct_tb"].max())


def test_keyword_bars_without_readings_says_so():
    empty = findings.keyword_table([None], [1])
    fig = plots_tb.keyword_bars(empty)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert "no clinical readings" in _texts(fig)
    with pytest.raises(ValueError, match="keyword_table"):
        plots_tb.keyword_bars(pd.DataFrame({"x": [1]}))


def test_age_by_label_one_panel_per_site():
    fig = plots_tb.age_by_label(_table())
    assert [ax.get_title() for ax in fig.axes] == ["Montgomery", "Shenzhen"]
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert labels == ["normal\n(n=2)", "TB\n(n=3)"]
    assert fig.axes[0].collections  # violins and points were drawn


def test_sex_by_label_stacked_shares():
    fig = plots_tb.sex_by_label(_table())
    (ax,) = fig.axes
    assert len(ax.patches) == 2 * 4  # female + male bar for 4 (site, label) groups
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert "Shenzhen · TB (n=3)" in ticks
    ends = sorted({round(p.get_x() + p.get_width(), 6) for p in ax.patches})
    assert ends[-1] == pytest.approx(1.0)


def test_demographic_figures_without_readings_say_so():
    table = _table().assign(sex=None, age=np.nan, reading=None)
    fig = plots_tb.age_by_label(table)
    assert len(fig.axes) == 1 and "no patient ages" in _texts(fig)
    fig = plots_tb.sex_by_label(table)
    assert len(fig.axes) == 1 and "no patient sex" in _texts(fig)
    with pytest.raises(ValueError, match="'age'"):
        plots_tb.age_by_label(table.drop(columns="age"))
