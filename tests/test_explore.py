"""Tests for cxrlib.book.explore and cxrlib.book.plots on hand-made arrays."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from cxrlib.book import explore, plots

matplotlib.use("Agg")


def _table_and_masks():
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "site": ["montgomery", "montgomery", "shenzhen", "shenzhen"],
            "label": pd.array([0, 1, 0, pd.NA], dtype="Int64"),
            "sex": ["M", "F", None, "F"],
            "age": [40.0, 50.0, np.nan, 30.0],
        }
    )
    masks = np.zeros((4, 10, 10), bool)
    masks[0, 1:9, 1:4] = True  # right lung only (image left): 24 px
    masks[0, 1:9, 6:9] = True  # left lung: 24 px
    masks[1, 2:8, 2:8] = True  # 36 px spanning both halves
    masks[2, 4:6, 1:3] = True  # 4 px
    has_mask = np.array([True, True, True, False])
    return table, masks, has_mask


def test_lung_statistics_measures_area_and_extent():
    table, masks, has_mask = _table_and_masks()
    stats = explore.lung_statistics(table, masks[..., None], has_mask)
    assert list(stats["id"]) == ["a", "b", "c"]
    first = stats.iloc[0]
    assert first.lung_fraction == pytest.approx(0.48)
    assert first.right_lung_fraction == pytest.approx(0.24)
    assert first.left_lung_fraction == pytest.approx(0.24)
    assert first.lung_height == pytest.approx(0.8)
    assert first.lung_width == pytest.approx(0.8)
    assert stats.iloc[2].lung_fraction == pytest.approx(0.04)


def test_lung_statistics_rejects_mismatched_inputs():
    table, masks, has_mask = _table_and_masks()
    with pytest.raises(ValueError, match="same radiographs"):
        explore.lung_statistics(table.iloc[:3], masks, has_mask)
    with pytest.raises(ValueError, match="shape"):
        explore.lung_statistics(table, masks[0], has_mask)


def test_summary_and_site_comparison():
    table, masks, has_mask = _table_and_masks()
    stats = explore.lung_statistics(table, masks, has_mask)
    summary = explore.lung_size_summary(stats)
    assert summary.loc["montgomery", "n"] == 2
    assert summary.loc["montgomery", "mean_lung_fraction"] == pytest.approx(0.42)
    comparison = explore.compare_sites(stats)
    assert comparison["ratio"] == pytest.approx(0.04 / 0.42)
    assert 0 <= comparison["p_value"] <= 1
    with pytest.raises(ValueError, match="no radiograph"):
        explore.lung_size_summary(stats.iloc[0:0])


def test_label_counts_has_unknown_column_only_when_needed():
    table, _, _ = _table_and_masks()
    counts = explore.label_counts(table)
    assert counts.loc["montgomery", "normal"] == 1 and counts.loc["montgomery", "tb"] == 1
    assert counts.loc["shenzhen", "unknown"] == 1
    assert counts.loc["shenzhen", "total"] == 2
    known = explore.label_counts(table.iloc[:3])
    assert "unknown" not in known.columns


def test_intensity_samples_regions():
    table, masks, has_mask = _table_and_masks()
    images = np.where(masks, 0.2, 0.8).astype(np.float32)
    samples = explore.intensity_samples(
        images, masks, has_mask, table["site"].to_numpy(), per_image=10
    )
    lung = samples[samples.region == "lung"]["intensity"]
    outside = samples[samples.region == "outside"]["intensity"]
    assert np.allclose(lung, 0.2) and np.allclose(outside, 0.8)
    assert set(samples.region) == {"lung", "outside", "all"}


def test_pick_examples_spreads_over_groups_and_prefers_masks():
    table = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(12)],
            "site": ["montgomery"] * 6 + ["shenzhen"] * 6,
            "label": pd.array([0, 0, 0, 1, 1, 1] * 2, dtype="Int64"),
        }
    )
    has_mask = np.array([False, True, True, True, True, True] * 2)
    chosen = explore.pick_examples(table, has_mask, n=4, seed=1)
    picked = table.iloc[chosen]
    assert len(chosen) == 4
    assert set(zip(picked.site, picked.label, strict=True)) == {
        ("montgomery", 0),
        ("montgomery", 1),
        ("shenzhen", 0),
        ("shenzhen", 1),
    }
    assert has_mask[chosen].all()
    assert np.array_equal(chosen, explore.pick_examples(table, has_mask, n=4, seed=1))
    with pytest.raises(ValueError, match="at least 1"):
        explore.pick_examples(table, n=0)


def test_plots_return_figures():
    table, masks, has_mask = _table_and_masks()
    images = np.where(masks, 0.2, 0.8).astype(np.float32)
    stats = explore.lung_statistics(table, masks, has_mask)
    figures = [
        plots.example_grid(images, masks, ["a", "b", "c", "d"], ncols=3),
        plots.label_balance(explore.label_counts(table)),
        plots.lung_size_by_site(stats),
        plots.demographics(table),
        plots.demographics(table.assign(age=np.nan, sex=None)),
        plots.intensity_histograms(
            explore.intensity_samples(images, masks, has_mask, table["site"].to_numpy())
        ),
        plots.side_by_side(images[:2], images[2:], top_label="top", bottom_label="bottom"),
        plots.side_by_side(images[:2], None, top_label="top", bottom_label="none"),
    ]
    import matplotlib.pyplot as plt

    for figure in figures:
        assert figure.axes, "a figure without axes"
        plt.close(figure)
    assert len(figures[0].axes) == 6  # 2 rows x 3 columns, unused axes switched off
    with pytest.raises(ValueError, match="at least one"):
        plots.example_grid(images[:0], None, [])


def test_site_balance_reports_every_site():
    table = pd.DataFrame(
        {
            "site": ["montgomery"] * 4 + ["shenzhen"] * 3,
            "label": pd.array([0, 0, 0, 1, 1, 1, 0], dtype="Int64"),
        }
    )
    balance = explore.site_balance(explore.label_counts(table))
    assert list(balance.index) == ["montgomery", "shenzhen"]
    assert balance["total"].tolist() == [4, 3] and balance["total"].dtype.kind == "i"
    assert balance["pct_tb"].tolist() == pytest.approx([25.0, 200 / 3])
    one = explore.site_balance(explore.label_counts(table[table["site"] == "shenzhen"]))
    assert one.loc["montgomery", "total"] == 0 and np.isnan(one.loc["montgomery", "pct_tb"])
    with pytest.raises(ValueError, match="label_counts"):
        explore.site_balance(pd.DataFrame({"normal": [1]}))
