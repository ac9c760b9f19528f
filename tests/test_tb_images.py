"""Tests for cxrlib.book.tb_images and its figures in cxrlib.book.plots_tb, on hand-built arrays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cxrlib.book import plots_tb, tb_images  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _two_lungs(height: int = 12, width: int = 14) -> np.ndarray:
    """Two 9-row lungs: image columns 1-4 (patient's right) and 8-12 (patient's left)."""
    mask = np.zeros((height, width), bool)
    mask[1:10, 1:5] = True  # 36 px
    mask[1:10, 8:13] = True  # 45 px
    return mask


def _table(n: int, labels=None, sites=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(n)],
            "site": sites if sites is not None else ["shenzhen"] * n,
            "label": pd.array(labels if labels is not None else [0] * n, dtype="Int64"),
        }
    )


# ---------------------------------------------------------------------- lung_appearance


def test_lung_appearance_measures_mean_std_and_asymmetry_inside_the_mask():
    mask = _two_lungs()
    image = np.ones(mask.shape, np.float32)  # outside the lungs: 1.0, never counted
    image[1:10, 1:5] = 0.2  # patient's right lung
    image[1:10, 8:13] = 0.6  # patient's left lung
    stats = tb_images.lung_appearance(_table(1), image[None], mask[None], np.array([True]))
    row = stats.iloc[0]
    assert list(stats.columns) == ["id", "site", "label", *tb_images.FEATURES]
    assert row.lung_fraction == pytest.approx(81 / mask.size)
    expected_mean = (36 * 0.2 + 45 * 0.6) / 81
    assert row.lung_mean == pytest.approx(expected_mean, abs=1e-6)
    assert row.lung_std == pytest.approx(np.std([0.2] * 36 + [0.6] * 45), abs=1e-6)
    assert row.left_right_asymmetry == pytest.approx(0.4, abs=1e-6)
    assert row.upper_minus_lower == pytest.approx(0.0, abs=1e-6)  # each column is uniform


def test_lung_appearance_upper_minus_lower_uses_the_thirds_of_each_lung():
    mask = _two_lungs()
    image = np.zeros(mask.shape, np.float32)
    image[1:4] = 0.9  # upper third of both lungs (rows 1-3)
    image[4:7] = 0.5
    image[7:10] = 0.1  # lower third (rows 7-9)
    stats = tb_images.lung_appearance(_table(1), image[None, ..., None], mask[None, ..., None], [1])
    assert stats.loc[0, "upper_minus_lower"] == pytest.approx(0.8, abs=1e-6)
    assert stats.loc[0, "left_right_asymmetry"] == pytest.approx(0.0, abs=1e-6)


def test_lung_texture_is_zero_on_flat_lungs_ignores_the_edge_and_grows_with_detail():
    mask = np.zeros((40, 40), bool)
    mask[4:36, 3:17] = True
    mask[4:36, 23:37] = True
    flat = np.where(mask, 0.3, 0.9).astype(np.float32)  # a strong edge at the lung border
    striped = flat.copy()
    bands = (np.arange(40) // 4) % 2 == 1  # 4-row bands, coarser than the gradient's sigma
    striped[bands] = np.where(mask[bands], 0.5, 0.9)
    stats = tb_images.lung_appearance(
        _table(2), np.stack([flat, striped]), np.stack([mask, mask]), [True, True]
    )
    flat_texture, striped_texture = stats["lung_texture"]
    assert flat_texture < 0.005  # the border's gradient is eroded away
    assert striped_texture > 0.02
    assert striped_texture > 10 * flat_texture


def test_lung_appearance_keeps_masked_rows_in_order_and_gives_nan_for_an_empty_mask():
    mask = _two_lungs()
    masks = np.stack([mask, mask, np.zeros_like(mask)])
    images = np.full(masks.shape, 0.5, np.float32)
    stats = tb_images.lung_appearance(
        _table(3, labels=[0, 1, 1]), images, masks.astype(np.uint8), [True, False, True]
    )
    assert list(stats["id"]) == ["img0", "img2"]
    assert list(stats["label"]) == [0, 1]
    assert stats.loc[0, "lung_mean"] == pytest.approx(0.5)
    assert stats.loc[1, "lung_fraction"] == 0.0
    assert stats.loc[1, tb_images.FEATURES[1:]].isna().all()


def test_lung_appearance_rejects_bad_shapes():
    mask = _two_lungs()[None]
    image = np.zeros_like(mask, np.float32)
    with pytest.raises(ValueError, match=r"images \(1, 12, 14\) and masks \(1, 12, 13\) differ"):
        tb_images.lung_appearance(_table(1), image, mask[:, :, :13], [True])
    with pytest.raises(ValueError, match=r"images must have shape \(N, H, W\)"):
        tb_images.lung_appearance(_table(1), image[0], mask, [True])
    with pytest.raises(ValueError, match="table has 2 rows"):
        tb_images.lung_appearance(_table(2), image, mask, [True])


# ------------------------------------------------------------------ appearance_by_label


def _stats() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(9)],
            "site": ["shenzhen"] * 6 + ["montgomery"] * 3,
            "label": pd.array([0, 0, 0, 1, 1, 1, 0, 0, pd.NA], dtype="Int64"),
            "up": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            "down": [6.0, 5.0, np.nan, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0],
            "flat": [1.0] * 9,
        }
    )


def test_appearance_by_label_gives_medians_and_auc_per_site_and_feature():
    table = tb_images.appearance_by_label(_stats(), ["up", "down", "flat"])
    assert list(table.index) == [
        (site, feature) for site in ("montgomery", "shenzhen") for feature in ("up", "down", "flat")
    ]
    shenzhen = table.loc["shenzhen"]
    assert shenzhen.loc["up"].tolist() == [3, 3, 2.0, 5.0, 1.0]
    assert shenzhen.loc["down", "auc"] == 0.0  # every TB value is lower
    assert shenzhen.loc["down", "n_normal"] == 2  # the NaN value is left out
    assert shenzhen.loc["down", "median_normal"] == 5.5
    assert shenzhen.loc["flat", "auc"] == 0.5  # ties: no signal
    montgomery = table.loc["montgomery"]
    assert montgomery.loc["up", "n_normal"] == 2 and montgomery.loc["up", "n_tb"] == 0
    assert np.isnan(montgomery.loc["up", "auc"])  # one label only (the unlabelled row is out)
    assert np.isnan(montgomery.loc["up", "median_tb"])


def test_appearance_by_label_matches_sklearn_and_reports_requested_sites():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    stats = pd.DataFrame(
        {"site": "shenzhen", "label": rng.integers(0, 2, 50), "value": rng.random(50)}
    )
    table = tb_images.appearance_by_label(stats, ["value"], sites=["shenzhen", "montgomery"])
    assert table.loc[("shenzhen", "value"), "auc"] == pytest.approx(
        roc_auc_score(stats["label"], stats["value"])
    )
    empty = table.loc[("montgomery", "value")]
    assert empty["n_normal"] == 0 and empty["n_tb"] == 0 and np.isnan(empty["auc"])


def test_appearance_by_label_rejects_missing_columns_and_bad_labels():
    with pytest.raises(ValueError, match=r"lacks the columns \['lung_texture'\]"):
        tb_images.appearance_by_label(_stats(), ["up", "lung_texture"])
    bad = _stats().assign(label=[0, 1, 2, 0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="labels must be 0 \\(normal\\), 1 \\(TB\\)"):
        tb_images.appearance_by_label(bad, ["up"])


# ---------------------------------------------------------------- mean_difference_image


def test_mean_difference_image_is_positive_where_tb_is_brighter():
    images = np.full((4, 6, 5), 0.2, np.float32)
    images[2:] = 0.5
    images[2:, 1:3, 1:3] = 1.0  # a bright finding on both TB images
    diff = tb_images.mean_difference_image(images[..., None], np.array([0, 0, 1, 1]))
    assert diff.dtype == np.float32 and diff.shape == (6, 5)
    expected = np.full((6, 5), 0.3, np.float32)
    expected[1:3, 1:3] = 0.8
    np.testing.assert_allclose(diff, expected, atol=1e-6)


def test_mean_difference_image_skips_unknown_labels_and_averages_inside_masks():
    images = np.stack([np.full((3, 3), v, np.float32) for v in (0.1, 0.3, 0.7, 0.9)])
    masks = np.ones(images.shape, bool)
    masks[0, 0, 0] = False  # at (0, 0) only the second normal image counts
    masks[:, 2, 2] = False  # no image covers (2, 2)
    labels = pd.array([0, 0, 1, pd.NA], dtype="Int64")
    diff = tb_images.mean_difference_image(images, labels, masks)
    assert diff[1, 1] == pytest.approx(0.7 - 0.2)
    assert diff[0, 0] == pytest.approx(0.7 - 0.3)
    assert np.isnan(diff[2, 2])


def test_mean_difference_image_within_strata_removes_the_site_share_of_tb():
    # Site a is dark and mostly TB, site b bright and mostly normal; within each site,
    # TB is 0.1 brighter. Pooled, TB looks darker; within sites, it is brighter.
    values = [0.0, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.6]
    labels = [0, 1, 1, 1, 0, 0, 0, 1]
    sites = ["a"] * 4 + ["b"] * 4
    images = np.stack([np.full((2, 2), v, np.float32) for v in values])
    pooled = tb_images.mean_difference_image(images, labels)
    within = tb_images.mean_difference_image(images, labels, strata=np.array(sites))
    np.testing.assert_allclose(pooled, -0.15, atol=1e-6)
    np.testing.assert_allclose(within, 0.1, atol=1e-6)


def test_mean_difference_image_names_the_missing_label_and_bad_shapes():
    images = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no TB radiograph"):
        tb_images.mean_difference_image(images, [0, 0, 0])
    with pytest.raises(ValueError, match="no normal radiograph"):
        tb_images.mean_difference_image(images, [1, None, 1])
    with pytest.raises(ValueError, match="labels has 2 entries but there are 3 images"):
        tb_images.mean_difference_image(images, [0, 1])
    with pytest.raises(ValueError, match=r"images \(3, 4, 4\) and masks \(3, 4, 3\) differ"):
        tb_images.mean_difference_image(images, [0, 1, 1], np.ones((3, 4, 3), bool))
    with pytest.raises(ValueError, match="no stratum has both"):
        tb_images.mean_difference_image(images, [0, 1, 1], strata=np.array(["a", "b", "b"]))


# ------------------------------------------------------------------------------ figures


def _appearance() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 40
    label = np.tile([0, 1], n // 2)
    stats = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "site": ["montgomery"] * (n // 2) + ["shenzhen"] * (n // 2),
            "label": label,
        }
    )
    for feature in tb_images.FEATURES:
        stats[feature] = rng.random(n)
    stats["lung_texture"] = label + 0.1 * rng.random(n)  # TB always has more texture
    return stats


def test_appearance_by_label_plot_has_one_panel_per_feature_with_boxes_and_auc():
    stats = _appearance()
    features = ["lung_mean", "lung_texture", "lung_std", "left_right_asymmetry"]
    fig = plots_tb.appearance_by_label_plot(stats, features)
    assert len(fig.axes) == 4  # the unused grid cells of the 2 x 3 grid are removed
    texture = fig.axes[1]
    assert texture.get_title() == "lung texture (mean gradient)"
    ticks = [t.get_text() for t in texture.get_xticklabels()]
    assert ticks == ["Montgomery\nAUC 1.00", "Shenzhen\nAUC 1.00"]
    colors = {tuple(np.round(p.get_facecolor()[:3], 3)) for p in texture.patches}
    expected = {
        tuple(np.round(matplotlib.colors.to_rgb(plots_tb.LABEL_COLORS[n]), 3))
        for n in ("normal", "TB")
    }
    assert len(texture.patches) == 4 and colors == expected  # 2 sites x 2 labels
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["normal", "TB"]


def test_appearance_by_label_plot_refuses_empty_or_all_nan_input():
    stats = _appearance()
    with pytest.raises(ValueError, match="no radiograph labelled"):
        plots_tb.appearance_by_label_plot(stats.iloc[:0])
    with pytest.raises(ValueError, match=r"\['lung_std'\] have no value"):
        plots_tb.appearance_by_label_plot(stats.assign(lung_std=np.nan))
    with pytest.raises(ValueError, match="lacks the columns"):
        plots_tb.appearance_by_label_plot(stats.drop(columns="lung_mean"))


def test_difference_image_plot_shows_the_input_on_a_centred_scale():
    diff = np.linspace(-0.02, 0.05, 30, dtype=np.float32).reshape(5, 6)
    diff[0, 0] = np.nan
    fig = plots_tb.difference_image_plot(diff)
    assert len(fig.axes) == 2  # the image and its colourbar
    shown = fig.axes[0].images[0]
    np.testing.assert_array_equal(np.ma.filled(shown.get_array(), np.nan), diff)
    assert shown.get_clim() == pytest.approx((-0.05, 0.05))
    assert shown.get_cmap().name == "RdBu_r"


def test_difference_image_plot_puts_the_mean_radiograph_beside_it():
    diff = np.full((4, 4, 1), 0.1, np.float32)
    mean = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    fig = plots_tb.difference_image_plot(diff, mean_image=mean)
    assert len(fig.axes) == 3
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), mean)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), diff[..., 0])
    assert fig.axes[0].get_title() == "mean radiograph"


def test_difference_image_plot_refuses_empty_all_nan_or_mismatched_input():
    with pytest.raises(ValueError, match="all NaN"):
        plots_tb.difference_image_plot(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match=r"non-empty \(H, W\)"):
        plots_tb.difference_image_plot(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"non-empty \(H, W\)"):
        plots_tb.difference_image_plot(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"mean_image \(2, 2\) and diff \(3, 3\) differ"):
        plots_tb.difference_image_plot(np.zeros((3, 3)), mean_image=np.zeros((2, 2)))
