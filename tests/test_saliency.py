"""Tests for cxrlib.tb.saliency: patch positions, occlusion maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.tb import saliency


def test_patch_positions_cover_every_pixel():
    corners = saliency.patch_positions((20, 14), patch=6, stride=4)
    covered = np.zeros((20, 14), int)
    for r, c in corners:
        covered[r : r + 6, c : c + 6] += 1
    assert (covered > 0).all()
    assert max(r for r, _ in corners) == 14 and max(c for _, c in corners) == 8
    assert corners[0] == (0, 0)


def test_patch_positions_keep_patches_that_touch_the_mask():
    mask = np.zeros((16, 16), bool)
    mask[0:2, 0:2] = True
    corners = saliency.patch_positions((16, 16), patch=4, stride=4, mask=mask)
    assert corners == [(0, 0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch": 0, "stride": 1}, "patch must be"),
        ({"patch": 4, "stride": 0}, "stride must be"),
        ({"patch": 40, "stride": 4}, "larger than the image"),
    ],
)
def test_patch_positions_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        saliency.patch_positions((16, 16), **kwargs)


def _region_score(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A 'classifier' that looks only at the brightness of rows 4-7, columns 8-11."""
    return images[:, 4:8, 8:12].mean(axis=(1, 2))


def test_occlusion_map_finds_the_region_the_score_uses():
    image = np.full((16, 16), 0.5, np.float32)
    mask = np.ones((16, 16), bool)
    result = saliency.occlusion_map(_region_score, image, mask, patch=4, stride=2, fill=0.0)
    assert result.base_score == pytest.approx(0.5)
    heat = result.heatmap
    assert heat.shape == (16, 16) and heat.dtype == np.float32
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 4 <= row < 8 and 8 <= col < 12
    assert heat[12:, :4].max() == pytest.approx(0.0)  # far from the region: no effect
    assert heat.min() >= 0.0  # darkening can only lower this score
    assert result.n_patches == 49 and (result.patch, result.stride) == (4, 2)


def test_occlusion_map_skips_patches_outside_the_lungs():
    image = np.full((16, 16), 0.5, np.float32)
    mask = np.zeros((16, 16), bool)
    mask[0:4, 0:4] = True
    calls = []

    def score(images, masks):
        calls.append(len(images))
        assert masks.shape == images.shape and masks[:, 0, 0].all()  # masks stay fixed
        return _region_score(images, masks)

    result = saliency.occlusion_map(score, image, mask, patch=4, stride=4, fill=0.0)
    assert result.n_patches == 1 and sum(calls) == 2  # base + one patch
    everything = saliency.occlusion_map(
        score, image, mask, patch=4, stride=4, fill=0.0, lungs_only=False
    )
    assert everything.n_patches == 16
    assert everything.heatmap[4:8, 8:12].min() == pytest.approx(0.5)


def test_mean_and_blur_fill_remove_texture():
    rng = np.random.default_rng(0)
    image = (0.5 + 0.2 * rng.standard_normal((24, 24))).clip(0, 1).astype(np.float32)
    mask = np.ones((24, 24), bool)

    def texture(images, masks):
        return images[:, 8:16, 8:16].std(axis=(1, 2))

    for fill in ("mean", "blur"):
        result = saliency.occlusion_map(texture, image, mask, patch=8, stride=4, fill=fill)
        centre = result.heatmap[8:16, 8:16].mean()
        corner = result.heatmap[:4, :4].mean()
        assert centre > 0.02 and centre > corner, fill


def test_occlusion_map_batches_do_not_change_the_result():
    rng = np.random.default_rng(1)
    image = rng.random((16, 16), dtype=np.float32)
    mask = np.ones((16, 16), bool)
    one = saliency.occlusion_map(_region_score, image, mask, patch=4, batch_size=1)
    many = saliency.occlusion_map(_region_score, image, mask, patch=4, batch_size=100)
    np.testing.assert_allclose(one.heatmap, many.heatmap, rtol=1e-6)


def test_occlusion_map_checks_its_inputs():
    image = np.zeros((8, 8), np.float32)
    mask = np.ones((8, 8), bool)
    with pytest.raises(ValueError, match="one TB probability per image"):
        saliency.occlusion_map(lambda i, m: np.zeros(3), image, mask, patch=4)
    with pytest.raises(ValueError, match="fill must be"):
        saliency.occlusion_map(_region_score, image, mask, patch=4, fill="noise")
    with pytest.raises(ValueError, match="one shape"):
        saliency.occlusion_map(_region_score, image, mask[:4], patch=4)
    with pytest.raises(ValueError, match="batch_size"):
        saliency.occlusion_map(_region_score, image, mask, patch=4, batch_size=0)


def test_occlusion_maps_one_per_image():
    images = np.full((3, 16, 16, 1), 0.5, np.float32)
    masks = np.ones((3, 16, 16, 1), bool)
    maps = saliency.occlusion_maps(_region_score, images, masks, patch=4, fill=0.0)
    single = saliency.occlusion_map(
        _region_score, images[0, ..., 0], masks[0, ..., 0], patch=4, fill=0.0
    )
    assert len(maps) == 3
    for result in maps:
        np.testing.assert_allclose(result.heatmap, single.heatmap)
        assert result.heatmap.max() > 0.2
    with pytest.raises(ValueError, match="3 images but 2 masks"):
        saliency.occlusion_maps(_region_score, images, masks[:2], patch=4)


def test_select_examples_picks_confident_correct_cases():
    y = np.array([1, 1, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.99, 0.1, 0.6, 0.05, 0.7])
    assert saliency.select_examples(y, p, n=2).tolist() == [2, 0, 5, 3]
    assert saliency.select_examples(y, p, n=5).tolist() == [2, 0, 6, 1, 5, 3, 4]
    with pytest.raises(ValueError, match="labels but p has"):
        saliency.select_examples(y, p[:3])
