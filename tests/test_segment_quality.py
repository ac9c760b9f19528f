"""`cxrlib segment` writes a quality estimate and a flag for every mask.

The stand-in model calls dark pixels lung (:func:`standins.save_standin_model`), so the
test images decide what it paints: two dark fields make a plausible, confident mask;
an inverted film, a single field, a blank film and a flat mid-grey image
(probability about 0.5 everywhere) must be flagged, each with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import save_standin_model

from cxrlib.data.imageio import write_png
from cxrlib.seg.folder import segment_folder
from cxrlib.seg.manifest import ManifestMismatchError


def _two_lungs() -> np.ndarray:
    image = np.full((64, 64), 0.8, np.float32)
    image[10:54, 6:26] = image[10:54, 38:58] = 0.1
    return image


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_standin_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    one_side = _two_lungs()
    one_side[:, 32:] = 0.8
    write_png(folder / "good.png", _two_lungs())
    write_png(folder / "inverted.png", 0.9 - _two_lungs())
    write_png(folder / "one_side.png", one_side)
    write_png(folder / "flat.png", np.full((64, 64), 0.35, np.float32))
    write_png(folder / "blank.png", np.full((64, 64), 0.9, np.float32))
    return folder


def test_every_mask_gets_a_quality_estimate_and_implausible_ones_a_flag(model, images, tmp_path):
    report = segment_folder(model, images, tmp_path / "out", progress=False, runtime="keras")
    table = pd.read_csv(tmp_path / "out" / "lungs.csv").set_index("file")
    parquet = pd.read_parquet(tmp_path / "out" / "lungs.parquet").set_index("file")
    assert table["flag"].to_dict() == {
        "blank.png": True, "flat.png": True, "good.png": False, "inverted.png": True,
        "one_side.png": True,
    }  # fmt: skip
    assert parquet["flag"].dtype == bool and parquet["quality"].between(0, 1).all()
    assert table.loc["good.png", "quality"] > 0.95
    assert pd.isna(table.loc["good.png", "flag_reason"])  # empty in the CSV
    assert "uncertain outline" in table.loc["flat.png", "flag_reason"]
    assert table.loc["flat.png", "quality"] < 0.8
    assert table.loc["blank.png", "flag_reason"] == "no lung found"
    assert "one lung field" in table.loc["one_side.png", "flag_reason"]
    assert "lung area" in table.loc["inverted.png", "flag_reason"]
    flagged = ["blank.png", "flat.png", "inverted.png", "one_side.png"]
    assert list(report.flagged["file"]) == flagged
    assert "flagged 4 of 5 mask(s) for review" in report.summary()


def test_a_stricter_threshold_flags_uncertain_masks_too(model, images, tmp_path):
    lenient = segment_folder(model, images, tmp_path / "a", progress=False, runtime="keras")
    good = lenient.table.set_index("file").loc["good.png", "quality"]
    strict = segment_folder(
        model, images, tmp_path / "b", flag_below=min(1.0, good + 1e-6), progress=False,
        runtime="keras",
    )  # fmt: skip
    row = strict.table.set_index("file").loc["good.png"]
    assert row["flag"] and row["quality"] == pytest.approx(good)
    assert "uncertain outline" in row["flag_reason"]


def test_a_folder_from_before_quality_scores_is_refused_not_extended(model, images, tmp_path):
    out = tmp_path / "out"
    segment_folder(model, images, out, progress=False, runtime="keras")
    job_file = out / "manifest" / "job.json"
    job = json.loads(job_file.read_text())
    del job["quality_method"], job["flag_below"]
    job_file.write_text(json.dumps(job))
    with pytest.raises(ManifestMismatchError, match="older cxrlib without mask quality scores"):
        segment_folder(model, images, out, progress=False, runtime="keras")
    again = segment_folder(model, images, out, progress=False, runtime="keras", overwrite=True)
    assert again.resumed == 0 and again.table["quality"].notna().all()


def test_flag_below_outside_the_unit_interval_is_refused(model, images, tmp_path):
    with pytest.raises(ValueError, match="flag_below must be in"):
        segment_folder(model, images, tmp_path / "out", flag_below=0.0, progress=False)
