"""A catalogue of awkward input files and what the readers, the scan and ``cxrlib info`` do.

Each case is one small file. The first part pins down cases that already behave (so that
none regresses): corrupt, truncated and empty PNGs are named, listed and skipped; odd but
valid images (RGB, RGBA, palette, 16-bit, 1x1, 300x500, 8000x8000) read correctly. The
second part holds the cases of issue 13 (items 5, 6 and 8): decompression bombs, DICOM
windowing, damaged pixel data behind a valid header, all-zero masks and DICOM files
without a suffix.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib.cli import _cmd_info, main
from cxrlib.data.datasets import scan_dataset
from cxrlib.data.imageio import (
    MAX_PIXELS,
    ImageReadError,
    image_size,
    read_image,
    read_mask,
    write_mask_png,
    write_png,
)

SIZE = (16, 16)


@pytest.fixture(autouse=True)
def _default_size_limit(monkeypatch):
    monkeypatch.delenv("CXRLIB_MAX_PIXELS", raising=False)
    # A limit above Pillow's guard raises the guard for the process: undo it after each test.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# --------------------------------------------------------------------------- helpers


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, body) chunks of a PNG."""
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        found.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def _png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body))
    return bytes(out)


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A real 8x8 PNG whose IHDR declares ``width x height`` (valid CRC): a few hundred bytes."""
    chunks = _chunks(_png_bytes(Image.new("L", (8, 8))))
    kind, body = chunks[0]
    assert kind == b"IHDR"
    chunks[0] = (kind, struct.pack(">II", width, height) + body[8:])
    return _png_from_chunks(chunks)


def _damaged_pixels_png(how: str) -> bytes:
    """A noise PNG with valid chunks (header, CRCs, IEND) whose IDAT is cut or zeroed."""
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    chunks = []
    for kind, body in _chunks(_png_bytes(Image.fromarray(noise, "L"))):
        if kind == b"IDAT":
            body = body[: len(body) // 2] if how == "cut" else bytes(len(body))
        chunks.append((kind, body))
    return _png_from_chunks(chunks)


def _dicom(path: Path, pixels: np.ndarray, *, pixel_bytes: int | None = None, **attributes):
    """A 12-bit DICOM; ``pixel_bytes`` cuts its pixel data short."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = attributes.pop("photometric", "MONOCHROME2")
    for key, value in attributes.items():
        setattr(ds, key, value)
    data = np.asarray(pixels).astype("<u2").tobytes()
    ds.PixelData = data if pixel_bytes is None else data[:pixel_bytes]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _good_png(path: Path) -> Path:
    return write_png(path, np.full(SIZE, 0.5))


def _info(capsys, folder: Path, *flags: str) -> dict:
    """``cxrlib -q info FOLDER --json [--check]``, without building the whole parser.

    (``main`` builds every sub-command's parser, which imports Keras; one test below runs
    ``main`` itself.)
    """
    args = argparse.Namespace(directory=folder, json=True, check="--check" in flags, quiet=True)
    assert _cmd_info(args) == 0
    return json.loads(capsys.readouterr().out)


def _skipped(info: dict) -> dict[str, str]:
    return {Path(item["path"]).name: item["reason"] for item in info["details"]["skipped"]}


# --------------------------------------------------------------------------- broken files

