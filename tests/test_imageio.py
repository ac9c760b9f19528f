"""Tests for cxrlib.data.imageio: PNG/JPEG/DICOM readers and atomic writers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrlib.data.imageio import (
    MAX_PIXELS,
    ImageReadError,
    image_size,
    is_image_file,
    max_pixels_limit,
    read_image,
    read_mask,
    write_mask_png,
    write_png,
)
from cxrlib.errors import CxrlibError


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


# --------------------------------------------------------------------------- size limit


@pytest.fixture(autouse=True)
def _pillow_guard(monkeypatch):
    """A limit above Pillow's guard raises the guard for the process: undo it after each test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is patched to declare ``width x height`` (CRC fixed)."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_decompression_bomb_is_an_image_read_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CXRLIB_MAX_PIXELS", raising=False)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(20000, 20000))
    assert path.stat().st_size < 1000
    for reader in (read_image, read_mask, image_size):
        with pytest.raises(ImageReadError, match="image too large") as info:
            reader(path)
        assert "bomb.png" in str(info.value) and f"{MAX_PIXELS:,} pixels" in str(info.value)
        assert "CXRLIB_MAX_PIXELS" in str(info.value)
    assert isinstance(info.value, CxrlibError)


def test_size_limit_from_environment_and_argument(tmp_path, monkeypatch):
    path = write_png(tmp_path / "a.png", np.zeros((100, 120)))
    monkeypatch.setenv("CXRLIB_MAX_PIXELS", "11_999")
    assert max_pixels_limit() == 11_999
    with pytest.raises(ImageReadError, match=r"100 = 12,000 pixels, over the limit of 11,999"):
        read_image(path)
    with pytest.raises(ImageReadError, match="over the limit"):
        image_size(path)
    assert read_image(path, max_pixels=12_000).shape == (100, 120)  # the argument wins
    monkeypatch.setenv("CXRLIB_MAX_PIXELS", "0")  # no limit
    assert max_pixels_limit() is None and read_image(path).shape == (100, 120)
    monkeypatch.setenv("CXRLIB_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="CXRLIB_MAX_PIXELS='lots' is not a whole number"):
        read_image(path)
    with pytest.raises(ValueError, match=">= 0"):
        max_pixels_limit(-1)
    monkeypatch.delenv("CXRLIB_MAX_PIXELS")
    assert max_pixels_limit() == MAX_PIXELS


def test_a_limit_above_pillows_own_guard_is_honoured(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png_declaring(20000, 20000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    # Allowed by the limit: Pillow opens it, and the (fake) pixel data is the problem.
    assert image_size(path, max_pixels=400_000_000) == (20000, 20000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # someone lowered Pillow's guard
    with pytest.raises(ImageReadError, match="400,000,000 pixels, over the limit of 10,000"):
        image_size(path, max_pixels=10_000)


def test_dicom_over_the_limit_is_refused_before_decoding(tmp_path):
    _dicom(tmp_path / "big.dcm", np.zeros((50, 40)))
    with pytest.raises(ImageReadError, match=r"40x50 = 2,000 pixels, over the limit of 1,999"):
        read_image(tmp_path / "big.dcm", max_pixels=1999)
    with pytest.raises(ImageReadError, match="over the limit"):
        image_size(tmp_path / "big.dcm", max_pixels=1999)
    assert image_size(tmp_path / "big.dcm") == (40, 50)


def test_is_image_file_can_sniff_dicom_without_suffix(tmp_path):
    _dicom(tmp_path / "IM0001", np.zeros((4, 4)))
    (tmp_path / "notes").write_text("hello")
    assert not is_image_file(tmp_path / "IM0001")
    assert is_image_file(tmp_path / "IM0001", sniff=True)
    assert not is_image_file(tmp_path / "notes", sniff=True)
    assert not is_image_file(tmp_path / "missing", sniff=True)
    assert read_image(tmp_path / "IM0001").shape == (4, 4)


# --------------------------------------------------------------------------- DICOM values


def _dicom(path, pixels, *, allocated=16, stored=12, signed=False, **attributes):
    """Write a one-frame DICOM; ``pixels`` are the stored values."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = attributes.pop("modality", "DX")
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = attributes.pop("photometric", "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in attributes.items():
        setattr(ds, key, value)
    dtype = f"<{'i' if signed else 'u'}{allocated // 8}"
    ds.PixelData = np.asarray(pixels).astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.arange(0, 4096, 256, dtype=np.int64).reshape(4, 4)  # 0 .. 3840


@pytest.mark.parametrize(("center", "expected"), [(-5000, 1.0), (10000, 0.0)])
def test_dicom_window_outside_all_pixels_is_white_or_black(tmp_path, center, expected):
    path = _dicom(tmp_path / "w.dcm", RAMP, WindowCenter=center, WindowWidth=100)
    image = read_image(path)
    assert np.all(image == expected), "a window below every pixel shows white, above black"


def test_dicom_uniform_bright_image_keeps_its_gray_level(tmp_path):
    flat = np.full((6, 6), 3000)
    windowed = read_image(_dicom(tmp_path / "w.dcm", flat, WindowCenter=2048, WindowWidth=4096))
    plain = read_image(_dicom(tmp_path / "p.dcm", flat))
    expected_window = (3000 - 2047.5) / 4095 + 0.5  # PS3.3 C.11.2.1.2
    assert np.allclose(windowed, expected_window, atol=1e-6)
    assert np.allclose(plain, 3000 / 4095, atol=1e-6)
    bottom = read_image(_dicom(tmp_path / "z.dcm", np.zeros((6, 6))))
    assert np.all(bottom == 0.0)


def test_dicom_window_is_not_stretched_to_the_image_range(tmp_path):
    path = _dicom(tmp_path / "w.dcm", RAMP, WindowCenter=2000.5, WindowWidth=4001)
    image = read_image(path)
    # linear: 0 -> 0.0, 4000 -> 1.0, so 3840 stays below white (no re-stretching)
    assert np.allclose(image.ravel(), RAMP.ravel() / 4000, atol=1e-6)
    assert image.max() < 0.97


def test_dicom_linear_window_matches_the_standard(tmp_path):
    values = np.array([[0, 1, 49, 50, 99, 100, 101, 200]])
    image = read_image(_dicom(tmp_path / "w.dcm", values, WindowCenter=50, WindowWidth=100))
    # PS3.3 C.11.2.1.2: 0 at and below c - 0.5 - (w - 1) / 2 = 0, 1 above c - 0.5 + (w - 1) / 2
    expected = np.clip((values - 49.5) / 99 + 0.5, 0, 1)
    assert np.allclose(image, expected, atol=1e-6)
    assert image[0, 0] == 0.0 and 0 < image[0, 1] < image[0, 2] and image[0, 4] == 1.0


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_dicom_voi_lut_functions(tmp_path, function):
    values = np.array([[0, 50, 100, 150, 200]])
    path = _dicom(
        tmp_path / "w.dcm", values, WindowCenter=100, WindowWidth=100, VOILUTFunction=function
    )
    image = read_image(path)[0]
    if function == "LINEAR_EXACT":
        assert np.allclose(image, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    else:
        assert np.allclose(image, 1 / (1 + np.exp(-4 * (values[0] - 100) / 100)), atol=1e-6)


def test_dicom_first_of_several_windows_and_invalid_window(tmp_path):
    several = _dicom(tmp_path / "s.dcm", RAMP, WindowCenter=[2000.5, 100], WindowWidth=[4001, 10])
    assert np.allclose(read_image(several).ravel(), RAMP.ravel() / 4000, atol=1e-6)
    invalid = _dicom(tmp_path / "i.dcm", RAMP, WindowCenter=100, WindowWidth=0)
    assert np.allclose(read_image(invalid).ravel(), RAMP.ravel() / 4095, atol=1e-6)


def test_dicom_monochrome1_is_inverted_after_the_window(tmp_path):
    path = _dicom(
        tmp_path / "m1.dcm",
        RAMP,
        photometric="MONOCHROME1",
        WindowCenter=2000.5,
        WindowWidth=4001,
    )
    assert np.allclose(read_image(path).ravel(), 1 - RAMP.ravel() / 4000, atol=1e-6)


def test_dicom_signed_ct_without_window_uses_its_range(tmp_path):
    hu = np.linspace(-1024, 3071, 64).round().reshape(8, 8)
    path = _dicom(
        tmp_path / "ct.dcm",
        hu + 1024,
        stored=16,
        signed=True,
        modality="CT",
        RescaleSlope=1,
        RescaleIntercept=-1024,
    )
    image = read_image(path)
    assert image.min() == 0.0 and image.max() == 1.0
    assert np.allclose(image.ravel(), (hu.ravel() + 1024) / 4095, atol=1e-6)
    raw_signed = read_image(_dicom(tmp_path / "ct2.dcm", hu, stored=16, signed=True))
    assert raw_signed.min() == 0.0 and raw_signed.max() == 1.0
    flat = read_image(_dicom(tmp_path / "flat.dcm", np.full((4, 4), 0), stored=16, signed=True))
    assert np.allclose(flat, 32768 / 65535, atol=1e-6), "a uniform image keeps its place"


def test_dicom_32_bit_data(tmp_path):
    image = read_image(_dicom(tmp_path / "u32.dcm", RAMP * 1000, allocated=32, stored=32))
    assert image.min() == 0.0 and image.max() == 1.0
    assert np.allclose(image.ravel(), RAMP.ravel() / RAMP.max(), atol=1e-6)
    signed = read_image(
        _dicom(tmp_path / "s32.dcm", RAMP - 2000, allocated=32, stored=32, signed=True)
    )
    assert np.allclose(signed.ravel(), RAMP.ravel() / RAMP.max(), atol=1e-6)


def test_dicom_voi_lut_sequence(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: 16 bits, but uses 12
    item.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # an inverting LUT
    path = _dicom(tmp_path / "lut.dcm", RAMP, VOILUTSequence=[item])
    assert np.allclose(read_image(path).ravel(), 1 - RAMP.ravel() / 4095, atol=1e-6)
