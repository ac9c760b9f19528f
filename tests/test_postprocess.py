"""Tests for cxrlib.seg.postprocess."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.seg import postprocess


def _blobs():
    """Three components: 6x6 (36 px), 5x4 (20 px), 2x2 (4 px); a hole in the largest."""
    m = np.zeros((32, 32), bool)
    m[2:8, 2:8] = True
    m[4, 4] = False  # hole
    m[20:25, 20:24] = True
    m[28:30, 2:4] = True
    return m


def test_keep_largest_components():
    m = _blobs()
    out = postprocess.keep_largest_components(m, k=2)
    assert out.dtype == bool and out.shape == m.shape
    assert out[2:8, 2:8].sum() == 35 and out[20:25, 20:24].all()
    assert not out[28:30, 2:4].any()
    one = postprocess.keep_largest_components(m, k=1)
    assert one.sum() == 35
    np.testing.assert_array_equal(postprocess.keep_largest_components(m, k=5), m)


def test_components_are_eight_connected():
    m = np.zeros((10, 10), bool)
    m[1, 1] = m[2, 2] = m[3, 3] = True  # one diagonal component of 3
    m[7:9, 7] = True  # 2 px
    out = postprocess.keep_largest_components(m, k=1)
    assert out.sum() == 3 and out[2, 2]


def test_fill_holes():
    ring = np.zeros((12, 12), bool)
    ring[2:9, 2:9] = True
    ring[4:7, 4:7] = False
    filled = postprocess.fill_holes(ring)
    assert filled[2:9, 2:9].all() and filled.sum() == 49
    open_ring = ring.copy()
    open_ring[5, 2] = open_ring[5, 3] = False  # hole connected to the outside: not filled
    assert not postprocess.fill_holes(open_ring)[5, 5]


@pytest.mark.parametrize("layout", ["hw", "hw1", "nhw", "nhw1"])
def test_batch_layouts(layout):
    m = _blobs()
    expected = postprocess.postprocess_mask(m)
    arrays = {
        "hw": (m, expected),
        "hw1": (m[..., None], expected[..., None]),
        "nhw": (np.stack([m, m[::-1]]), np.stack([expected, expected[::-1]])),
        "nhw1": (np.stack([m, m])[..., None], np.stack([expected, expected])[..., None]),
    }
    given, want = arrays[layout]
    out = postprocess.postprocess_mask(given)
    assert out.shape == given.shape and out.dtype == bool
    np.testing.assert_array_equal(out, want)


def test_postprocess_mask_combines_steps_and_thresholds_probabilities():
    m = _blobs()
    probs = np.where(m, 0.8, 0.2).astype(np.float32)
    out = postprocess.postprocess_mask(probs, k=2, fill=True)
    assert out[4, 4]  # hole filled
    assert not out[28:30, 2:4].any()
    assert out.sum() == 36 + 20
    unfilled = postprocess.postprocess_mask(probs, k=2, fill=False)
    assert not unfilled[4, 4]
    everything = postprocess.postprocess_mask(m, k=None, fill=False)
    np.testing.assert_array_equal(everything, m)
    assert everything is not m


def test_errors():
    with pytest.raises(ValueError, match="k must"):
        postprocess.keep_largest_components(_blobs(), k=0)
    with pytest.raises(ValueError, match="shape"):
        postprocess.fill_holes(np.zeros((2, 3, 4, 5), bool))
    with pytest.raises(ValueError, match="dtype"):
        postprocess.fill_holes(np.array([["a"]]))


def test_fill_holes_is_scipys_binary_fill_holes():
    """The one-labelling fill gives exactly ``scipy.ndimage.binary_fill_holes``."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    masks = [rng.random((40, 50)) > p for p in (0.3, 0.45, 0.6)]
    masks += [np.zeros((6, 7), bool), np.ones((6, 7), bool), np.zeros((1, 5), bool)]
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    ring[4, 4] = True  # an island inside the hole: stays, and the hole around it fills
    masks.append(ring)
    diagonal = np.zeros((5, 5), bool)
    diagonal[1, 2] = diagonal[2, 1] = diagonal[2, 3] = diagonal[3, 2] = True
    masks.append(diagonal)  # a 4-connected hole enclosed by 8-connected pixels: filled
    for mask in masks:
        expected = ndimage.binary_fill_holes(mask)
        np.testing.assert_array_equal(postprocess.fill_holes(mask), expected)
        kept = postprocess.keep_largest_components(mask, k=2)
        np.testing.assert_array_equal(
            postprocess.postprocess_mask(mask), ndimage.binary_fill_holes(kept)
        )
    assert postprocess.fill_holes(diagonal)[2, 2] and postprocess.fill_holes(ring).sum() == 49
