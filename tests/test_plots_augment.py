"""Tests for cxrlib.book.plots_augment (figures and the intensity table of the
augmentation chapter)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cxrlib.book.plots_augment import (
    augmentation_gallery,
    augmented_draws,
    intensity_histograms,
    intensity_summary,
    leakage_chart,
    transform_titles,
)
from cxrlib.seg.augment import AugmentationConfig, augment_examples


@pytest.fixture
def examples():
    size = 32
    ramp = np.tile(np.linspace(0.0, 1.0, size, dtype=np.float32), (size, 1))
    mask = np.zeros((size, size), bool)
    mask[8:24, 6:14] = True
    return augment_examples(ramp, mask, seed=0)


def test_titles_quote_the_settings():
    titles = transform_titles(AugmentationConfig(brightness=-30, contrast=-100, alpha=1.2))
    assert "b=-30" in titles["contrast_v1"] and "c=-100" in titles["contrast_v1"]
    assert "alpha=1.2" in titles["contrast_v2"]
    assert "epsilon=0.1" in transform_titles()["noise"]


def test_intensity_summary_shows_the_squeeze_of_contrast_v1(examples):
    table = intensity_summary(examples)
    assert list(table.index) == list(examples)
    assert {"min", "max", "range", "p1", "p99", "median", "std"} <= set(table.columns)
    assert table.loc["original", "range"] == pytest.approx(1.0)
    # contrast v1 with b=-40, c=-120: f = 0.0288, so a full-range image spans about 0.02
    v1 = table.loc["contrast_v1"]
    assert v1["range"] < 0.05
    assert 0.4 < v1["min"] < v1["max"] < 0.6
    # contrast v2 saturates the brightest third at 1
    assert table.loc["contrast_v2", "max"] == pytest.approx(1.0)
    assert table.loc["contrast_v2", "p99"] == pytest.approx(1.0)


def test_intensity_summary_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        intensity_summary({})


def test_gallery_has_one_titled_panel_per_transform(examples):
    fig = augmentation_gallery(examples, ncols=4)
    visible = [ax for ax in fig.axes if ax.get_title()]
    assert len(visible) == len(examples)
    assert any("contrast v1" in ax.get_title() for ax in visible)
    assert len(fig.axes) == 8  # 7 transforms in a 2 x 4 grid, one empty panel
    plt.close(fig)


def test_augmented_draws_differ_and_are_reproducible(examples):
    image, mask = examples["original"]
    config = AugmentationConfig(p_geometric=1.0)
    fig = augmented_draws(image, mask, config, n=4, seed=3)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert not np.allclose(shown[0], shown[1])
    again = augmented_draws(image, mask, config, n=4, seed=3)
    np.testing.assert_array_equal(shown[2], again.axes[2].images[0].get_array())
    plt.close(fig)
    plt.close(again)
    with pytest.raises(ValueError, match="n must be"):
        augmented_draws(image, mask, n=0)


def test_histograms_one_panel_per_name_and_unknown_names_raise(examples):
    fig = intensity_histograms(examples, ("original", "contrast_v1"))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xlim() == (0.0, 1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="hflip"):
        intensity_histograms(examples, ("original", "hflip"))


def _results(val=(0.95, 0.90), test=(0.90, 0.89)) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "val_dice": val,
            "test_dice": test,
            "val_low": [v - 0.01 for v in val],
            "val_high": [v + 0.01 for v in val],
            "test_low": [t - 0.02 for t in test],
            "test_high": [t + 0.02 for t in test],
        },
        index=pd.Index(["augment-then-split", "split-then-augment"], name="design"),
    )
    return table


def test_leakage_chart_gap_bars_are_val_minus_test():
    fig = leakage_chart(_results())
    ax_bars, ax_gap = fig.axes
    heights = [patch.get_height() for patch in ax_gap.patches]
    np.testing.assert_allclose(heights, [0.05, 0.01], atol=1e-9)
    low, high = ax_gap.get_ylim()
    assert low <= 0.0 < 0.05 < high
    assert len(ax_bars.patches) == 4
    low, high = ax_bars.get_ylim()
    assert low <= 0.87 and high == 1.0
    assert f"{low:.2f}" in ax_bars.get_ylabel()
    plt.close(fig)


def test_leakage_chart_gap_intervals_fit_in_the_axes():
    results = _results()
    results["gap_low"] = [0.03, -0.04]
    results["gap_high"] = [0.07, 0.06]
    fig = leakage_chart(results)
    _, ax_gap = fig.axes
    low, high = ax_gap.get_ylim()
    assert low < -0.04 and high > 0.07
    plt.close(fig)


def test_leakage_chart_needs_the_experiment_columns():
    with pytest.raises(ValueError, match="test_dice"):
        leakage_chart(_results().drop(columns="test_dice"))
    with pytest.raises(ValueError, match="empty"):
        leakage_chart(_results().iloc[:0])
