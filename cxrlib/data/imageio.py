"""Read and write radiographs and lung masks.

Every reader returns plain numpy arrays:

* images: ``float32`` of shape ``(H, W)`` with values in ``[0, 1]`` (0 = black);
* masks: ``bool`` of shape ``(H, W)``.

PNG and JPEG (8- or 16-bit, grayscale, RGB or RGBA) are decoded with Pillow;
DICOM with pydicom (modality LUT, then VOI LUT or window, then MONOCHROME1
inversion: see :func:`read_dicom`). Any failure raises :class:`ImageReadError`,
whose message names the file and what is wrong with it.

Image size limit
----------------
A small file can declare a huge image (a "decompression bomb": a 400 KB PNG of
20000 x 20000 pixels would decode to 400 million pixels). The readers refuse any
image with more pixels than a limit, before decoding it, with an
:class:`ImageReadError` that names the file and the limit, so that folder runners
skip the file like any other unreadable one. The limit is, in order of precedence:

1. the ``max_pixels`` argument of :func:`read_image`, :func:`read_mask`,
   :func:`read_dicom` and :func:`image_size`;
2. the environment variable ``CXRLIB_MAX_PIXELS`` (:data:`MAX_PIXELS_ENV`);
3. :data:`MAX_PIXELS`, 89,478,485 pixels (Pillow's own default, about
   9459 x 9459; a large 4000 x 5000 radiograph has 20 million).

``0`` means no limit. A limit above Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``)
raises that guard to the limit for the rest of the process; it is never lowered.

Writers are atomic: they write to a temporary file in the same folder and rename
it into place, so an interrupted write never leaves a half-written file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrlib.atomic import atomic_write_bytes
from cxrlib.data.imagecore import (
    MAX_PIXELS,
    MAX_PIXELS_ENV,
    ImageReadError,
    PathLike,
    check_pixels,
    max_pixels_limit,
    too_large_error,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageReadError",
    "is_image_file",
    "is_dicom_file",
    "max_pixels_limit",
    "image_size",
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
MaskSource = PathLike | Sequence[PathLike]

_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def is_image_file(path: PathLike, *, sniff: bool = False) -> bool:
    """Return True when ``path`` has a raster-image or DICOM suffix.

    Parameters
    ----------
    path
        A file path (it need not exist unless ``sniff`` is true).
    sniff
        Also return True for a file with any other suffix (or none) that starts with
        the DICOM preamble and ``DICM`` marker (reads its first 132 bytes).
    """
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    return sniff and _has_dicom_preamble(Path(path))


def _open_pil(path: Path, limit: int | None) -> Image.Image:
    """Open (not decode) an image with Pillow, refusing one over ``limit`` pixels."""
    guard = Image.MAX_IMAGE_PIXELS
    if guard is not None and (limit is None or limit > guard):
        Image.MAX_IMAGE_PIXELS = limit  # let our own limit decide (never lowered)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        if limit is None:  # Pillow's guard was lowered again after we raised it
            raise ImageReadError(path, f"image too large for Pillow ({error})") from error
        size = f"{int(found[1]):,} pixels" if found else "too many pixels"
        raise too_large_error(path, size, limit) from error
    try:
        width, height = image.size
        check_pixels(path, width, height, 1, limit)  # only the first frame is read
    except BaseException:
        image.close()
        raise
    return image


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


def _existing(path: PathLike) -> Path:
    """Return ``path`` as a Path; raise when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return path


def is_dicom_file(path: PathLike) -> bool:
    """Return True for a ``.dcm``/``.dicom`` file or one that starts like DICOM (any suffix)."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path)


def image_size(path: PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """Return an image's ``(width, height)`` from its header, without decoding pixels.

    Parameters
    ----------
    path
        A raster image or a DICOM file (read with ``stop_before_pixels``).
    max_pixels
        Size limit in pixels (see the module docstring; None: the default, 0: none).

    Returns
    -------
    tuple of int
        ``(width, height)``.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, not an image, a PNG without its ``IEND`` chunk
        (truncated), or an image over the size limit.
    """
    path = _existing(path)
    limit = max_pixels_limit(max_pixels)
    if is_dicom_file(path):
        width, height, _ = _dicom_header(path, limit)
        return width, height
    try:
        with _open_pil(path, limit) as image:
            width, height = image.size
            image_format = image.format
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        raise ImageReadError(path, "not a readable image (Pillow cannot identify it)") from error
    except _READ_ERRORS as error:
        raise ImageReadError(path, f"not a readable image ({error})") from error
    if image_format == "PNG":
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            if b"IEND" not in handle.read():
                raise ImageReadError(path, "truncated PNG (no IEND chunk at the end)")
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"image has no pixels ({width}x{height})")
    return width, height


def read_image(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a radiograph as a gray float image.

    Parameters
    ----------
    path
        A PNG/JPEG/TIFF/BMP file, or a DICOM file (``.dcm``/``.dicom`` suffix, or
        any file that starts with the DICOM preamble).
    max_pixels
        Size limit in pixels, checked before decoding (see the module docstring;
        None: ``$CXRLIB_MAX_PIXELS`` or :data:`MAX_PIXELS`; 0: no limit).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, truncated, corrupt, not an image, or larger
        than the size limit.
    """
    path = _existing(path)
    limit = max_pixels_limit(max_pixels)
    if is_dicom_file(path):
        return read_dicom(path, max_pixels=limit or 0)
    try:
        with _open_pil(path, limit) as image:
            image.load()
            array = _pil_to_float(image, path)
    except ImageReadError:
        raise
    except MemoryError as error:
        raise ImageReadError(path, "not enough memory to decode the image") from error
    except _READ_ERRORS as error:
        raise ImageReadError(path, f"not a readable image ({error})") from error
    if array.ndim != 2 or min(array.shape) == 0:
        raise ImageReadError(path, f"expected a 2-D image, got shape {array.shape}")
    return array


def read_mask(
    source: MaskSource, threshold: float = 0.5, *, max_pixels: int | None = None
) -> np.ndarray:
    """Read a lung mask as a boolean array.

    Parameters
    ----------
    source
        One mask file, or several (e.g. Montgomery's left and right lung masks),
        which are merged with a logical OR. All parts must have the same shape.
    threshold
        Pixels brighter than ``threshold`` (in ``[0, 1]``) are lung. The default
        binarizes anti-aliased 0/255 masks at 127.5.
    max_pixels
        Size limit in pixels, as for :func:`read_image`.

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
        mask = read_image(part, max_pixels=max_pixels) > threshold
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


# --------------------------------------------------------------------------- DICOM


def _has_dicom_preamble(path: Path) -> bool:
    """Return True if the file carries the 128-byte preamble + ``DICM`` marker."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_header(path: Path, limit: int | None) -> tuple[int, int, int]:
    from cxrlib.data.dicomio import dicom_extent

    return dicom_extent(path, limit)


def read_dicom(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a DICOM radiograph as a gray float image.

    The modality LUT, then the VOI LUT or window (onto ``[0, 1]``, without stretching
    to the image's own range), then MONOCHROME1 inversion; see
    :func:`cxrlib.data.dicomio.read_dicom` for the details.

    Parameters
    ----------
    path
        A DICOM file.
    max_pixels
        Size limit (Rows x Columns x frames), checked before the pixel data is decoded.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.
    """
    from cxrlib.data import dicomio

    return dicomio.read_dicom(path, max_pixels=max_pixels)


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
