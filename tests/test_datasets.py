"""Tests for cxrlib.data.naming and cxrlib.data.datasets (scanning and pairing dataset folders)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib.data.datasets import (
    LAYOUTS,
    TABLE_COLUMNS,
    TABLE_DTYPES,
    DatasetError,
    DatasetScan,
    ScanReport,
    empty_table,
    relative_paths,
    scan_dataset,
)
from cxrlib.data.imageio import read_mask, write_mask_png, write_png
from cxrlib.data.naming import ParsedName, parse_generic_name, parse_name

SIZE = (16, 16)


# --------------------------------------------------------------------------- fixture helpers


def _image(path: Path, shape: tuple[int, int] = SIZE, value: float = 0.5) -> Path:
    """Write a tiny gray PNG radiograph."""
    return write_png(path, np.full(shape, value, dtype=np.float32))


def _mask(path: Path, shape: tuple[int, int] = SIZE, pixels: int = 4) -> Path:
    """Write a tiny mask whose first ``pixels`` pixels (row-major) are lung."""
    mask = np.zeros(shape, dtype=bool)
    mask.flat[:pixels] = True
    return write_mask_png(path, mask)


def _make_compilation(base: Path) -> Path:
    """The "Chest Xray Masks and Labels" layout: 5 radiographs, 4 masks, 1 test copy."""
    folder = base / "Lung Segmentation"
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1", "CHNCXR_0001_0", "CHNCXR_0002_1"):
        _image(folder / "CXR_png" / f"{name}.png")
    _image(folder / "CXR_png" / "CHNCXR_0003_0.png", value=0.25)
    _mask(folder / "masks" / "MCUCXR_0001_0.png")
    _mask(folder / "masks" / "MCUCXR_0002_1.png")
    _mask(folder / "masks" / "CHNCXR_0001_0_mask.png")
    _mask(folder / "masks" / "CHNCXR_0002_1_mask.png")
    (folder / "test").mkdir()
    shutil.copyfile(folder / "CXR_png" / "CHNCXR_0003_0.png", folder / "test" / "CHNCXR_0003_0.png")
    return folder


def _make_montgomery(base: Path) -> Path:
    """Official Montgomery layout: 3 radiographs, one full left/right pair, one left only."""
    folder = base / "MontgomerySet"
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0"):
        _image(folder / "CXR_png" / f"{name}.png")
    _mask(folder / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", pixels=3)
    _mask(folder / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", pixels=7)
    _mask(folder / "ManualMask" / "leftMask" / "MCUCXR_0002_1.png")
    readings = folder / "ClinicalReadings"
    readings.mkdir()
    (readings / "MCUCXR_0001_0.txt").write_text("Patient's Sex: F\nPatient's Age: 047Y\nnormal\n")
    (readings / "MCUCXR_0002_1.txt").write_text(
        "Patient's Sex: M\nPatient's Age: 006M\n\nPTB in the left\nupper lobe\n"
    )
    (readings / "MCUCXR_0099_0.txt").write_text("Patient's Sex: M\nPatient's Age: 030Y\nnormal\n")
    (folder / "NLM-MontgomeryCXRSet-ReadMe.pdf").write_bytes(b"%PDF-1.4\n")
    return folder


def _make_shenzhen(base: Path) -> Path:
    """Official Shenzhen layout plus separately distributed masks elsewhere under ``base``."""
    folder = base / "ChinaSet_AllFiles"
    for name in ("CHNCXR_0001_0", "CHNCXR_0002_1", "CHNCXR_0003_1"):
        _image(folder / "CXR_png" / f"{name}.png")
    readings = folder / "ClinicalReadings"
    readings.mkdir()
    (readings / "CHNCXR_0001_0.txt").write_text("male 35yrs\nnormal\n")
    (readings / "CHNCXR_0002_1.txt").write_text("female, 45yr\nPTB in the left upper field\n")
    (readings / "CHNCXR_0003_1.txt").write_bytes("Male  8 months\nopacité\n".encode("latin-1"))
    masks = base / "shcxr-lung-mask" / "mask"
    _mask(masks / "CHNCXR_0001_0_mask.png")
    _mask(masks / "CHNCXR_0002_1_mask.png")
    return folder


def _skipped(report: ScanReport) -> dict[str, str]:
    """Map the file name of each skipped file to its reason."""
    return {Path(item.path).name: item.reason for item in report.skipped}


def _row(table: pd.DataFrame, image_id: str) -> pd.Series:
    rows = table[table["id"] == image_id]
    assert len(rows) == 1, f"{image_id} appears {len(rows)} times"
    return rows.iloc[0]


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("MCUCXR_0001_0.png", ("MCUCXR_0001_0", "montgomery", 0, False)),
        ("CHNCXR_0327_1.png", ("CHNCXR_0327_1", "shenzhen", 1, False)),
        ("CHNCXR_0327_1_mask.png", ("CHNCXR_0327_1", "shenzhen", 1, True)),
        ("CHNCXR_0327_1_MASK.PNG", ("CHNCXR_0327_1", "shenzhen", 1, True)),
        ("some/dir/MCUCXR_0141_1.PNG", ("MCUCXR_0141_1", "montgomery", 1, False)),
        ("mcucxr_0001_0.png", ("MCUCXR_0001_0", "montgomery", 0, False)),
        ("MCUCXR_0001_0.txt", ("MCUCXR_0001_0", "montgomery", 0, False)),
        ("MCUCXR_0001_0", ("MCUCXR_0001_0", "montgomery", 0, False)),
    ],
)
def test_parse_name(filename: str, expected: tuple) -> None:
    name = parse_name(filename)
    assert name is not None
    assert (name.id, name.site, name.label, name.is_renamed_mask) == expected
    assert name.key == name.id[:-2]


@pytest.mark.parametrize(
    "filename",
    ["foo.png", "MCUCXR_0001_2.png", "CHNCXR_0001_0_extra.png", "MCUCXR_0001.png", ".DS_Store"]
    + ["XCHNCXR_0001_0.png", "CHNCXR_0001_0_mask_mask.png", ""],
)
def test_parse_name_rejects_other_names(filename: str) -> None:
    assert parse_name(filename) is None


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("foo.png", ("foo", "unknown", None, False)),
        ("scan_1.jpg", ("scan_1", "unknown", 1, False)),
        ("scan_0_mask.png", ("scan_0", "unknown", 0, True)),
        ("case 12_Mask.tif", ("case 12", "unknown", None, True)),
        ("MC_patient_1.png", ("MC_patient_1", "montgomery", 1, False)),
        ("CHN-x.png", ("CHN-x", "shenzhen", None, False)),
        ("mcfly.png", ("mcfly", "unknown", None, False)),
        ("CHNCXR_0002_1_mask.png", ("CHNCXR_0002_1", "shenzhen", 1, True)),
        ("study.v2.dcm", ("study.v2", "unknown", None, False)),
    ],
)
def test_parse_generic_name(filename: str, expected: tuple) -> None:
    name = parse_generic_name(filename)
    assert isinstance(name, ParsedName)
    assert (name.id, name.site, name.label, name.is_renamed_mask) == expected


def test_parse_generic_name_rejects_empty_stem() -> None:
    with pytest.raises(ValueError, match="empty file name"):
        parse_generic_name("_mask.png")


# --------------------------------------------------------------------------- layouts


def test_compilation_layout(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    scan = scan_dataset(tmp_path)
    assert isinstance(scan, DatasetScan)
    table, report = scan
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table["id"]) == [
        "MCUCXR_0001_0",
        "MCUCXR_0002_1",
        "CHNCXR_0001_0",
        "CHNCXR_0002_1",
        "CHNCXR_0003_0",
    ]
    assert list(table["site"]) == ["montgomery"] * 2 + ["shenzhen"] * 3
    assert list(table["label"]) == [0, 1, 0, 1, 0]
    assert list(table.index) == list(range(5))
    for path in table["image_path"]:
        assert os.path.isabs(path) and Path(path).parent == folder / "CXR_png"
    assert _row(table, "CHNCXR_0001_0")["mask_path"] == str(
        folder / "masks" / "CHNCXR_0001_0_mask.png"
    )
    assert _row(table, "MCUCXR_0002_1")["mask_path"] == str(folder / "masks" / "MCUCXR_0002_1.png")
    assert _row(table, "CHNCXR_0003_0")["mask_path"] is None
    assert table["sex"].isna().all() and table["age"].isna().all()
    assert table["reading"].isna().all()

    assert (report.images, report.masks) == (5, 4)
    assert report.images_without_mask == ["CHNCXR_0003_0"]
    assert report.masks_without_image == []
    assert [Path(p).name for p in report.renamed_masks] == [
        "CHNCXR_0001_0_mask.png",
        "CHNCXR_0002_1_mask.png",
    ]
    assert report.skipped == []
    assert len(report.duplicates) == 1
    duplicate = report.duplicates[0]
    assert duplicate.id == "CHNCXR_0003_0" and duplicate.identical
    assert Path(duplicate.path).parent.name == "test"
    assert _row(table, "CHNCXR_0003_0")["image_path"] == duplicate.kept
    assert report.by_site == {
        "montgomery": {"normal": 1, "tb": 1},
        "shenzhen": {"normal": 2, "tb": 1},
    }
    assert report.layouts == ["compilation"]


def test_layout_found_at_any_depth(tmp_path: Path) -> None:
    _make_compilation(tmp_path / "downloads" / "archive (1)" / "extracted")
    table, report = scan_dataset(tmp_path)
    assert report.images == 5 and report.masks == 4 and len(report.duplicates) == 1
    assert report.layouts == ["compilation"]
    # scanning the layout folder itself gives the same table
    inner, _ = scan_dataset(tmp_path / "downloads" / "archive (1)" / "extracted")
    pd.testing.assert_frame_equal(table, inner)


def test_official_montgomery_layout(tmp_path: Path) -> None:
    folder = _make_montgomery(tmp_path)
    table, report = scan_dataset(tmp_path)
    assert report.layouts == ["montgomery"]
    assert report.images == 3
    assert report.masks == 1  # one complete left + right pair counts as one mask
    left = folder / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png"
    right = folder / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png"
    first = _row(table, "MCUCXR_0001_0")
    assert first["mask_path"] == (str(left), str(right))
    merged = read_mask(first["mask_path"])
    assert merged.shape == SIZE and merged.sum() == 7  # OR of 3 and 7 leading pixels

    # only the left lung of MCUCXR_0002_1: reported, and the image counts as without mask
    assert _row(table, "MCUCXR_0002_1")["mask_path"] is None
    assert report.incomplete_masks == ["MCUCXR_0002_1"]
    reasons = _skipped(report)
    assert "without its right lung mask" in reasons["MCUCXR_0002_1.png"]
    assert report.images_without_mask == ["MCUCXR_0002_1", "MCUCXR_0003_0"]

    # readings parsed into sex / age / finding; the orphan reading is listed
    assert (first["sex"], first["age"], first["reading"]) == ("F", 47.0, "normal")
    second = _row(table, "MCUCXR_0002_1")
    assert (second["sex"], second["age"]) == ("M", 0.5)
    assert second["reading"] == "PTB in the left upper lobe"
    third = _row(table, "MCUCXR_0003_0")
    assert third["sex"] is None and np.isnan(third["age"]) and third["reading"] is None
    assert report.readings == 2
    assert "clinical reading without an image" in reasons["MCUCXR_0099_0.txt"]
    assert reasons["NLM-MontgomeryCXRSet-ReadMe.pdf"].startswith("not an image")


def test_official_shenzhen_with_separate_masks(tmp_path: Path) -> None:
    _make_shenzhen(tmp_path)
    table, report = scan_dataset(tmp_path)
    assert report.layouts == ["shenzhen", "shenzhen-masks"]
    assert report.images == 3 and report.masks == 2 and len(report.renamed_masks) == 2
    assert report.images_without_mask == ["CHNCXR_0003_1"]
    assert list(table["sex"]) == ["M", "F", "M"]
    assert table["age"].tolist() == pytest.approx([35.0, 45.0, 8 / 12])
    assert list(table["reading"]) == ["normal", "PTB in the left upper field", "opacité"]
    assert report.by_site == {"shenzhen": {"normal": 1, "tb": 2}}


def test_all_layouts_side_by_side(tmp_path: Path) -> None:
    _make_montgomery(tmp_path / "mc")
    _make_shenzhen(tmp_path / "chn")
    table, report = scan_dataset(tmp_path)
    assert report.images == 6 and report.masks == 3
    assert report.layouts == ["montgomery", "shenzhen", "shenzhen-masks"]
    assert table["id"].is_unique
    assert list(table["site"]) == ["montgomery"] * 3 + ["shenzhen"] * 3


def test_plain_layout_accepts_any_name(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "patient_a.png")
    _image(tmp_path / "images" / "scan_1.png")
    _image(tmp_path / "images" / "MCUCXR_0005_1.png")
    _image(tmp_path / "images" / "nomask.jpg")
    _mask(tmp_path / "masks" / "patient_a.png")
    _mask(tmp_path / "masks" / "scan_1_mask.png")
    _mask(tmp_path / "masks" / "MCUCXR_0005_1.png")
    table, report = scan_dataset(tmp_path)
    assert report.layouts == ["plain"]
    assert report.images == 4 and report.masks == 3
    assert report.images_without_mask == ["nomask"]
    assert [Path(p).name for p in report.renamed_masks] == ["scan_1_mask.png"]
    assert _row(table, "scan_1")["label"] == 1
    assert pd.isna(_row(table, "patient_a")["label"])
    assert _row(table, "patient_a")["site"] == "unknown"
    assert _row(table, "MCUCXR_0005_1")["site"] == "montgomery"
    assert report.by_site == {
        "montgomery": {"normal": 0, "tb": 1},
        "unknown": {"normal": 0, "tb": 1, "unknown": 2},
    }


def test_pairing_is_by_name_not_order(tmp_path: Path) -> None:
    # Each image has its own size and its mask a distinct number of lung pixels. Sorted
    # mask names (a_b, a_c_mask, a_mask) are in a different order from the images (a, a_a,
    # a_b, a_c), and a_a has no mask, so pairing by position would go wrong everywhere.
    specs = {"a": ((16, 16), 5), "a_b": ((16, 24), 9), "a_c": ((24, 16), 13)}
    mask_names = {"a": "a_mask.png", "a_b": "a_b.png", "a_c": "a_c_mask.png"}
    _image(tmp_path / "images" / "a_a.png", shape=(20, 20))
    for image_id, (shape, _) in specs.items():
        _image(tmp_path / "images" / f"{image_id}.png", shape=shape)
    for image_id in reversed(list(specs)):
        shape, pixels = specs[image_id]
        _mask(tmp_path / "masks" / mask_names[image_id], shape=shape, pixels=pixels)
    table, report = scan_dataset(tmp_path)
    assert report.masks == 3 and report.skipped == []
    assert report.images_without_mask == ["a_a"]
    for image_id, (shape, pixels) in specs.items():
        row = _row(table, image_id)
        assert Path(row["mask_path"]).name == mask_names[image_id]
        mask = read_mask(row["mask_path"])
        assert mask.shape == shape and mask.sum() == pixels


def test_dicom_images_are_checked_from_the_header(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def write_dicom(path: Path, shape: tuple[int, int]) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns = shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = np.zeros(shape, np.uint16).tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)

    write_dicom(tmp_path / "images" / "case1.dcm", (12, 10))
    write_dicom(tmp_path / "images" / "case2.dcm", (12, 10))
    _mask(tmp_path / "masks" / "case1.png", shape=(12, 10))
    _mask(tmp_path / "masks" / "case2.png", shape=(10, 12))
    (tmp_path / "images" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01" * 20)
    table, report = scan_dataset(tmp_path)
    assert list(table["id"]) == ["case1", "case2"]
    assert report.masks == 1
    reasons = _skipped(report)
    assert reasons["case2.png"] == "mask size 12x10 differs from image size 10x12 (case2)"
    assert reasons["broken.dcm"].startswith("unreadable image")


# --------------------------------------------------------------------------- quirks


def test_clutter_is_skipped_with_reason(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    (folder / "CXR_png" / "Thumbs.db").write_bytes(b"\x00\x01")
    (folder / "masks" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "CXR_png" / "._MCUCXR_0001_0.png").write_bytes(b"\x00\x05\x16\x07")
    macosx = tmp_path / "__MACOSX" / "Lung Segmentation" / "CXR_png"
    macosx.mkdir(parents=True)
    (macosx / "._CHNCXR_0001_0.png").write_bytes(b"\x00\x05\x16\x07")
    _image(tmp_path / "__MACOSX" / "Lung Segmentation" / "CXR_png" / "MCUCXR_0009_0.png")
    table, report = scan_dataset(tmp_path)
    assert report.images == 5 and report.masks == 4
    kinds = {Path(item.path).relative_to(tmp_path).as_posix(): item.kind for item in report.skipped}
    assert kinds == {
        "Lung Segmentation/CXR_png/Thumbs.db": "clutter",
        "Lung Segmentation/masks/.DS_Store": "clutter",
        "Lung Segmentation/CXR_png/._MCUCXR_0001_0.png": "clutter",
        "__MACOSX/Lung Segmentation/CXR_png/._CHNCXR_0001_0.png": "clutter",
        "__MACOSX/Lung Segmentation/CXR_png/MCUCXR_0009_0.png": "clutter",
    }
    assert all(item.reason.startswith("clutter") for item in report.skipped)
    assert "MCUCXR_0009_0" not in set(table["id"])


def test_corrupt_and_truncated_images_are_skipped(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    rng = np.random.default_rng(0)
    (folder / "CXR_png" / "CHNCXR_0100_1.png").write_bytes(rng.bytes(300))
    (folder / "CXR_png" / "CHNCXR_0101_1.png").write_bytes(b"")
    good = (folder / "CXR_png" / "CHNCXR_0001_0.png").read_bytes()
    (folder / "CXR_png" / "CHNCXR_0102_0.png").write_bytes(good[:-16])
    (folder / "masks" / "CHNCXR_0002_1_mask.png").write_bytes(rng.bytes(100))
    table, report = scan_dataset(tmp_path)
    reasons = _skipped(report)
    assert reasons["CHNCXR_0100_1.png"].startswith("unreadable image")
    assert "empty" in reasons["CHNCXR_0101_1.png"]
    assert "truncated" in reasons["CHNCXR_0102_0.png"]
    assert reasons["CHNCXR_0002_1_mask.png"].startswith("unreadable mask")
    assert report.images == 5 and report.masks == 3
    assert "CHNCXR_0002_1" in report.images_without_mask
    assert not {"CHNCXR_0100_1", "CHNCXR_0101_1", "CHNCXR_0102_0"} & set(table["id"])


def test_check_images_false_opens_nothing(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    (folder / "CXR_png" / "CHNCXR_0100_1.png").write_bytes(b"not a png")
    _mask(folder / "masks" / "CHNCXR_0003_0_mask.png", shape=(8, 8))
    table, report = scan_dataset(tmp_path, check_images=False)
    assert "CHNCXR_0100_1" in set(table["id"])
    assert report.masks == 5 and report.skipped == []
    assert not report.checked_images and "not checked" in report.summary()


def test_mask_size_mismatch_is_skipped(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    _mask(folder / "masks" / "CHNCXR_0003_0_mask.png", shape=(8, 12))
    table, report = scan_dataset(tmp_path)
    assert _skipped(report)["CHNCXR_0003_0_mask.png"] == (
        "mask size 12x8 differs from image size 16x16 (CHNCXR_0003_0)"
    )
    assert _row(table, "CHNCXR_0003_0")["mask_path"] is None
    assert report.images_without_mask == ["CHNCXR_0003_0"] and report.masks == 4


def test_montgomery_pair_with_one_side_of_wrong_size(tmp_path: Path) -> None:
    folder = _make_montgomery(tmp_path)
    _mask(folder / "ManualMask" / "rightMask" / "MCUCXR_0002_1.png", shape=(8, 8))
    table, report = scan_dataset(tmp_path)
    reasons = _skipped(report)
    assert "differs from image size" in reasons["MCUCXR_0002_1.png"]
    assert _row(table, "MCUCXR_0002_1")["mask_path"] is None
    assert report.masks == 1


def test_unknown_names_in_known_layouts(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    _image(folder / "CXR_png" / "IMG_0001.png")
    _mask(folder / "masks" / "lung.png")
    table, report = scan_dataset(tmp_path)
    reasons = _skipped(report)
    assert reasons["IMG_0001.png"].startswith("unknown name 'IMG_0001.png'")
    assert reasons["lung.png"].startswith("unknown name 'lung.png'")
    assert report.images == 5 and "IMG_0001" not in set(table["id"])


def test_mask_without_image_and_label_conflict(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    _mask(folder / "masks" / "CHNCXR_0500_1_mask.png")
    _mask(folder / "masks" / "CHNCXR_0003_1_mask.png")  # the image says label 0
    table, report = scan_dataset(tmp_path)
    assert [Path(p).name for p in report.masks_without_image] == ["CHNCXR_0500_1_mask.png"]
    reason = _skipped(report)["CHNCXR_0003_1_mask.png"]
    assert reason.startswith("label conflict") and "CHNCXR_0003_0" in reason
    assert _row(table, "CHNCXR_0003_0")["mask_path"] is None


def test_two_masks_for_one_image(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    _mask(folder / "masks" / "CHNCXR_0001_0.png")  # same image also has CHNCXR_0001_0_mask.png
    table, report = scan_dataset(tmp_path)
    kept = _row(table, "CHNCXR_0001_0")["mask_path"]
    assert kept == str(folder / "masks" / "CHNCXR_0001_0.png")  # same name preferred
    reason = _skipped(report)["CHNCXR_0001_0_mask.png"]
    assert reason.startswith("second mask for CHNCXR_0001_0") and kept in reason
    assert report.masks == 4 and len(report.renamed_masks) == 1


def test_duplicates_with_different_content(tmp_path: Path) -> None:
    _image(tmp_path / "site1" / "images" / "case.png", value=0.2)
    _image(tmp_path / "site2" / "images" / "case.png", value=0.8)
    table, report = scan_dataset(tmp_path)
    assert report.images == 1 and len(table) == 1
    (duplicate,) = report.duplicates
    assert not duplicate.identical
    assert duplicate.kept == table["image_path"].iloc[0]
    assert report.skipped == []


def test_unreadable_and_duplicate_readings(tmp_path: Path) -> None:
    folder = _make_shenzhen(tmp_path)
    (folder / "ClinicalReadings" / "CHNCXR_0001_0.txt").write_bytes(b"\x00\x01\x02binary")
    extra = folder / "ClinicalReadings" / "old" / "CHNCXR_0002_1.txt"
    extra.parent.mkdir()
    extra.write_text("female 99yrs\nnormal\n")
    (folder / "notes.txt").write_text("not a reading")
    table, report = scan_dataset(tmp_path)
    reasons = _skipped(report)
    assert reasons["CHNCXR_0001_0.txt"].startswith("unreadable clinical reading")
    assert reasons["CHNCXR_0002_1.txt"].startswith("second clinical reading for CHNCXR_0002_1")
    assert reasons["notes.txt"].startswith("not an image")
    assert _row(table, "CHNCXR_0002_1")["age"] == 45.0
    assert _row(table, "CHNCXR_0001_0")["reading"] is None


# --------------------------------------------------------------------------- errors


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no radiographs found under .* \(looked at 0 files"):
        scan_dataset(tmp_path)


def test_folder_without_radiographs_lists_what_was_skipped(tmp_path: Path) -> None:
    (tmp_path / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(DatasetError, match=r"looked at 2 files; skipped: .*1 clutter") as info:
        scan_dataset(tmp_path)
    assert "1 not an image" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_or_file_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    file = _image(tmp_path / "MCUCXR_0001_0.png")
    with pytest.raises(DatasetError, match="is not a folder"):
        scan_dataset(file)


# --------------------------------------------------------------------------- table and report


def test_table_dtypes_are_stable_and_match_empty_table(tmp_path: Path) -> None:
    _make_compilation(tmp_path)
    table, _ = scan_dataset(tmp_path)
    empty = empty_table()
    assert len(empty) == 0 and list(empty.columns) == list(TABLE_COLUMNS)
    assert dict(table.dtypes) == dict(empty.dtypes)
    assert str(table["label"].dtype) == "Int64" and table["age"].dtype == np.float64
    expected = {name: pd.api.types.pandas_dtype(dtype) for name, dtype in TABLE_DTYPES.items()}
    assert dict(empty.dtypes) == expected
    assert empty[empty["site"] == "shenzhen"].empty


def test_report_to_dict_is_json_with_counts(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    (folder / "CXR_png" / "Thumbs.db").write_bytes(b"x")
    _mask(folder / "masks" / "CHNCXR_0500_1_mask.png")
    _, report = scan_dataset(tmp_path)
    data = json.loads(json.dumps(report.to_dict()))
    for key in ("images", "masks", "images_without_mask", "masks_without_image"):
        assert isinstance(data[key], int)
    assert (data["images"], data["masks"], data["renamed_masks"], data["skipped"]) == (5, 4, 2, 1)
    assert (data["masks_without_image"], data["images_without_mask"]) == (1, 1)
    assert data["by_site"] == {
        "montgomery": {"normal": 1, "tb": 1},
        "shenzhen": {"normal": 2, "tb": 1},
    }
    assert data["layouts"] == ["compilation"]
    details = data["details"]
    assert details["skipped"] == [
        {"path": "Lung Segmentation/CXR_png/Thumbs.db", "reason": report.skipped[0].reason}
    ]
    assert details["masks_without_image"] == ["Lung Segmentation/masks/CHNCXR_0500_1_mask.png"]
    assert details["images_without_mask"] == ["CHNCXR_0003_0"]
    assert details["duplicates"][0]["path"] == "Lung Segmentation/test/CHNCXR_0003_0.png"
    assert set(data["layouts"]) <= set(LAYOUTS)


def test_summary_is_short_and_informative(tmp_path: Path) -> None:
    folder = _make_compilation(tmp_path)
    (folder / "CXR_png" / "broken.png").write_bytes(b"garbage")
    _, report = scan_dataset(tmp_path)
    text = report.summary()
    assert "radiographs: 5 (montgomery: 1 normal, 1 TB; shenzhen: 2 normal, 1 TB)" in text
    assert "masks: 4 paired (2 renamed), 1 images without mask" in text
    assert "broken.png" in text and "unknown name" in text
    assert len(text.splitlines()) < 15


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    _make_compilation(tmp_path / "data")
    try:
        (tmp_path / "data" / "loop").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks are not supported on this file system")
    table, report = scan_dataset(tmp_path)
    assert report.images == 5 and table["id"].is_unique
    assert [item.kind for item in report.skipped] == ["linked folder"]


# --------------------------------------------------------------------------- real data


def _real_dir() -> Path:
    value = os.environ.get("CXR_REAL_DIR")
    if not value:
        pytest.skip("CXR_REAL_DIR is not set (folder that contains 'Lung Segmentation/')")
    path = Path(value)
    if not (path / "Lung Segmentation").is_dir():
        pytest.skip(f"CXR_REAL_DIR={value} has no 'Lung Segmentation/' folder")
    return path


def test_real_development_set() -> None:
    root = _real_dir()
    start = time.perf_counter()
    table, report = scan_dataset(root)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"scan took {elapsed:.1f} s"
    assert report.images == 640 and len(table) == 640
    assert report.masks == 563
    assert len(report.images_without_mask) == 77
    assert report.masks_without_image == []
    assert len(report.renamed_masks) == 453
    assert len(report.duplicates) == 77 and all(d.identical for d in report.duplicates)
    assert report.by_site == {
        "montgomery": {"normal": 64, "tb": 46},
        "shenzhen": {"normal": 261, "tb": 269},
    }
    assert report.layouts == ["compilation"]
    assert table["id"].is_unique
    # every image without mask is a Shenzhen image that also sits in test/
    test_ids = {Path(d.path).stem for d in report.duplicates}
    assert set(report.images_without_mask) == test_ids
    # spot-check that a pairing is by name and sizes agree
    row = _row(table, "CHNCXR_0002_0")
    assert Path(row["mask_path"]).name == "CHNCXR_0002_0_mask.png"
    assert read_mask(row["mask_path"]).shape == (512, 512)


def test_relative_paths_for_display_keep_pairs_and_missing_masks(tmp_path):
    folder = _make_montgomery(tmp_path)
    table = scan_dataset(folder, progress=False).table
    shown = relative_paths(table, folder)
    assert table["image_path"].iloc[0] != shown["image_path"].iloc[0], "the input was changed"
    row = shown.set_index("id").loc["MCUCXR_0001_0"]
    assert row["image_path"] == "CXR_png/MCUCXR_0001_0.png"
    pair = row["mask_path"]
    assert isinstance(pair, tuple) and len(pair) == 2
    assert {
        "ManualMask/leftMask/MCUCXR_0001_0.png",
        "ManualMask/rightMask/MCUCXR_0001_0.png",
    } == set(pair)
    assert shown.set_index("id").loc["MCUCXR_0003_0", "mask_path"] is None
    assert list(shown.columns) == list(table.columns)


def test_summary_shows_the_dataset_relative_to_the_working_directory(tmp_path, monkeypatch):
    folder = _make_montgomery(tmp_path)
    monkeypatch.chdir(tmp_path)
    summary = scan_dataset(folder, progress=False).report.summary()
    assert summary.splitlines()[0] == "dataset: MontgomerySet"


# --------------------------------------------------------------------------- decoding pixels


def _damage_png_pixels(path: Path, how: str = "truncate") -> Path:
    """Damage a PNG's pixel data (IDAT) but keep its chunks valid: header, CRCs, IEND."""
    import struct
    import zlib

    data = path.read_bytes()
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            body = body[: len(body) // 2] if how == "truncate" else bytes(len(body))
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body))
        pos += 12 + length
    path.write_bytes(bytes(out))
    return path


