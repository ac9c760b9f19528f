"""Tests for cxrlib.runs: keys that change with config and data, atomic JSON."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from cxrlib import runs


def _table(tmp_path, n=3):
    rows = []
    for i in range(n):
        image = tmp_path / f"img{i}.png"
        image.write_bytes(b"x" * (i + 1))
        mask = tmp_path / f"img{i}_mask.png"
        mask.write_bytes(b"m")
        rows.append({"id": f"r{i}", "site": "A", "label": i % 2, "image_path": str(image),
                     "mask_path": str(mask)})  # fmt: skip
    return pd.DataFrame(rows)


def test_run_key_follows_config_and_data(tmp_path):
    table = _table(tmp_path)
    first = runs.run_key("train", 1, {"epochs": 3}, table)
    assert first == runs.run_key("train", 1, {"epochs": 3}, table.iloc[::-1])
    assert first["key"] != runs.run_key("train", 1, {"epochs": 4}, table)["key"]
    assert first["key"] != runs.run_key("train", 2, {"epochs": 3}, table)["key"]
    mask = tmp_path / "img0_mask.png"
    mask.write_bytes(b"changed")
    os.utime(mask, ns=(1, 1))
    changed = runs.run_key("train", 1, {"epochs": 3}, table)
    assert changed["key"] != first["key"]
    assert (
        runs.run_key("train", 1, {"epochs": 3}, table, masks=False)["key"]
        == runs.run_key("train", 1, {"epochs": 3}, table, masks=False)["key"]
    )
    text = runs.differences(first, runs.run_key("train", 1, {"epochs": 9}, table))
    assert "epochs: 3 -> 9" in text and "data files changed" in text
    assert runs.differences(None, first) == "no readable key.json"
    other = runs.run_key("train", 1, {"epochs": 3}, table, segmentation={"a": 1})
    assert "another segmentation" in runs.differences(changed, other)


def test_missing_data_file_is_named(tmp_path):
    table = _table(tmp_path)
    os.remove(table.loc[1, "image_path"])
    with pytest.raises(ValueError, match="img1.png"):
        runs.data_identity(table)


def test_json_round_trip_without_nan(tmp_path):
    path = tmp_path / "out.json"
    runs.write_json(path, {"a": np.float32(0.5), "b": float("nan"), "c": (1, 2),
                           "d": np.arange(2), "e": np.bool_(True), "p": tmp_path})  # fmt: skip
    assert json.loads(path.read_text()) == {"a": 0.5, "b": None, "c": [1, 2], "d": [0, 1],
                                            "e": True, "p": str(tmp_path)}  # fmt: skip
    assert runs.read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert runs.read_json(tmp_path / "bad.json") is None
    assert not list(tmp_path.glob("*.tmp*")), "no temporary file is left behind"


def test_clear_run_removes_only_the_runs_files(tmp_path):
    (tmp_path / "model.keras").write_text("m")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "backup").mkdir()
    runs.clear_run(tmp_path, ["model.keras", "absent.json"], ["backup"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_hash_key_is_order_independent_and_sha_of_file(tmp_path):
    assert runs.hash_key({"a": 1, "b": 2}) == runs.hash_key({"b": 2, "a": 1})
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert runs.sha256_file(path).startswith("ba7816bf")
    assert "numpy" in runs.versions("numpy", "not-a-package")
