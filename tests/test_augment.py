"""Tests for cxrlib.seg.augment: formulas, paired geometry, determinism, the PyDataset."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cxrlib.seg import augment
from cxrlib.seg.augment import AugmentationConfig, Augmenter

ONLY_GEOMETRY = AugmentationConfig(p_geometric=1.0, p_contrast_v1=0, p_contrast_v2=0, p_noise=0)
NOTHING = AugmentationConfig(p_geometric=0, p_contrast_v1=0, p_contrast_v2=0, p_noise=0)
EVERYTHING = AugmentationConfig(
    p_geometric=1.0, p_contrast_v1=1.0, p_contrast_v2=1.0, p_noise=1.0, hflip=True
)


def _phantom(n=4, size=64, seed=0):
    """Images whose bright rectangle is exactly the mask (plus a gradient)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size, 1), bool)
    for i in range(n):
        top, left = rng.integers(10, 20, 2)
        masks[i, top : top + 30, left : left + 20] = True
    ramp = np.linspace(0.0, 0.2, size, dtype=np.float32)[None, None, :, None]
    images = np.where(masks, 0.7, 0.1).astype(np.float32) + ramp
    return images, masks


def test_importing_augment_does_not_import_keras():
    code = "import sys, cxrlib.seg.augment; assert 'keras' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_contrast_v1_matches_the_opencv_formula():
    x = np.linspace(0, 1, 256, dtype=np.float32)
    # b = -40: highlight = 215, alpha_b = 215/255, gamma_b = 0
    buf = x * 255 * (215 / 255)
    f = 131 * (-120 + 127) / (127 * (131 + 120))
    assert f == pytest.approx(0.028767, abs=1e-6)
    expected = np.clip(buf * f + 127 * (1 - f), 0, 255) / 255
    out = augment.brightness_contrast(x, -40, -120)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32
    # positive brightness branch: shadow = b, highlight = 255
    expected_pos = np.clip(x * 255 * (255 - 30) / 255 + 30, 0, 255) / 255
    np.testing.assert_allclose(augment.brightness_contrast(x, 30, 0), expected_pos, atol=1e-6)
    np.testing.assert_allclose(augment.brightness_contrast(x, 0, 0), x, atol=1e-7)
    with pytest.raises(ValueError, match="contrast"):
        augment.brightness_contrast(x, 0, 131)


def test_contrast_v2_matches_alpha_beta_formula():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    expected = np.clip(1.5 * x + 0.7 / 255, 0, 1)
    np.testing.assert_allclose(augment.scale_intensity(x, 1.5, 0.7), expected, atol=1e-7)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_scale(kind):
    x = np.full((128, 128), 0.5, np.float32)
    out = augment.add_noise(x, 0.1, np.random.default_rng(0), kind)
    delta = out - x
    expected_std = 0.1 if kind == "gaussian" else 0.1 / np.sqrt(3)
    assert delta.std() == pytest.approx(expected_std, rel=0.05)
    assert abs(delta.mean()) < 0.005
    if kind == "uniform":
        assert np.abs(delta).max() <= 0.1 + 1e-6


def test_integer_shift_moves_image_and_mask_together():
    images, masks = _phantom(1)
    img, msk = augment.affine_pair(images[0], masks[0], shift=(5, -3))
    np.testing.assert_array_equal(msk[5:, :-3], masks[0, :-5, 3:])
    assert not msk[:5].any()  # filled with background
    # the image's bright edge moved with the mask edge
    np.testing.assert_array_equal(img[..., 0] > 0.5, msk[..., 0])


@pytest.mark.parametrize(("angle", "scale"), [(10.0, 1.0), (-10.0, 1.1), (7.0, 0.9)])
def test_rotation_and_scale_keep_image_and_mask_aligned(angle, scale):
    images, masks = _phantom(1)
    img, msk = augment.affine_pair(images[0], masks[0], angle, (2.0, -4.0), scale)
    assert msk.dtype == bool and msk.shape == masks[0].shape
    assert not np.array_equal(msk, masks[0])
    bright = img[..., 0] > 0.5
    agreement = (bright == msk[..., 0]).mean()
    assert agreement > 0.99
    expected_area = masks[0].sum() * scale**2
    assert msk.sum() == pytest.approx(expected_area, rel=0.05)


