"""Tests for cxrlib.seg.metrics (numpy evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist, directed_hausdorff

from cxrlib import stats
from cxrlib.seg import metrics


def _square(shape=(32, 32), top=4, left=4, size=8):
    m = np.zeros(shape, bool)
    m[top : top + size, left : left + size] = True
    return m


def test_dice_and_iou_on_hand_made_masks():
    a = _square(top=4, left=4, size=4)  # 16 px
    b = _square(top=4, left=6, size=4)  # 16 px, overlap 2 x 4 = 8
    assert metrics.dice(a, b) == pytest.approx(2 * 8 / 32)
    assert metrics.iou(a, b) == pytest.approx(8 / 24)
    assert metrics.dice(a, a) == 1.0
    assert metrics.iou(a, ~a) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((8, 8), bool)
    full = _square((8, 8), 2, 2, 3)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.dice(full, empty) == 0.0
    assert metrics.hd95(empty, empty) == 0.0
    assert math.isnan(metrics.hd95(full, empty))
    assert math.isnan(metrics.mean_surface_distance(empty, full))


def test_float_and_channel_inputs_are_thresholded():
    a = _square()
    probs = a.astype(np.float32) * 0.9 + 0.05
    assert metrics.dice(probs[..., None], a) == 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="differ"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="pred must have shape"):
        metrics.iou(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(_square(), _square(), spacing=(1.0, 0.0))


def test_hd95_of_single_pixels_is_their_distance():
    a = np.zeros((16, 16), bool)
    b = np.zeros((16, 16), bool)
    a[5, 3] = True
    b[5, 10] = True
    assert metrics.hd95(a, b) == pytest.approx(7.0)
    assert metrics.mean_surface_distance(a, b) == pytest.approx(7.0)
    assert metrics.hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(3.5)
    b2 = np.zeros((16, 16), bool)
    b2[9, 6] = True  # 4 rows, 3 cols away
    assert metrics.hd95(a, b2) == pytest.approx(5.0)
    assert metrics.hd95(a, a) == 0.0


def test_hd95_of_shifted_square_equals_shift():
    a = _square(top=8, left=8, size=10)
    b = _square(top=8, left=11, size=10)  # shifted 3 columns
    # every boundary pixel's nearest other-boundary pixel is at most 3 away; the
    # left/right edges are exactly 3 away, top/bottom edges mostly 0
    assert 0 < metrics.hd95(a, b) <= 3.0
    assert metrics.hd95(a, b) == pytest.approx(3.0)


def _brute_force_distances(a, b, spacing=(1.0, 1.0)):
    def boundary(m):
        padded = np.pad(m, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & m
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    pa, pb = boundary(a), boundary(b)
    d = cdist(pa, pb)
    return np.concatenate([d.min(axis=1), d.min(axis=0)]), pa, pb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((40, 48)), 3) > 0.5)
    b = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((40, 48)), 3) > 0.5)
    a[10:20, 10:20] = True
    b[12:22, 14:24] = True
    spacing = (0.7, 1.3)
    expected, pa, pb = _brute_force_distances(a, b, spacing)
    assert metrics.hd95(a, b, spacing) == pytest.approx(np.percentile(expected, 95))
    assert metrics.mean_surface_distance(a, b, spacing) == pytest.approx(expected.mean())
    full_hausdorff = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert metrics.hd95(a, b, spacing) <= full_hausdorff + 1e-9


def test_per_image_scores_table():
    truths = np.stack([_square(), _square(), np.zeros((32, 32), bool)])
    preds = np.stack([_square(), _square(left=6), np.zeros((32, 32), bool)])
    df = metrics.per_image_scores(preds[..., None], truths, ids=["a", "b", "c"], sites=["MC"] * 3)
    assert list(df.columns) == ["id", "site", "dice", "iou", "hd95"]
    assert list(df["id"]) == ["a", "b", "c"]
    assert df["dice"].tolist() == pytest.approx([1.0, metrics.dice(preds[1], truths[1]), 1.0])
    assert df.loc[1, "iou"] == pytest.approx(48 / 80)
    assert df.loc[0, "hd95"] == 0.0
    with pytest.raises(ValueError, match="ids has 2 entries"):
        metrics.per_image_scores(preds, truths, ids=["a", "b"])


def test_summarize_by_site():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "id": range(30),
            "site": ["MC"] * 10 + ["CHN"] * 20,
            "dice": np.r_[rng.uniform(0.95, 0.99, 10), rng.uniform(0.85, 0.95, 20)],
            "iou": rng.uniform(0.8, 0.9, 30),
            "hd95": np.r_[np.arange(10.0), np.arange(19.0), np.nan],
        }
    )
    summary = metrics.summarize_by_site(df, n_boot=500)
    assert list(summary.index) == ["CHN", "MC", "all"]
    assert summary.loc["MC", "n"] == 10 and summary.loc["all", "n"] == 30
    assert summary.loc["MC", "dice_mean"] == pytest.approx(df["dice"][:10].mean())
    assert summary.loc["CHN", "hd95_median"] == pytest.approx(9.0)
    assert summary.loc["CHN", "hd95_undefined"] == 1
    assert summary.loc["MC", "hd95_undefined"] == 0
    for col in ("dice", "iou"):
        assert (summary[f"{col}_low"] <= summary[f"{col}_mean"]).all()
        assert (summary[f"{col}_mean"] <= summary[f"{col}_high"]).all()
    assert summary.loc["MC", "dice_low"] > summary.loc["CHN", "dice_high"]
    # the intervals are cxrlib.stats.bootstrap_ci's (the bootstrap is tested in test_stats)
    low, high = stats.bootstrap_ci(df["iou"][10:], n_boot=500)[1:]
    assert (summary.loc["CHN", "iou_low"], summary.loc["CHN", "iou_high"]) == (low, high)
    with pytest.raises(ValueError, match="hd95"):
        metrics.summarize_by_site(df.drop(columns="hd95"))
