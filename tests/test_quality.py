"""Mask quality estimates and flags (cxrlib.seg.quality)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.seg.quality import FLAG_BELOW, assess_mask, soft_dice, validate_quality


def _lungs(size: int = 120) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[20:100, 15:50] = mask[25:95, 70:105] = True
    return mask


def test_soft_dice_is_one_for_a_certain_map_and_lower_for_a_hesitant_one():
    mask = _lungs()
    assert soft_dice(mask.astype(float), mask) == pytest.approx(1.0)
    hesitant = np.where(mask, 0.6, 0.0)
    assert soft_dice(hesitant, mask) == pytest.approx(2 * 0.6 / 1.6)


def test_soft_dice_of_two_empty_arrays_is_zero():
    assert soft_dice(np.zeros((4, 4)), np.zeros((4, 4), bool)) == 0.0


@pytest.mark.parametrize(
    ("probs", "match"),
    [(np.zeros((3, 3)), "one shape"), (np.full((4, 4), 1.5), r"\[0, 1\]")],
)
def test_soft_dice_refuses_bad_input(probs, match):
    with pytest.raises(ValueError, match=match):
        soft_dice(probs, np.zeros((4, 4), bool))


def test_a_confident_two_lung_mask_is_not_flagged():
    mask = _lungs()
    quality = assess_mask(np.where(mask, 0.99, 0.01), mask)
    assert not quality.flag and quality.reason == ""
    assert quality.estimate > FLAG_BELOW


def test_an_uncertain_mask_is_flagged_with_its_estimate():
    mask = _lungs()
    quality = assess_mask(np.where(mask, 0.7, 0.2), mask)
    assert quality.flag
    assert quality.reason.startswith(f"uncertain outline (soft Dice {quality.estimate:.3f}")


def test_a_confident_mediastinum_shaped_mask_is_flagged_by_anatomy():
    mask = np.zeros((120, 120), bool)
    mask[20:100, 40:80] = True  # one central field, as on an inverted film
    quality = assess_mask(mask.astype(float), mask)
    assert quality.flag and quality.reason == "one lung field"


def test_non_finite_probabilities_are_flagged_not_raised():
    probs = np.full((20, 20), np.nan)
    quality = assess_mask(probs, np.zeros((20, 20), bool))
    assert np.isnan(quality.estimate) and quality.flag
    assert "non-finite" in quality.reason


def test_probabilities_a_rounding_step_above_one_are_clipped():
    probs = np.zeros((100, 100))
    probs[20:80, 15:40] = probs[20:80, 60:85] = 1.0 + 1e-7
    quality = assess_mask(probs, probs > 0.5)
    assert quality.estimate == 1.0 and not quality.flag


def test_validate_quality_counts_the_worst_masks_the_flag_catches():
    true_dice = np.array([0.98, 0.97, 0.80, 0.96, 0.95, 0.70, 0.99, 0.97, 0.96, 0.94])
    estimates = 0.5 * true_dice  # the same order
    flags = np.zeros(10, bool)
    flags[[5, 0]] = True  # the worst mask and a good one
    result = validate_quality(estimates, true_dice, flags, worst_share=0.2)
    assert result["spearman"] == 1.0 and result["spearman_low"] == 1.0
    assert (result["n_worst"], result["worst_dice_max"]) == (2, 0.80)
    assert (result["caught"], result["flagged"], result["false_alarms"]) == (1, 2, 1)


def test_validate_quality_sees_an_estimate_that_ranks_backwards():
    rng = np.random.default_rng(3)
    true_dice = rng.uniform(0.8, 1.0, 60)
    result = validate_quality(-true_dice, true_dice, np.zeros(60, bool))
    assert result["spearman"] == -1.0 and result["caught"] == 0 and result["n_worst"] == 3


def test_validate_quality_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="one length"):
        validate_quality(np.ones(3), np.ones(4), np.zeros(3, bool))