BROKEN = {
    "corrupt.png": lambda good: np.random.default_rng(0).bytes(300),
    "signature-only.png": lambda good: good[:8],
    "truncated.png": lambda good: good[: len(good) // 2],
    "no-iend.png": lambda good: good[:-12],
    "empty.png": lambda good: b"",
    "text.png": lambda good: b"this is not an image\n" * 10,
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_png_is_an_image_read_error_naming_the_file(tmp_path, name):
    good = _good_png(tmp_path / "good.png").read_bytes()
    path = tmp_path / name
    path.write_bytes(BROKEN[name](good))
    if name == "no-iend.png":  # every pixel is there: the reader reads it, the scan does not
        assert read_image(path).shape == SIZE
        with pytest.raises(ImageReadError, match="truncated PNG"):
            image_size(path)
        return
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path and name in str(info.value)
    if name == "empty.png":
        assert info.value.reason == "file is empty (0 bytes)"


@pytest.mark.parametrize("check", [False, True])
def test_broken_pngs_are_listed_and_skipped_by_scan_and_info(tmp_path, capsys, check):
    good = _good_png(tmp_path / "images" / "good.png").read_bytes()
    for name, make in BROKEN.items():
        (tmp_path / "images" / name).write_bytes(make(good))
    table, report = scan_dataset(tmp_path, decode=check)
    assert list(table["id"]) == ["good"]
    reasons = {Path(item.path).name: item.reason for item in report.skipped}
    assert set(reasons) == set(BROKEN)
    assert all(reason.startswith("unreadable image: ") for reason in reasons.values())
    assert "empty" in reasons["empty.png"] and "truncated" in reasons["no-iend.png"]
    info = _info(capsys, tmp_path, *(["--check"] if check else []))
    assert info["images"] == 1 and _skipped(info) == reasons
    assert info["skipped_by_kind"] == {"unreadable image": len(BROKEN)}


# --------------------------------------------------------------------------- odd valid images


def _ramp(width: int, height: int) -> np.ndarray:
    return (np.arange(width * height).reshape(height, width) % 256).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("L", (1, 1)), ("L", (500, 300)), ("RGB", (12, 20)), ("RGBA", (12, 20)), ("LA", (9, 9))]
    + [("P", (10, 10)), ("I;16", (20, 12)), ("1", (8, 24))],
)
def test_valid_images_read_as_gray_float(tmp_path, mode, shape):
    height, width = shape
    gray = _ramp(width, height)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
        expected = gray / 255.0
    elif mode == "1":
        image = Image.fromarray(gray > 127).convert("1")
        expected = (gray > 127).astype(float)
    else:
        image = Image.fromarray(gray, "L").convert(mode)
        expected = gray / 255.0
    path = tmp_path / f"{mode.replace(';', '')}.png"
    image.save(path)
    array = read_image(path)
    assert array.dtype == np.float32 and array.shape == shape
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert np.allclose(array, expected, atol=1.5 / 255)
    assert image_size(path) == (width, height)


def test_16_bit_png_keeps_its_precision(tmp_path):
    values = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    path = write_png(tmp_path / "deep.png", values, bits=16)
    assert np.abs(read_image(path) - values).max() <= 1 / 65535 + 1e-6


def test_large_8000_by_8000_image(tmp_path):
    mask = np.zeros((8000, 8000), bool)
    mask[100:200, 7000:7100] = True
    path = tmp_path / "large.png"
    Image.fromarray(mask).convert("1").save(path)  # 1-bit: a small file, modest memory
    assert path.stat().st_size < 100_000
    assert image_size(path) == (8000, 8000)
    image = read_image(path)
    assert image.shape == (8000, 8000) and image.dtype == np.float32
    assert image[150, 7050] == 1.0 and image[0, 0] == 0.0 and image.sum() == 100 * 100
    del image
    assert read_mask(path).sum() == 100 * 100


# --------------------------------------------------------------------------- item 5: size limit


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png())
    assert path.stat().st_size < 1000
    for reader in (read_image, read_mask, image_size):
        pattern = r"too large: (20000x20000 = )?400,000,000 pixels"
        with pytest.raises(ImageReadError, match=pattern) as info:
            reader(path)
        assert "bomb.png" in str(info.value) and f"limit of {MAX_PIXELS:,}" in str(info.value)


def test_size_limit_comes_from_the_environment(tmp_path, monkeypatch):
    path = write_png(tmp_path / "small.png", np.zeros((40, 50)))
    monkeypatch.setenv("CXRLIB_MAX_PIXELS", "1000")
    with pytest.raises(ImageReadError, match="50x40 = 2,000 pixels, over the limit of 1,000"):
        read_image(path)
    assert read_image(path, max_pixels=0).shape == (40, 50)


@pytest.mark.parametrize("check", [False, True])
def test_info_skips_a_bomb_and_reports_the_rest(tmp_path, capsys, check):
    _good_png(tmp_path / "images" / "good.png")
    (tmp_path / "images" / "bomb.png").write_bytes(_bomb_png())
    info = _info(capsys, tmp_path, *(["--check"] if check else []))
    assert info["images"] == 1
    reason = _skipped(info)["bomb.png"]
    assert reason.startswith("unreadable image: image too large") and "limit" in reason


def test_info_command_line_check_flag_and_a_bad_limit(tmp_path, capsys, monkeypatch):
    import sys
    import types

    # The seg and tb sub-commands import Keras when registered; info needs neither.
    stub = types.SimpleNamespace(register=lambda sub: None)
    for name in ("cxrlib.cli.seg", "cxrlib.cli.tb"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, stub)
    _good_png(tmp_path / "images" / "good.png")
    assert main(["-q", "info", str(tmp_path), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decoded"] is True
    monkeypatch.setenv("CXRLIB_MAX_PIXELS", "big")
    assert main(["-q", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CXRLIB_MAX_PIXELS='big'" in err


# --------------------------------------------------------------------------- item 6: DICOM values


RAMP = (np.arange(16).reshape(4, 4) * 256).astype(np.int64)  # 0 .. 3840 of 4095


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"WindowCenter": -5000, "WindowWidth": 100}, np.ones((4, 4))),  # below: white
        ({"WindowCenter": 9000, "WindowWidth": 100}, np.zeros((4, 4))),  # above: black
        ({"WindowCenter": 2000.5, "WindowWidth": 4001}, RAMP / 4000),  # not re-stretched
        ({}, RAMP / 4095),  # no window: the 12-bit range
        ({"photometric": "MONOCHROME1"}, 1 - RAMP / 4095),
    ],
    ids=["window-below", "window-above", "window-wide", "no-window", "monochrome1"],
)
def test_dicom_gray_levels(tmp_path, attributes, expected):
    image = read_image(_dicom(tmp_path / "x.dcm", RAMP, **attributes))
    assert np.allclose(image, expected, atol=1e-6)