def test_positive_angle_rotates_counter_clockwise_on_screen():
    mask = np.zeros((41, 41), bool)
    mask[20, 30:] = True  # a ray pointing right from the centre
    _, rotated = augment.affine_pair(np.zeros((41, 41)), mask, 90.0)
    rows, cols = np.nonzero(rotated)
    assert np.all(cols == 20) and np.all(rows < 20)  # now points up


def test_augmenter_geometry_keeps_pairs_aligned_in_a_batch():
    images, masks = _phantom(6)
    x, y = Augmenter(ONLY_GEOMETRY)(images, masks, np.random.default_rng(0))
    assert x.shape == images.shape and y.shape == masks.shape and y.dtype == bool
    moved = 0
    for i in range(len(x)):
        assert ((x[i, ..., 0] > 0.5) == y[i, ..., 0]).mean() > 0.99
        moved += not np.array_equal(y[i], masks[i])
    assert moved == len(x)


def test_augmenter_is_deterministic_given_rng():
    images, masks = _phantom(4)
    aug = Augmenter(EVERYTHING)
    a = aug(images, masks, np.random.default_rng(42))
    b = aug(images, masks, np.random.default_rng(42))
    c = aug(images, masks, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    seeded_1 = Augmenter(EVERYTHING, seed=5)(images, masks)
    seeded_2 = Augmenter(EVERYTHING, seed=5)(images, masks)
    np.testing.assert_array_equal(seeded_1[0], seeded_2[0])


def test_values_stay_in_unit_range_and_inputs_are_untouched():
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 1), dtype=np.float32)
    images[0] = 0.0
    images[1] = 1.0
    masks = (rng.random((4, 32, 32)) > 0.5).astype(np.uint8)
    before = images.copy(), masks.copy()
    x, y = Augmenter(EVERYTHING)(images, masks, rng)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == masks.shape and y.dtype == np.uint8
    assert set(np.unique(y)) <= {0, 1}
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(masks, before[1])


def test_no_flip_by_default():
    assert AugmentationConfig().hflip is False
    images, masks = _phantom(3)
    x, y = Augmenter(NOTHING)(images, masks, np.random.default_rng(0))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, masks)
    flip = AugmentationConfig(
        p_geometric=0, p_contrast_v1=0, p_contrast_v2=0, p_noise=0, hflip=True, p_hflip=1.0
    )
    x, y = Augmenter(flip)(images, masks, np.random.default_rng(0))
    np.testing.assert_array_equal(x, images[:, :, ::-1])
    np.testing.assert_array_equal(y, masks[:, :, ::-1])


def test_default_config_never_mirrors_the_anatomy():
    """Over many default draws, a mask confined to the left half never reaches the far right."""
    images, masks = _phantom(1, size=64)
    masks[:] = False
    masks[0, 16:48, 4:20] = True
    images = np.where(masks, 0.8, 0.1).astype(np.float32)
    batch_x, batch_y = np.repeat(images, 64, 0), np.repeat(masks, 64, 0)
    _, y = Augmenter()(batch_x, batch_y, np.random.default_rng(0))
    assert not y[:, :, 40:].any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_noise": 1.5}, "p_noise"),
        ({"scale_range": (1.1, 0.9)}, "scale_range"),
        ({"fill_mode": "reflect"}, "fill_mode"),
        ({"noise_kind": "salt"}, "noise_kind"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentationConfig(**kwargs)


def test_batch_shape_errors():
    with pytest.raises(ValueError, match="images must have shape"):
        Augmenter()(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="masks must have shape"):
        Augmenter()(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 9, 1)))


