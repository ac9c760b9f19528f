"""Decode DICOM radiographs into gray levels in ``[0, 1]``, as a DICOM viewer shows them.

:func:`read_dicom` (also reachable as :func:`cxrlib.data.imageio.read_dicom` and through
:func:`cxrlib.data.imageio.read_image`) applies the modality LUT, the VOI LUT or window
(DICOM PS3.3 C.11.2.1.2) and MONOCHROME1 inversion; :func:`dicom_extent` reads the image
size from the header only. Both refuse images over the size limit of
:mod:`cxrlib.data.imageio` before any pixel data is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib.data.imagecore import ImageReadError, PathLike, check_pixels, max_pixels_limit

__all__ = ["dicom_extent", "read_dicom"]


def _dcmread(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except MemoryError as error:
        raise ImageReadError(path, "not enough memory to read the DICOM file") from error
    except InvalidDicomError as error:
        # pydicom's own text ends in "Use force=True", advice for Python callers only
        raise ImageReadError(
            path,
            "the file does not start like a DICOM file (no 'DICM' header): it is damaged or "
            "not DICOM; convert it to PNG or export it again from the viewer",
        ) from error
    except Exception as error:  # pydicom raises many types for damaged files
        raise ImageReadError(path, f"not a readable DICOM file ({error})") from error


def _dicom_extent(path: Path, dataset: Any, limit: int | None) -> tuple[int, int, int]:
    """``(columns, rows, frames)`` of a DICOM dataset, checked against ``limit``."""
    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
        frames = max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError) as error:
        raise ImageReadError(path, f"DICOM header has a bad image size ({error})") from error
    if rows <= 0 or columns <= 0:
        raise ImageReadError(path, "DICOM header has no image size (Rows/Columns)")
    check_pixels(path, columns, rows, frames, limit)
    return columns, rows, frames


def dicom_extent(path: PathLike, limit: int | None) -> tuple[int, int, int]:
    """Return a DICOM file's ``(columns, rows, frames)`` from its header.

    Parameters
    ----------
    path
        A DICOM file (read with ``stop_before_pixels``).
    limit
        Largest number of pixels allowed (None: no limit), as from
        :func:`cxrlib.data.imageio.max_pixels_limit`.

    Returns
    -------
    tuple of int
        ``(columns, rows, frames)``.

    Raises
    ------
    ImageReadError
        If the file is not DICOM, has no image size, or is over ``limit``.
    """
    path = Path(path)
    return _dicom_extent(path, _dcmread(path, stop_before_pixels=True), limit)


def read_dicom(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a DICOM radiograph as a gray float image.

    Stored values become gray levels in ``[0, 1]`` as a DICOM viewer shows them:

    1. the modality LUT (Modality LUT Sequence, or rescale slope/intercept);
    2. the VOI LUT: a VOI LUT Sequence (its output divided by the LUT's bit depth),
       else the first window centre/width with the VOI LUT function (``LINEAR``,
       ``LINEAR_EXACT`` or ``SIGMOID``; DICOM PS3.3 C.11.2.1.2) mapped straight onto
       ``[0, 1]``: values below the window are 0, above it 1, and the result is
       *not* stretched to the image's own minimum and maximum;
    3. without a (valid) window: unsigned data of up to 16 stored bits is scaled by
       the range of its stored bit depth (after the modality LUT); signed data (CT),
       data of more than 16 bits and float data by the range the data actually
       spans. A uniform image keeps its place in the stored range (so it is black
       only at the bottom of that range);
    4. MONOCHROME1 inversion (``1 - value``).

    Colour images (RGB, YBR) become the mean of their channels over the stored range.

    Parameters
    ----------
    path
        A DICOM file.
    max_pixels
        Size limit (Rows x Columns x frames), checked before the pixel data is
        decoded (see :mod:`cxrlib.data.imageio`).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.

    Raises
    ------
    ImageReadError
        If the file is not DICOM, has no or undecodable pixel data, holds several
        frames, or is over the size limit.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    dataset = _dcmread(path)
    if "PixelData" not in dataset:
        raise ImageReadError(path, "DICOM file has no pixel data (no PixelData element)")
    _dicom_extent(path, dataset, limit)
    try:
        raw = dataset.pixel_array
    except MemoryError as error:
        raise ImageReadError(path, "not enough memory to decode the pixel data") from error
    except Exception as error:  # pydicom raises many types for bad pixel data
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded ({error})") from error
    colour = int(dataset.get("SamplesPerPixel") or 1) > 1
    if raw.ndim != (3 if colour else 2):
        raise ImageReadError(path, f"expected a single 2-D frame, got shape {raw.shape}")
    try:
        return _dicom_gray(raw, dataset, colour)
    except (ValueError, TypeError, IndexError, AttributeError, NotImplementedError) as error:
        raise ImageReadError(path, f"DICOM values cannot be converted ({error})") from error


def _stored_bits(raw: np.ndarray, dataset: Any) -> int:
    bits = int(dataset.get("BitsStored") or 0)
    width = raw.dtype.itemsize * 8
    return width if bits <= 0 or bits > width else bits


def _dicom_gray(raw: np.ndarray, dataset: Any, colour: bool) -> np.ndarray:
    """Stored DICOM values -> float32 gray levels in [0, 1] (see :func:`read_dicom`)."""
    from pydicom.pixels import apply_modality_lut

    bits = _stored_bits(raw, dataset)
    if colour:
        gray = raw[..., :3].astype(np.float64).mean(axis=-1)
        top = float(2**bits - 1) if np.issubdtype(raw.dtype, np.integer) else 1.0
        return np.clip(gray / top, 0.0, 1.0).astype(np.float32)
    values = np.asarray(apply_modality_lut(raw, dataset), dtype=np.float64)
    scaled = None
    if dataset.get("VOILUTSequence"):
        scaled = _voi_lut_sequence(values, dataset)
    if scaled is None:
        window = _window_of(dataset)
        if window is not None:
            scaled = _apply_window(values, *window)
    if scaled is None:
        lo, hi = _value_range(raw, values, dataset, bits)
        scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else values * 0.0
    if str(dataset.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def _first_number(value: Any) -> float | None:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def _window_of(dataset: Any) -> tuple[float, float, str] | None:
    """The first (centre, width, VOI LUT function) of a dataset; None if absent or invalid."""
    center = _first_number(dataset.get("WindowCenter"))
    width = _first_number(dataset.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(dataset.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    # PS3.3 C.11.2.1.2: width >= 1 for LINEAR, > 0 for LINEAR_EXACT and SIGMOID.
    if width < 1.0 if function == "LINEAR" else width <= 0.0:
        return None
    return center, width, function


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI window (DICOM PS3.3 C.11.2.1.2/3) with output range [0, 1]."""
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1.0:  # a step at centre - 0.5
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _voi_lut_sequence(values: np.ndarray, dataset: Any) -> np.ndarray | None:
    """Apply the first VOI LUT of the sequence, output over the LUT's bit depth.

    Returns None (use the window instead) when the LUT cannot be applied.
    """
    from pydicom.pixels import apply_voi

    try:
        entries, first, depth = (int(v) for v in dataset.VOILUTSequence[0].LUTDescriptor)
        entries = entries or 2**16
        indices = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
        mapped = np.asarray(apply_voi(indices, dataset), dtype=np.float64)
        table = apply_voi(np.arange(first, first + entries, dtype=np.int64), dataset)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, NotImplementedError):
        return None
    # Many files declare 16 bits per entry but use 12: scale by the bits actually used.
    bits = min(depth, max(8, int(np.max(table)).bit_length()))
    return np.clip(mapped / float(2**bits - 1), 0.0, 1.0)


def _value_range(
    raw: np.ndarray, values: np.ndarray, dataset: Any, bits: int
) -> tuple[float, float]:
    """The ``(lo, hi)`` mapped onto ``[0, 1]`` when there is no window."""
    from pydicom.pixels import apply_modality_lut

    nominal: tuple[float, float] | None = None
    signed = int(dataset.get("PixelRepresentation") or 0) == 1
    if np.issubdtype(raw.dtype, np.integer):
        raw_lo = -(2 ** (bits - 1)) if signed else 0
        raw_hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        ends = np.asarray(
            apply_modality_lut(np.array([raw_lo, raw_hi], dtype=raw.dtype), dataset), np.float64
        )
        nominal = (float(ends.min()), float(ends.max()))
        if not signed and bits <= 16:
            return nominal
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi > lo:
        return lo, hi
    return nominal if nominal is not None else (0.0, 1.0)
