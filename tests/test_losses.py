"""Tests for cxrlib.seg.losses: values against numpy references, metrics, serialization."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cxrlib.seg import (  # noqa: E402
    losses,
    metrics,
    models,  # noqa: E402
)

ops = keras.ops


def _np(x):
    return ops.convert_to_numpy(x)


def _random_pair(seed=0, shape=(4, 16, 16, 1)):
    rng = np.random.default_rng(seed)
    y_true = (rng.random(shape) > 0.6).astype(np.float32)
    y_pred = rng.random(shape).astype(np.float32)
    return y_true, y_pred


def _ref_dice(t, p, s=1.0):
    t, p = t.reshape(len(t), -1), p.reshape(len(p), -1)
    return (2 * (t * p).sum(1) + s) / (t.sum(1) + p.sum(1) + s)


def _ref_jaccard(t, p, s=1.0):
    t, p = t.reshape(len(t), -1), p.reshape(len(p), -1)
    inter = (t * p).sum(1)
    return (inter + s) / (t.sum(1) + p.sum(1) - inter + s)


def _ref_bce(t, p):
    eps = 1e-7
    p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).reshape(len(t), -1).mean(1)


def test_perfect_prediction_gives_zero_dice_loss():
    y, _ = _random_pair()
    assert np.allclose(_np(losses.dice_loss(y, y)), 0.0, atol=1e-6)
    assert np.allclose(_np(losses.jaccard_loss(y, y)), 0.0, atol=1e-6)


def test_disjoint_prediction_gives_dice_loss_near_one():
    y = np.zeros((2, 32, 32, 1), np.float32)
    y[:, :, :16] = 1.0
    p = 1.0 - y
    loss = _np(losses.dice_loss(y, p))
    assert loss.shape == (2,)
    assert np.all(loss > 0.99)
    assert np.all(_np(losses.jaccard_loss(y, p)) > 0.99)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_match_numpy_reference(seed):
    t, p = _random_pair(seed)
    np.testing.assert_allclose(_np(losses.dice_loss(t, p)), 1 - _ref_dice(t, p), rtol=1e-5)
    np.testing.assert_allclose(_np(losses.jaccard_loss(t, p)), 1 - _ref_jaccard(t, p), rtol=1e-5)
    np.testing.assert_allclose(_np(losses.bce_loss(t, p)), _ref_bce(t, p), rtol=1e-4)
    np.testing.assert_allclose(
        _np(losses.bce_dice_loss(t, p)), _ref_bce(t, p) + 1 - _ref_dice(t, p), rtol=1e-4
    )


def test_losses_accept_masks_without_channel_axis_and_bool():
    t, p = _random_pair()
    a = _np(losses.dice_loss(t[..., 0].astype(bool), p))
    np.testing.assert_allclose(a, 1 - _ref_dice(t, p), rtol=1e-5)


def test_losses_are_float32_for_low_precision_inputs():
    t, p = _random_pair()
    p16 = ops.cast(p, "bfloat16")
    for fn in (losses.dice_loss, losses.jaccard_loss, losses.bce_loss, losses.bce_dice_loss):
        out = fn(t, p16)
        assert keras.backend.standardize_dtype(out.dtype) == "float32", fn.__name__


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice", "dice_loss"),
        ("jaccard", "jaccard_loss"),
        ("bce", "bce_loss"),
        ("bce_dice", "bce_dice_loss"),
        ("BCE-Dice", "bce_dice_loss"),
        ("dice_loss", "dice_loss"),
    ],
)
def test_get_loss(name, expected):
    assert losses.get_loss(name).__name__ == expected


def test_get_loss_unknown_lists_names():
    with pytest.raises(ValueError, match=r"focal.*bce, bce_dice, dice, jaccard"):
        losses.get_loss("focal")
    assert losses.get_loss(losses.dice_loss) is losses.dice_loss


def test_dice_metric_matches_numpy_evaluation():
    rng = np.random.default_rng(3)
    t = rng.random((5, 16, 16, 1)) > 0.5
    p = rng.random((5, 16, 16, 1)).astype(np.float32)
    t[0] = False
    p[0] = 0.1  # both empty: scores 1
    metric_dice, metric_iou = losses.DiceCoefficient(), losses.IoU()
    metric_dice.update_state(t[:3], p[:3])
    metric_dice.update_state(t[3:], p[3:])
    metric_iou.update_state(t, p)
    expected_dice = np.mean([metrics.dice(p[i] > 0.5, t[i]) for i in range(5)])
    expected_iou = np.mean([metrics.iou(p[i] > 0.5, t[i]) for i in range(5)])
    assert float(_np(metric_dice.result())) == pytest.approx(expected_dice, rel=1e-5)
    assert float(_np(metric_iou.result())) == pytest.approx(expected_iou, rel=1e-5)
    metric_dice.reset_state()
    assert float(_np(metric_dice.result())) == 0.0


def test_metric_threshold_and_sample_weight():
    t = np.zeros((2, 8, 8, 1), np.float32)
    t[:, 2:6, 2:6] = 1
    p = t * 0.4  # below 0.5, above 0.3
    m = losses.DiceCoefficient()
    m.update_state(t, p)
    assert float(_np(m.result())) == 0.0
    m = losses.DiceCoefficient(threshold=0.3)
    m.update_state(t, p)
    assert float(_np(m.result())) == pytest.approx(1.0)
    m = losses.DiceCoefficient()
    p2 = p.copy()
    p2[1] = t[1]  # image 1 perfect, image 0 missed
    m.update_state(t, p2, sample_weight=np.array([0.0, 1.0]))
    assert float(_np(m.result())) == pytest.approx(1.0)


def test_default_metrics_names():
    names = [m.name for m in losses.default_metrics()]
    assert names == ["dice", "iou", "precision", "recall"]


def test_objects_are_registered():
    get_name = keras.saving.get_registered_name
    assert get_name(losses.bce_dice_loss) == "cxrlib>bce_dice_loss"
    assert get_name(losses.DiceCoefficient) == "cxrlib>DiceCoefficient"
    assert get_name(losses.IoU) == "cxrlib>IoU"


def test_saved_model_reloads_with_loss_and_metrics(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build_unet(input_shape=(16, 16, 1), filters=(2, 4))
    model.compile(
        optimizer="adam",
        loss=losses.get_loss("bce_dice"),
        metrics=[losses.DiceCoefficient(threshold=0.3), losses.IoU()],
    )
    rng = np.random.default_rng(0)
    x = rng.random((4, 16, 16, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), key
    dice_metric = [m for m in loaded.metrics[1].metrics if m.name == "dice"][0]
    assert dice_metric.threshold == pytest.approx(0.3)
