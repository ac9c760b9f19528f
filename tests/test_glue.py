"""Tests for cxrlib.book.glue: tables and mappings flattened into glue keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.book.glue import glue_values, slug


def test_slug():
    assert slug("U-Net") == "u_net"
    assert slug("post-processed all") == "post_processed_all"


def test_a_table_gives_prefix_row_column_keys_with_python_values():
    table = pd.DataFrame(
        {"n": [3, 4], "dice mean": [0.9, np.float32(0.5)], "ok": [True, False], "f": ["a", "b"]},
        index=["U-Net", "ResUNet"],
    )
    values = glue_values("size", table)
    assert values["size_u_net_n"] == 3 and type(values["size_u_net_n"]) is int
    assert values["size_resunet_dice_mean"] == pytest.approx(0.5)
    assert type(values["size_resunet_dice_mean"]) is float
    assert values["size_u_net_ok"] is True
    assert values["size_resunet_f"] == "b"
    assert len(values) == 8


def test_int_columns_stay_int_next_to_float_columns():
    table = pd.DataFrame({"best_epoch": [3], "best_val_dice": [0.9]}, index=["U-Net"])
    values = glue_values("", table)
    assert values == {"u_net_best_epoch": 3, "u_net_best_val_dice": 0.9}
    assert type(values["u_net_best_epoch"]) is int


def test_multiindex_rows_are_joined():
    table = pd.DataFrame(
        {"dice_mean": [0.9, 0.8]},
        index=pd.MultiIndex.from_tuples([("raw", "all"), ("post-processed", "all")]),
    )
    assert glue_values("", table) == {"raw_all_dice_mean": 0.9, "post_processed_all_dice_mean": 0.8}


def test_series_and_mapping():
    assert glue_values("n", pd.Series({"montgomery": np.int64(4)})) == {"n_montgomery": 4}
    assert glue_values("ref", {"unet_params": 7}) == {"ref_unet_params": 7}
    assert glue_values("", {}) == {}
    with pytest.raises(TypeError, match="DataFrame"):
        glue_values("x", [1, 2])
