"""Plausibility checks of predicted lung masks (cxrlib.seg.anatomy)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.seg.anatomy import anatomy_problems


def _two_lungs(size: int = 200) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[30:170, 25:85] = True  # image left: the patient's right lung
    mask[40:165, 115:170] = True
    return mask


def test_two_lungs_one_each_side_pass():
    assert anatomy_problems(_two_lungs()) == []


def test_an_empty_mask_is_named():
    assert anatomy_problems(np.zeros((64, 64), bool))[-1] == "no lung found"


def test_one_field_is_flagged_as_such():
    mask = np.zeros((200, 200), bool)
    mask[30:170, 40:160] = True  # one central blob: a mediastinum-like mask
    assert "one lung field" in anatomy_problems(mask)


def test_two_fields_on_one_side_are_flagged():
    mask = np.zeros((200, 200), bool)
    mask[20:90, 10:70] = mask[110:190, 10:70] = True
    assert "the lung fields are not one on each side" in anatomy_problems(mask)


def test_a_tiny_second_field_is_flagged():
    mask = np.zeros((200, 200), bool)
    mask[20:180, 10:90] = True
    mask[100:104, 150:154] = True
    problems = anatomy_problems(mask)
    assert any(p.startswith("one lung field 0.00 the size") for p in problems)


@pytest.mark.parametrize(("rows", "width", "word"), [(20, 10, "0.01"), (200, 90, "0.90")])
def test_an_area_outside_the_range_is_quoted(rows, width, word):
    mask = np.zeros((200, 200), bool)
    mask[:rows, :width] = mask[:rows, 200 - width :] = True
    problems = anatomy_problems(mask)
    assert problems and problems[0].startswith(f"lung area {word} of the image")


def test_a_non_2d_mask_is_refused():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        anatomy_problems(np.zeros((2, 8, 8), bool))
