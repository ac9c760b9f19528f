"""The error and the image size limit shared by the readers of :mod:`cxrlib.data.imageio`.

See :mod:`cxrlib.data.imageio` ("Image size limit") for how the limit is chosen; the
names here are re-exported there, which is where to import them from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cxrlib.errors import CxrlibError

__all__ = [
    "MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageReadError",
    "check_pixels",
    "max_pixels_limit",
    "too_large_error",
]

#: Default largest image the readers decode, in pixels (width x height x frames).
MAX_PIXELS: int = 89_478_485
#: Environment variable that overrides :data:`MAX_PIXELS` (a whole number; 0 = no limit).
MAX_PIXELS_ENV: str = "CXRLIB_MAX_PIXELS"

PathLike = str | os.PathLike[str]


class ImageReadError(CxrlibError, ValueError):
    """An image or mask file could not be read; the message names the file."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Rebuild from (path, reason) so the error survives a trip through a process pool.
        return (type(self), (str(self.path), self.reason))


def max_pixels_limit(max_pixels: int | None = None) -> int | None:
    """Return the image size limit in effect, in pixels (see :mod:`cxrlib.data.imageio`).

    Parameters
    ----------
    max_pixels
        An explicit limit (``0``: no limit). None reads ``$CXRLIB_MAX_PIXELS``, and
        without it :data:`MAX_PIXELS`.

    Returns
    -------
    int or None
        The largest number of pixels a reader decodes; None for no limit.

    Raises
    ------
    ValueError
        If the limit (argument or environment variable) is not a whole number >= 0.
    """
    source = "max_pixels"
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return MAX_PIXELS
        source = MAX_PIXELS_ENV
        try:
            value = int(raw.replace("_", "").replace(",", ""))
        except ValueError:
            raise ValueError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a whole number of pixels (0 = no limit)"
            ) from None
    elif isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
        raise ValueError(f"max_pixels must be a whole number of pixels, got {max_pixels!r}")
    else:
        value = int(max_pixels)
    if value < 0:
        raise ValueError(f"{source} must be >= 0 (0 = no limit), got {value}")
    return value or None


def too_large_error(path: PathLike, size: str, limit: int) -> ImageReadError:
    """Return the error for an image over the size limit (``size`` describes the image)."""
    return ImageReadError(
        path,
        f"image too large: {size}, over the limit of {limit:,} pixels "
        f"(decompression-bomb guard; set {MAX_PIXELS_ENV} or max_pixels to change it)",
    )


def check_pixels(path: PathLike, width: int, height: int, frames: int, limit: int | None) -> None:
    """Raise :class:`ImageReadError` when ``width x height x frames`` is over ``limit``."""
    pixels = width * height * frames
    if limit is not None and pixels > limit:
        extent = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
        raise too_large_error(path, f"{extent} = {pixels:,} pixels", limit)