def test_augment_examples():
    images, masks = _phantom(1)
    examples = augment.augment_examples(images[0, ..., 0], masks[0, ..., 0])
    assert list(examples) == [
        "original",
        "contrast_v1",
        "contrast_v2",
        "noise",
        "rotation",
        "shift",
        "scale",
    ]
    for name, (img, msk) in examples.items():
        assert img.shape == (64, 64) and msk.shape == (64, 64), name
        assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1, name
    np.testing.assert_array_equal(examples["original"][0], images[0, ..., 0])
    for name in ("contrast_v1", "contrast_v2", "noise"):
        np.testing.assert_array_equal(examples[name][1], masks[0, ..., 0])
        assert not np.array_equal(examples[name][0], images[0, ..., 0])
    for name in ("rotation", "shift", "scale"):
        assert not np.array_equal(examples[name][1], masks[0, ..., 0])
    assert "hflip" in augment.augment_examples(images[0], masks[0], AugmentationConfig(hflip=True))


def test_make_augmented_copies():
    images, masks = _phantom(3)
    x, y, source = augment.make_augmented_copies(images, masks, 2, np.random.default_rng(0))
    assert x.shape == (9, 64, 64, 1) and y.shape == (9, 64, 64, 1)
    np.testing.assert_array_equal(source, [0, 1, 2] * 3)
    np.testing.assert_array_equal(x[:3], images)
    x2, _, source2 = augment.make_augmented_copies(
        images, masks, 1, np.random.default_rng(0), include_originals=False
    )
    assert len(x2) == 3 and list(source2) == [0, 1, 2]


# ----------------------------------------------------------------- SegmentationSequence


@pytest.fixture(scope="module")
def sequence_cls():
    pytest.importorskip("keras")
    return augment.SegmentationSequence


def test_sequence_batches_without_augmentation(sequence_cls):
    images, masks = _phantom(5)
    seq = sequence_cls(images, masks, batch_size=2)
    assert len(seq) == 3
    xs, ys = zip(*(seq[i] for i in range(len(seq))), strict=True)
    assert [len(x) for x in xs] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(xs), images)  # no shuffle, no change
    assert ys[0].dtype == np.float32 and ys[0].shape == (2, 64, 64, 1)
    np.testing.assert_array_equal(np.concatenate(ys), masks.astype(np.float32))
    with pytest.raises(IndexError):
        seq[3]


def test_sequence_shuffles_per_epoch_and_augments_deterministically(sequence_cls):
    images, masks = _phantom(8)
    images[:, 0, 0, 0] = np.arange(8) / 10  # tag rows
    seq = sequence_cls(images, masks, batch_size=8, shuffle=True, seed=3)
    first = seq[0][0][:, 0, 0, 0]
    seq.on_epoch_end()
    second = seq[0][0][:, 0, 0, 0]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    a = sequence_cls(images, masks, batch_size=4, augment=True, seed=1)
    b = sequence_cls(images, masks, batch_size=4, augment=True, seed=1)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])
    assert not np.array_equal(np.sort(a[0][0], axis=0), np.sort(images[:4], axis=0))


def test_sequence_refuses_leaks_and_bad_input(sequence_cls):
    images, masks = _phantom(4)
    ids = ["a", "b", "c", "d"]
    from cxrlib.data.splits import LeakageError

    with pytest.raises(LeakageError, match="'c'"):
        sequence_cls(images, masks, ids=ids, validation_ids={"c", "z"}, augment=True)
    with pytest.raises(ValueError, match="without ids"):
        sequence_cls(images, masks, validation_ids={"z"})
    with pytest.raises(ValueError, match="ids has 3"):
        sequence_cls(images, masks, ids=ids[:3])
    with pytest.raises(ValueError, match="batch_size"):
        sequence_cls(images, masks, batch_size=0)
    sequence_cls(images, masks, ids=ids, validation_ids={"z"})  # no overlap: fine


def test_sequence_trains_a_model(sequence_cls):
    keras = pytest.importorskip("keras")
    from cxrlib.seg import losses, models

    images, masks = _phantom(8, size=32)
    keras.utils.set_random_seed(0)
    model = models.build_unet(input_shape=(32, 32, 1), filters=(4, 8))
    model.compile(optimizer="adam", loss=losses.dice_loss, metrics=[losses.IoU()])
    seq = sequence_cls(images, masks, batch_size=4, augment=True)
    history = model.fit(seq, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert seq.epoch >= 2  # reshuffled every epoch (Keras may also reset once before fitting)