def test_dicom_uniform_bright_image_is_not_black(tmp_path):
    flat = np.full((4, 4), 3500)
    windowed = read_image(_dicom(tmp_path / "w.dcm", flat, WindowCenter=2048, WindowWidth=4096))
    plain = read_image(_dicom(tmp_path / "p.dcm", flat))
    assert np.ptp(windowed) == 0 and windowed[0, 0] > 0.8
    assert np.allclose(plain, 3500 / 4095, atol=1e-6)


# --------------------------------------------------------------------------- item 8: info


def _decode_folder(base: Path) -> Path:
    """Good images, one with cut and one with zeroed pixel data, a short DICOM, empty masks."""
    for name in ("a", "b", "c"):
        _good_png(base / "images" / f"{name}.png")
    write_mask_png(base / "masks" / "a.png", np.eye(*SIZE, dtype=bool))
    write_mask_png(base / "masks" / "b.png", np.zeros(SIZE, bool))
    write_mask_png(base / "masks" / "c.png", np.zeros(SIZE, bool))
    (base / "images" / "cut.png").write_bytes(_damaged_pixels_png("cut"))
    (base / "images" / "zeroed.png").write_bytes(_damaged_pixels_png("zeros"))
    _dicom(base / "images" / "short.dcm", np.zeros(SIZE), pixel_bytes=64)
    return base


def test_info_reads_headers_only_by_default(tmp_path, capsys):
    info = _info(capsys, _decode_folder(tmp_path))
    assert info["images"] == 6 and info["decoded"] is False
    assert info["empty_masks"] == 0


def test_info_check_decodes_and_lists_undecodable_files_and_empty_masks(tmp_path, capsys, caplog):
    info = _info(capsys, _decode_folder(tmp_path), "--check")
    assert info["images"] == 3 and info["masks"] == 3 and info["decoded"] is True
    reasons = _skipped(info)
    assert set(reasons) == {"cut.png", "zeroed.png", "short.dcm"}
    assert all(reason.startswith("unreadable image: ") for reason in reasons.values())
    assert "pixel data cannot be decoded" in reasons["short.dcm"]
    assert info["empty_masks"] == 2
    assert info["details"]["empty_masks"] == ["masks/b.png", "masks/c.png"]
    args = argparse.Namespace(directory=tmp_path, json=False, check=True, quiet=True)
    assert _cmd_info(args) == 0
    out = capsys.readouterr()
    assert "empty masks: 2 mask files without a lung pixel" in out.out
    assert "masks/b.png" in out.out and "cut.png" in out.out
    assert "have no lung pixel (all zero)" in caplog.text, "and a warning is logged"


def test_info_finds_dicom_files_without_a_suffix(tmp_path, capsys):
    _dicom(tmp_path / "images" / "IM0001", RAMP)
    _dicom(tmp_path / "images" / "1.3.6.1.4.1.9590.100.1.2", RAMP)
    (tmp_path / "images" / "LICENSE").write_text("not an image\n")
    for flags in ([], ["--check"]):
        info = _info(capsys, tmp_path, *flags)
        assert info["images"] == 2
        assert _skipped(info) == {"LICENSE": "not an image or clinical reading (no suffix)"}
    assert read_image(tmp_path / "images" / "IM0001").shape == (4, 4)


def test_segment_and_classify_inputs_skip_a_bomb(tmp_path):
    """The folder runners' readers (no model needed) list a bomb as unreadable."""
    from cxrlib.seg.pipeline import _load_one
    from cxrlib.tb.classify import _images_to_classify
    from cxrlib.tb.inputs import _read_images

    _good_png(tmp_path / "good.png")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb_png())
    loaded = _load_one(bomb, (32, 32))
    assert loaded.image is None and loaded.error.startswith("image too large")
    paths, skipped = _images_to_classify(tmp_path)
    assert [Path(p).name for p in paths] == ["good.png"]
    assert [name for name, _ in skipped] == ["bomb.png"]
    arrays, bad = _read_images([str(bomb)], [(32, 32)], 1)
    assert arrays == [None] and "image too large" in bad[0][1]
