"""Resize, letterbox and equalize radiographs: numpy in, numpy out.

* :func:`resize_image` -- ``float32`` image to a new size (area averaging or bilinear);
* :func:`resize_mask` -- ``bool`` mask to a new size, still binary;
* :func:`letterbox` / :func:`letterbox_mask` -- aspect-preserving fit with padding,
  and :func:`unletterbox` to map a prediction back to the original resolution;
* :func:`equalize` -- global histogram equalization or CLAHE;
* :func:`preprocess_image` / :func:`preprocess_mask` -- the whole chain, with the
  same geometry for an image and its mask.

:mod:`cxrlib.preprocess.loader` applies the chain to a whole dataset table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image

__all__ = [
    "LetterboxBox",
    "resize_image",
    "resize_mask",
    "letterbox_box",
    "letterbox",
    "letterbox_mask",
    "unletterbox",
    "equalize",
    "preprocess_image",
    "preprocess_mask",
]

ResizeMethod = Literal["area", "bilinear"]
EqualizeMethod = Literal["hist", "clahe"]
Size = int | tuple[int, int]

_RESIZE_METHODS = ("area", "bilinear")
_EQUALIZE_METHODS = ("hist", "clahe")


class LetterboxBox(NamedTuple):
    """Where a letterboxed image sits in its padded frame.

    Attributes
    ----------
    top, left
        Offset in pixels of the resized image inside the padded frame.
    scale
        Resize factor applied to the original image (same on both axes).
    """

    top: int
    left: int
    scale: float


# --------------------------------------------------------------------------- helpers


def _as_hw(size: Size, name: str = "size") -> tuple[int, int]:
    """Normalize ``size`` (an int or an (h, w) pair) to a pair of positive ints."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if is_int(size):
        pair = (int(size), int(size))  # type: ignore[arg-type]
    elif isinstance(size, Sequence | np.ndarray) and len(size) == 2 and all(map(is_int, size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return pair


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or min(array.shape) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (H, W), got shape {array.shape}")
    return array


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _pil_filters(
    shape: tuple[int, int], size: tuple[int, int], method: str
) -> tuple[Image.Resampling, Image.Resampling]:
    """Pick the Pillow filter per axis: (height filter, width filter)."""
    if method == "bilinear":
        return Image.Resampling.BILINEAR, Image.Resampling.BILINEAR
    # "area": a box filter averages exactly the input area under each output pixel
    # when shrinking; when enlarging it would degenerate to nearest neighbour, so
    # that axis is interpolated bilinearly instead.
    return tuple(  # type: ignore[return-value]
        Image.Resampling.BOX if new <= old else Image.Resampling.BILINEAR
        for old, new in zip(shape, size, strict=True)
    )


def _resize_float(array: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize a float32 (H, W) array with Pillow's mode "F" (32-bit float) resampler."""
    if array.shape == size:
        return array.copy()
    height, width = size
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    factor_h, factor_w = array.shape[0] // height, array.shape[1] // width
    if method == "area" and (factor_h * height, factor_w * width) == array.shape:
        # Shrinking by whole factors (512 -> 256): block means, twice as fast as resize.
        picture = picture.reduce((factor_w, factor_h))
    else:
        filter_h, filter_w = _pil_filters(array.shape, size, method)
        if filter_h == filter_w:
            picture = picture.resize((width, height), resample=filter_h)
        else:  # the two axes need different filters: one separable pass per axis
            picture = picture.resize((width, array.shape[0]), resample=filter_w)
            picture = picture.resize((width, height), resample=filter_h)
    return np.array(picture, dtype=np.float32)


# ---------------------------------------------------------------------------- resize


def resize_image(image: np.ndarray, size: Size, method: ResizeMethod = "area") -> np.ndarray:
    """Resize a gray image.

    Parameters
    ----------
    image
        ``(H, W)`` array of any real dtype (typically ``float32`` in ``[0, 1]``).
    size
        Output size: an int for a square, or ``(height, width)``.
    method
        ``"area"`` (default): each output pixel is the mean of the input area it
        covers (box filter; no aliasing, the right choice for downscaling); axes that
        are enlarged are interpolated bilinearly. ``"bilinear"``: bilinear
        interpolation (with a widened triangle filter when shrinking, as Pillow does).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``size``. Both methods average with non-negative
        weights, so the output stays within the input's value range.
    """
    _check_choice(method, _RESIZE_METHODS, "method")
    array = _as_2d(image, "image")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"image must hold numbers, got dtype {array.dtype} (use resize_mask)")
    out = _resize_float(array.astype(np.float32, copy=False), _as_hw(size), method)
    # Guard against float round-off pushing values a hair outside the input range.
    return np.clip(out, np.float32(array.min()), np.float32(array.max()), out=out)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """Resize a binary mask; the result is binary too.

    The mask is resampled as a 0/1 float image with the ``"area"`` method of
    :func:`resize_image` and thresholded at 0.5: an output pixel is foreground when
    more than half of the area it covers is foreground. Unlike nearest-neighbour
    sampling this keeps boundaries in place (no half-pixel shift, no jagged steps
    from skipped rows) and keeps the foreground area within about one pixel along
    the boundary; enlarging gives smooth (bilinear) instead of blocky edges.

    Parameters
    ----------
    mask
        ``(H, W)`` array; nonzero means foreground.
    size
        Output size: an int for a square, or ``(height, width)``.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape ``size``.
    """
    array = _as_2d(mask, "mask")
    binary = array if array.dtype == np.bool_ else array != 0
    return _resize_float(binary.astype(np.float32), _as_hw(size), "area") > 0.5


# ------------------------------------------------------------------------- letterbox


def letterbox_box(shape: tuple[int, int], size: Size) -> LetterboxBox:
    """Compute where an image of ``shape`` lands when letterboxed into ``size``.

    Parameters
    ----------
    shape
        ``(H, W)`` of the original image.
    size
        Output frame: an int for a square, or ``(height, width)``.

    Returns
    -------
    LetterboxBox
        ``(top, left, scale)``: the image is resized by ``scale`` (rounded to whole
        pixels, the same on both axes) and centred in the frame.
    """
    height, width = _as_hw(tuple(shape), "shape")
    frame_h, frame_w = _as_hw(size)
    scale = min(frame_h / height, frame_w / width)
    fit_h, fit_w = _fitted_shape((height, width), scale, (frame_h, frame_w))
    return LetterboxBox((frame_h - fit_h) // 2, (frame_w - fit_w) // 2, scale)


def _fitted_shape(shape: tuple[int, int], scale: float, frame: tuple[int, int]) -> tuple[int, int]:
    """Size of the resized (unpadded) image inside a letterbox frame."""
    return (
        min(frame[0], max(1, round(shape[0] * scale))),
        min(frame[1], max(1, round(shape[1] * scale))),
    )


def _pad(content: np.ndarray, box: LetterboxBox, frame: tuple[int, int], fill: Any) -> np.ndarray:
    out = np.full(frame, fill, dtype=content.dtype)
    out[box.top : box.top + content.shape[0], box.left : box.left + content.shape[1]] = content
    return out


def letterbox(
    image: np.ndarray, size: Size, fill: float = 0.0, method: ResizeMethod = "area"
) -> tuple[np.ndarray, LetterboxBox]:
    """Fit an image into a frame without distorting it, padding the rest.

    Parameters
    ----------
    image
        ``(H, W)`` gray image.
    size
        Output frame: an int for a square, or ``(height, width)``.
    fill
        Value of the padding.
    method
        Resize method, see :func:`resize_image`.

    Returns
    -------
    image : numpy.ndarray
        ``float32`` array of shape ``size``.
    box : LetterboxBox
        ``(top, left, scale)``, for :func:`unletterbox`.
    """
    array = _as_2d(image, "image")
    frame = _as_hw(size)
    box = letterbox_box(array.shape, frame)
    content = resize_image(array, _fitted_shape(array.shape, box.scale, frame), method)
    return _pad(content, box, frame, np.float32(fill)), box


def letterbox_mask(mask: np.ndarray, size: Size) -> tuple[np.ndarray, LetterboxBox]:
    """Letterbox a binary mask exactly like :func:`letterbox` does its image.

    Returns
    -------
    mask : numpy.ndarray
        ``bool`` array of shape ``size`` (padding is False).
    box : LetterboxBox
        ``(top, left, scale)``.
    """
    array = _as_2d(mask, "mask")
    frame = _as_hw(size)
    box = letterbox_box(array.shape, frame)
    content = resize_mask(array, _fitted_shape(array.shape, box.scale, frame))
    return _pad(content, box, frame, False), box


def unletterbox(
    array: np.ndarray, box: tuple[int, int, float], original_shape: tuple[int, int]
) -> np.ndarray:
    """Map a letterboxed image or mask (e.g. a prediction) back to the original size.

    Parameters
    ----------
    array
        ``(h, w)`` or ``(h, w, 1)`` letterboxed array: ``bool`` (a mask) or numbers
        (an image or a probability map).
    box
        The ``(top, left, scale)`` returned by :func:`letterbox` or
        :func:`letterbox_box` for this frame and ``original_shape``.
    original_shape
        ``(H, W)`` of the original image.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` (or ``(H, W, 1)``) array: ``bool`` for a bool input (resized with
        :func:`resize_mask`), else ``float32`` (resized with :func:`resize_image`).
    """
    values = np.asarray(array)
    channel = values.ndim == 3 and values.shape[-1] == 1
    plane = _as_2d(values[..., 0] if channel else values, "array")
    top, left, scale = box
    original = _as_hw(tuple(original_shape), "original_shape")
    fit_h, fit_w = _fitted_shape(original, float(scale), plane.shape)
    if top < 0 or left < 0 or top + fit_h > plane.shape[0] or left + fit_w > plane.shape[1]:
        raise ValueError(
            f"box {tuple(box)} for original shape {original} does not fit in an array of "
            f"shape {plane.shape}; was it letterboxed to another size?"
        )
    crop = plane[top : top + fit_h, left : left + fit_w]
    out = resize_mask(crop, original) if crop.dtype == np.bool_ else resize_image(crop, original)
    return out[..., np.newaxis] if channel else out


# -------------------------------------------------------------------------- equalize


def equalize(
    image: np.ndarray, method: EqualizeMethod = "hist", clip_limit: float = 0.01
) -> np.ndarray:
    """Spread the gray levels of an image over ``[0, 1]`` (contrast enhancement).

    Parameters
    ----------
    image
        ``(H, W)`` array with values in ``[0, 1]``.
    method
        ``"hist"``: global histogram equalization
        (:func:`skimage.exposure.equalize_hist`, 256 bins). ``"clahe"``: contrast
        limited adaptive histogram equalization
        (:func:`skimage.exposure.equalize_adapthist`, tiles of 1/8 of the image).
    clip_limit
        CLAHE clip limit in ``(0, 1]``; higher gives more contrast. Ignored by
        ``"hist"``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape with values in ``[0, 1]`` (a constant
        image is returned unchanged).
    """
    from skimage import exposure

    _check_choice(method, _EQUALIZE_METHODS, "method")
    array = _as_2d(image, "image").astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    array = np.clip(array, 0.0, 1.0)
    if hi - lo <= 0:
        return array.copy()  # a constant image has no levels to spread
    if method == "hist":
        out = exposure.equalize_hist(array, nbins=256)
    else:
        if not 0 < clip_limit <= 1:
            raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit!r}")
        out = exposure.equalize_adapthist(array, clip_limit=clip_limit)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------- whole chain


def preprocess_image(
    image: np.ndarray,
    *,
    size: Size,
    letterbox: bool = False,
    equalize: EqualizeMethod | None = None,
    method: ResizeMethod = "area",
    clip_limit: float = 0.01,
) -> np.ndarray:
    """Resize (or letterbox) and optionally equalize one image.

    Equalization runs after resizing (cheaper, and CLAHE's tiles are relative to
    the image size anyway) and, when letterboxing, before padding, so the padding
    does not distort the histogram.

    Parameters
    ----------
    image
        ``(H, W)`` array with values in ``[0, 1]``.
    size
        Output size: an int for a square, or ``(height, width)``.
    letterbox
        Keep the aspect ratio and pad with 0 (see :func:`letterbox`) instead of
        stretching to ``size``.
    equalize
        None, ``"hist"`` or ``"clahe"`` (see :func:`~cxrlib.preprocess.equalize`).
    method
        Resize method, see :func:`resize_image`.
    clip_limit
        CLAHE clip limit.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``size``.
    """
    array = _as_2d(image, "image")
    frame = _as_hw(size)
    equalize = equalize or None  # accept False
    if equalize is not None:
        _check_choice(equalize, _EQUALIZE_METHODS, "equalize")
    if letterbox:
        box = letterbox_box(array.shape, frame)
        content = resize_image(array, _fitted_shape(array.shape, box.scale, frame), method)
    else:
        content = resize_image(array, frame, method)
    if equalize is not None:
        content = _equalize(content, equalize, clip_limit)
    return _pad(content, box, frame, np.float32(0)) if letterbox else content


_equalize = equalize  # the keyword argument of preprocess_image shadows the function


def preprocess_mask(mask: np.ndarray, *, size: Size, letterbox: bool = False) -> np.ndarray:
    """Apply to a mask the geometry :func:`preprocess_image` applies to its image.

    Parameters
    ----------
    mask
        ``(H, W)`` array; nonzero means foreground.
    size
        Output size: an int for a square, or ``(height, width)``.
    letterbox
        Keep the aspect ratio and pad with False.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape ``size``.
    """
    if letterbox:
        return letterbox_mask(mask, size)[0]
    return resize_mask(mask, size)