def _noise_image(path: Path, shape: tuple[int, int] = SIZE) -> Path:
    return write_png(path, np.random.default_rng(0).random(shape))


def _write_dicom(path: Path, shape: tuple[int, int] = SIZE, pixel_bytes: int | None = None) -> Path:
    """A 12-bit DICOM radiograph; ``pixel_bytes`` cuts its pixel data short."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    pixels = np.full(shape, 2000, np.uint16).tobytes()
    ds.PixelData = pixels[:pixel_bytes] if pixel_bytes is not None else pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _undecodable_folder(base: Path) -> Path:
    """A plain folder: 2 good images with masks, 2 images and 1 mask with broken pixels."""
    for name in ("good1", "good2"):
        _image(base / "images" / f"{name}.png")
        _mask(base / "masks" / f"{name}.png")
    _damage_png_pixels(_noise_image(base / "images" / "cut.png"))
    _write_dicom(base / "images" / "short.dcm", pixel_bytes=100)
    _damage_png_pixels(_noise_image(base / "masks" / "good2_mask.png"), how="zeros")
    return base


def test_headers_only_scan_counts_files_with_damaged_pixels(tmp_path: Path) -> None:
    _undecodable_folder(tmp_path)
    table, report = scan_dataset(tmp_path)
    assert set(table["id"]) == {"good1", "good2", "cut", "short"}
    assert not report.decoded and "pixels: not decoded" in report.summary()


def test_decode_skips_undecodable_images_and_masks(tmp_path: Path) -> None:
    _undecodable_folder(tmp_path)
    table, report = scan_dataset(tmp_path, decode=True)
    assert set(table["id"]) == {"good1", "good2"}
    reasons = _skipped(report)
    assert reasons["cut.png"].startswith("unreadable image: not a readable image")
    assert "truncated" in reasons["cut.png"]
    assert reasons["short.dcm"].startswith("unreadable image: DICOM pixel data cannot be decoded")
    assert reasons["good2_mask.png"].startswith("unreadable mask")
    assert _row(table, "good2")["mask_path"].endswith("good2.png")
    assert report.decoded and report.to_dict()["decoded"] is True
    assert "pixels: every image and mask decoded" in report.summary()


def test_decode_needs_check_images(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    with pytest.raises(ValueError, match="decode=True needs check_images=True"):
        scan_dataset(tmp_path, check_images=False, decode=True)


def test_all_zero_masks_are_listed_and_warned_about(tmp_path: Path, caplog) -> None:
    for name in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{name}.png")
    _mask(tmp_path / "masks" / "a.png")
    _mask(tmp_path / "masks" / "b.png", pixels=0)
    write_png(tmp_path / "masks" / "c.png", np.full(SIZE, 0.4))  # below the 0.5 threshold
    with caplog.at_level("WARNING", logger="cxrlib.data.datasets"):
        table, report = scan_dataset(tmp_path, decode=True)
    assert report.masks == 3, "empty masks are still paired"
    assert [Path(p).name for p in report.empty_masks] == ["b.png", "c.png"]
    assert "2 mask files under" in caplog.text and "no lung pixel" in caplog.text
    data = report.to_dict()
    assert data["empty_masks"] == 2
    assert data["details"]["empty_masks"] == ["masks/b.png", "masks/c.png"]
    text = report.summary()
    assert "empty masks: 2 mask files without a lung pixel" in text and "masks/b.png" in text
    assert scan_dataset(tmp_path).report.empty_masks == [], "found only when decoding"


@pytest.mark.parametrize("decode", [False, True])
def test_dicom_files_without_suffix_are_images(tmp_path: Path, decode: bool) -> None:
    _write_dicom(tmp_path / "images" / "IM0001")
    _write_dicom(tmp_path / "images" / "1.2.840.5")
    _write_dicom(tmp_path / "images" / "1.2.840.6")
    _mask(tmp_path / "masks" / "IM0001.png")
    (tmp_path / "images" / "README").write_text("not an image")
    table, report = scan_dataset(tmp_path, decode=decode)
    assert sorted(table["id"]) == ["1.2.840.5", "1.2.840.6", "IM0001"]
    assert report.masks == 1 and _row(table, "IM0001")["mask_path"].endswith("IM0001.png")
    assert _skipped(report) == {"README": "not an image or clinical reading (no suffix)"}


@pytest.mark.parametrize("decode", [False, True])
def test_decompression_bomb_is_skipped_not_fatal(tmp_path: Path, decode: bool, monkeypatch) -> None:
    import struct
    import zlib

    monkeypatch.delenv("CXRLIB_MAX_PIXELS", raising=False)

    _image(tmp_path / "images" / "ok.png")
    data = bytearray((_image(tmp_path / "images" / "bomb.png")).read_bytes())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "images" / "bomb.png").write_bytes(bytes(data))
    table, report = scan_dataset(tmp_path, decode=decode)
    assert list(table["id"]) == ["ok"]
    reason = _skipped(report)["bomb.png"]
    assert re.match(r"unreadable image: image too large: (20000x20000 = )?400,000,000 pix", reason)
    assert "over the limit of 89,478,485 pixels" in reason
