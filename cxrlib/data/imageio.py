"""Read and write radiographs and lung masks.

Every reader returns plain numpy arrays:

* images: ``float32`` of shape ``(H, W)`` with values in ``[0, 1]`` (0 = black);
* masks: ``bool`` of shape ``(H, W)``.

PNG and JPEG (8- or 16-bit, grayscale, RGB or RGBA) are decoded with Pillow;
DICOM with pydicom (MONOCHROME1 inverted, rescale slope/intercept, VOI LUT or
window applied). Any failure raises :class:`ImageReadError`, whose message names
the file and what is wrong with it.

Writers are atomic: they write to a temporary file in the same folder and rename
it into place, so an interrupted write never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrlib.atomic import atomic_write_bytes

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "ImageReadError",
    "is_image_file",
    "read_image",
    "read_mask",
    "read_dicom",
    "write_png",
    "write_mask_png",
    "atomic_write_bytes",
]

#: File suffixes read as raster images (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
#: File suffixes read as DICOM (lower case).
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})

PathLike = str | os.PathLike[str]
MaskSource = PathLike | Sequence[PathLike]


class ImageReadError(ValueError):
    """An image or mask file could not be read; the message names the file."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Rebuild from (path, reason) so the error survives a trip through a process pool.
        return (type(self), (str(self.path), self.reason))


def is_image_file(path: PathLike) -> bool:
    """Return True when ``path`` has a raster-image or DICOM suffix."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES


def _pil_to_float(image: Image.Image, path: PathLike) -> np.ndarray:
    """Convert a decoded Pillow image to a float32 gray array in [0, 1]."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        image = image.convert("L")
        mode = "L"
    if mode == "1":
        return np.asarray(image, dtype=np.float32)
    array = np.asarray(image)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return array.astype(np.float32) / 65535.0
    if mode == "I":
        # 16-bit PNGs open as mode "I" (int32); values fit in 16 bits.
        hi = 65535.0 if array.max(initial=0) > 255 else 255.0
        return np.clip(array.astype(np.float32) / hi, 0.0, 1.0)
    if mode == "F":
        lo, hi = float(array.min()), float(array.max())
        if hi <= lo:
            return np.zeros(array.shape, np.float32)
        return ((array - lo) / (hi - lo)).astype(np.float32)
    if mode == "L":
        return array.astype(np.float32) / 255.0
    raise ImageReadError(path, f"unsupported image mode {mode!r}")


def read_image(path: PathLike) -> np.ndarray:
    """Read a radiograph as a gray float image.

    Parameters
    ----------
    path
        A PNG/JPEG/TIFF/BMP file, or a DICOM file (``.dcm``/``.dicom`` suffix, or
        any file that starts with the DICOM preamble).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return read_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            array = _pil_to_float(image, path)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"not a readable image ({error})") from error
    if array.ndim != 2 or min(array.shape) == 0:
        raise ImageReadError(path, f"expected a 2-D image, got shape {array.shape}")
    return array


def read_mask(source: MaskSource, threshold: float = 0.5) -> np.ndarray:
    """Read a lung mask as a boolean array.

    Parameters
    ----------
    source
        One mask file, or several (e.g. Montgomery's left and right lung masks),
        which are merged with a logical OR. All parts must have the same shape.
    threshold
        Pixels brighter than ``threshold`` (in ``[0, 1]``) are lung. The default
        binarizes anti-aliased 0/255 masks at 127.5.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape ``(H, W)``.
    """
    parts = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not parts:
        raise ValueError("read_mask needs at least one mask file")
    merged: np.ndarray | None = None
    for part in parts:
        mask = read_image(part) > threshold
        if merged is None:
            merged = mask
        elif mask.shape != merged.shape:
            raise ImageReadError(
                part, f"mask part has shape {mask.shape}, but {parts[0]} has {merged.shape}"
            )
        else:
            merged |= mask
    assert merged is not None
    return merged


def _has_dicom_preamble(path: Path) -> bool:
    """Return True if the file carries the 128-byte preamble + ``DICM`` marker."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: PathLike) -> np.ndarray:
    """Read a DICOM radiograph as a gray float image.

    Applies, in order: rescale slope/intercept (modality LUT), the VOI LUT or
    window centre/width when present, MONOCHROME1 inversion, then scales to
    ``[0, 1]`` using the stored bit depth (or the window range).

    Parameters
    ----------
    path
        A DICOM file.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as error:
        raise ImageReadError(path, f"not a readable DICOM file ({error})") from error
    if "PixelData" not in dataset:
        raise ImageReadError(path, "DICOM file has no pixel data (no PixelData element)")
    try:
        raw = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for bad pixel data
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded ({error})") from error
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        raw = raw[..., :3].mean(axis=-1)
    if raw.ndim != 2:
        raise ImageReadError(path, f"expected a single 2-D frame, got shape {raw.shape}")
    values = apply_modality_lut(raw, dataset).astype(np.float64)
    has_voi = "VOILUTSequence" in dataset or "WindowCenter" in dataset
    if has_voi:
        values = apply_voi_lut(values, dataset).astype(np.float64)
        lo, hi = float(values.min()), float(values.max())
    else:
        bits = int(getattr(dataset, "BitsStored", 0) or 0)
        slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
        intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
        signed = int(getattr(dataset, "PixelRepresentation", 0) or 0) == 1
        if bits:
            raw_lo = -(2 ** (bits - 1)) if signed else 0
            raw_hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
            ends = sorted((raw_lo * slope + intercept, raw_hi * slope + intercept))
            lo, hi = ends
        else:
            lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        scaled = np.zeros(values.shape, np.float32)
    else:
        scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def _to_uint(image: np.ndarray, bits: int) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255 if bits == 8 else array.astype(np.uint16) * 65535
    if np.issubdtype(array.dtype, np.floating):
        top = 255 if bits == 8 else 65535
        scaled = np.rint(np.clip(array, 0.0, 1.0) * top)
        return scaled.astype(np.uint8 if bits == 8 else np.uint16)
    if bits == 8:
        return array.astype(np.uint8)
    return array.astype(np.uint16)


def write_png(path: PathLike, image: np.ndarray, bits: int = 8) -> Path:
    """Write a gray image as PNG, atomically.

    Parameters
    ----------
    path
        Destination file; parent folders are created.
    image
        ``(H, W)`` array: float in ``[0, 1]``, bool, or unsigned integers.
    bits
        8 or 16 bits per pixel.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"write_png expects a 2-D array, got shape {array.shape}")
    pixels = _to_uint(array, bits)
    import io

    buffer = io.BytesIO()
    if bits == 8:
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    else:
        Image.fromarray(pixels.astype(np.uint16)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def write_mask_png(path: PathLike, mask: np.ndarray) -> Path:
    """Write a boolean mask as an 8-bit 0/255 PNG, atomically."""
    return write_png(path, np.asarray(mask, dtype=bool), bits=8)
