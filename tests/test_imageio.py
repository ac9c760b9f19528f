"""Tests for cxrlib.data.imageio: PNG/JPEG/DICOM readers and atomic writers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrlib.data.imageio import (
    ImageReadError,
    is_image_file,
    read_image,
    read_mask,
    write_mask_png,
    write_png,
)


def _ramp(shape=(16, 20)) -> np.ndarray:
    return np.linspace(0.0, 1.0, shape[0] * shape[1], dtype=np.float32).reshape(shape)


def test_png_8bit_round_trip(tmp_path):
    image = _ramp()
    path = write_png(tmp_path / "a.png", image)
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == image.shape
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-6


def test_png_16bit_keeps_precision(tmp_path):
    image = _ramp()
    path = write_png(tmp_path / "a16.png", image, bits=16)
    back = read_image(path)
    assert np.abs(back - image).max() <= 1.0 / 65535 + 1e-6


def test_rgb_and_jpeg_become_gray(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.jpg", quality=95)
    png = read_image(tmp_path / "rgb.png")
    jpg = read_image(tmp_path / "rgb.jpg")
    expected = (200 * 299 + 100 * 587) / 1000 / 255
    assert png.shape == (8, 8) and np.allclose(png, expected, atol=1 / 255)
    assert jpg.shape == (8, 8) and np.allclose(jpg, expected, atol=3 / 255)


def test_mask_binarised_and_merged(tmp_path):
    left = np.zeros((10, 10), bool)
    left[2:8, 1:4] = True
    right = np.zeros((10, 10), bool)
    right[2:8, 6:9] = True
    write_mask_png(tmp_path / "l.png", left)
    write_mask_png(tmp_path / "r.png", right)
    merged = read_mask([tmp_path / "l.png", tmp_path / "r.png"])
    assert merged.dtype == bool
    assert np.array_equal(merged, left | right)
    assert np.array_equal(read_mask(tmp_path / "l.png"), left)


def test_mask_parts_with_different_shapes_name_the_file(tmp_path):
    write_mask_png(tmp_path / "l.png", np.ones((10, 10), bool))
    write_mask_png(tmp_path / "r.png", np.ones((12, 10), bool))
    with pytest.raises(ImageReadError, match="r.png"):
        read_mask([tmp_path / "l.png", tmp_path / "r.png"])


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image")],
)
def test_corrupt_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert "broken.png" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_truncated_png(tmp_path):
    path = write_png(tmp_path / "t.png", np.random.default_rng(0).random((64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_image(path)


def _write_dicom(path, pixels: np.ndarray, **attributes) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = attributes.pop("photometric", "MONOCHROME2")
    ds.BitsAllocated = 16
    ds.BitsStored = attributes.pop("bits", 12)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_12bit_and_monochrome1(tmp_path):
    stored = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 64).clip(0, 4095)
    _write_dicom(tmp_path / "m2.dcm", stored)
    _write_dicom(tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1")
    m2 = read_image(tmp_path / "m2.dcm")
    m1 = read_image(tmp_path / "m1.dcm")
    assert m2.dtype == np.float32 and m2.min() >= 0 and m2.max() <= 1
    assert np.allclose(m2, stored / 4095, atol=1e-6)
    assert np.allclose(m1, m2, atol=1e-6)


def test_dicom_window_and_rescale(tmp_path):
    stored = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))
    _write_dicom(
        tmp_path / "w.dcm",
        stored,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=1000,
    )
    image = read_image(tmp_path / "w.dcm")
    values = stored.astype(float) - 1024
    assert image[0, values[0] < -500].max() == 0.0
    assert image[0, values[0] > 500].min() == 1.0
    inside = (values[0] > -400) & (values[0] < 400)
    assert np.all(np.diff(image[0, inside]) > 0)


def test_dicom_without_pixel_data(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = "Nobody"
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        read_image(tmp_path / "x.dcm")
    assert "x.dcm" in str(info.value)


def test_not_a_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"hello, not dicom" * 10)
    with pytest.raises(ImageReadError, match="fake.dcm"):
        read_image(path)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    write_png(target, np.zeros((4, 4)))
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(RuntimeError):
        write_png(target, np.ones((4, 4)))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_is_image_file():
    assert is_image_file("a/B.PNG") and is_image_file("x.dcm") and is_image_file("y.jpeg")
    assert not is_image_file("Thumbs.db") and not is_image_file("notes.txt")


def test_write_png_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        write_png(tmp_path / "a.png", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="bits"):
        write_png(tmp_path / "a.png", np.zeros((2, 2)), bits=12)


def test_image_read_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ImageReadError("/data/x.png", "not a readable image")))
    assert isinstance(error, ImageReadError)
    assert (
        error.reason == "not a readable image" and str(error) == "/data/x.png: not a readable image"
    )
