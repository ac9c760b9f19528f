"""The augmentation transforms of images and masks, and their parameters.

The transforms, each applied with its own probability (:class:`AugmentationConfig`):

* **contrast v1** (:func:`brightness_contrast`): the classic OpenCV-tutorial
  ``apply_brightness_contrast`` with brightness ``b = -40`` and contrast
  ``c = -120`` on the 0-255 scale. Brightness: for ``b < 0``,
  ``x <- x (255 + b) / 255``; for ``b > 0``, ``x <- x (255 - b) / 255 + b``.
  Contrast: ``f = 131 (c + 127) / (127 (131 - c))``, ``x <- f x + 127 (1 - f)``.
  Each step saturates to ``[0, 255]`` (as ``cv2.addWeighted``; values are not
  rounded to integers here). With the defaults ``f = 0.0288``: the image is
  squeezed into a narrow band around mid-grey, a very strong contrast loss.
* **contrast v2** (:func:`scale_intensity`): ``x <- clip(alpha x + beta / 255)``
  with ``alpha = 1.5``, ``beta = 0.7``, i.e. ``cv2.convertScaleAbs(img, alpha,
  beta)`` of the original notebooks: ``beta`` is in 8-bit grey levels, so on
  the ``[0, 1]`` scale it shifts by ``0.7 / 255``; the effect is a 1.5x contrast
  stretch that saturates the brightest third.
* **noise** (:func:`add_noise`): ``x <- clip(x + epsilon z)`` with ``z``
  standard normal (``noise_kind="gaussian"``, default) or uniform on
  ``[-1, 1]``, ``epsilon = 0.1``.
* **geometric** (:func:`affine_pair`): rotation by up to +-10 degrees, shift by
  up to +-8 % of the height/width, isotropic scale in ``[0.9, 1.1]``, about the
  image centre, applied identically to image (linear interpolation) and mask
  (nearest neighbour) with :func:`scipy.ndimage.affine_transform`; outside
  pixels are black / background.
* **left-right flip**: off by default (``hflip=False``): the heart is on the
  left, and flipped radiographs are not anatomically plausible.

Every result is clipped to ``[0, 1]``. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed reproduces a batch exactly.

Each transform is a pure function; :class:`cxrlib.seg.augment.Augmenter` draws which
ones apply to each training image, with the probabilities of :class:`AugmentationConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "AugmentationConfig",
    "brightness_contrast",
    "scale_intensity",
    "add_noise",
    "affine_params",
    "affine_pair",
]

_FILL_MODES = ("constant", "nearest")
_NOISE_KINDS = ("gaussian", "uniform")


@dataclass(frozen=True)
class AugmentationConfig:
    """Parameters and probabilities of the training augmentation.

    Attributes
    ----------
    p_geometric : float, default 0.5
        Probability of a random rotation + shift + scale.
    rotation_deg : float, default 10.0
        Rotation angle drawn uniformly in ``[-rotation_deg, rotation_deg]``.
    shift_fraction : float, default 0.08
        Shift along each axis drawn uniformly in ``[-f, f]`` times the size.
    scale_range : (float, float), default (0.9, 1.1)
        Isotropic zoom factor drawn uniformly in this range.
    fill_mode : {"constant", "nearest"}, default "constant"
        Pixels from outside the image: black (mask background), or the nearest
        edge pixel.
    p_contrast_v1 : float, default 0.15
        Probability of :func:`brightness_contrast`.
    brightness, contrast : float, default -40.0, -120.0
        Its parameters, on the 0-255 scale.
    p_contrast_v2 : float, default 0.15
        Probability of :func:`scale_intensity`.
    alpha, beta : float, default 1.5, 0.7
        Its parameters (``beta`` in 8-bit grey levels).
    p_noise : float, default 0.15
        Probability of :func:`add_noise`.
    noise_epsilon : float, default 0.1
        Noise scale (standard deviation, or half-width for uniform noise).
    noise_kind : {"gaussian", "uniform"}, default "gaussian"
    hflip : bool, default False
        Allow left-right flips (of image and mask together).
    p_hflip : float, default 0.5
        Flip probability when ``hflip`` is True.
    """

    p_geometric: float = 0.5
    rotation_deg: float = 10.0
    shift_fraction: float = 0.08
    scale_range: tuple[float, float] = (0.9, 1.1)
    fill_mode: str = "constant"
    p_contrast_v1: float = 0.15
    brightness: float = -40.0
    contrast: float = -120.0
    p_contrast_v2: float = 0.15
    alpha: float = 1.5
    beta: float = 0.7
    p_noise: float = 0.15
    noise_epsilon: float = 0.1
    noise_kind: str = "gaussian"
    hflip: bool = False
    p_hflip: float = 0.5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name.startswith("p_") and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"AugmentationConfig.{name} must be in [0, 1], got {value!r}")
        if self.rotation_deg < 0 or not 0 <= self.shift_fraction < 1:
            raise ValueError(
                "AugmentationConfig: rotation_deg must be >= 0 and shift_fraction in [0, 1), "
                f"got {self.rotation_deg!r}, {self.shift_fraction!r}"
            )
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(
                f"AugmentationConfig.scale_range must satisfy 0 < low <= high, got "
                f"{self.scale_range!r}"
            )
        if self.fill_mode not in _FILL_MODES:
            raise ValueError(
                f"AugmentationConfig.fill_mode must be one of {_FILL_MODES}, got {self.fill_mode!r}"
            )
        if self.noise_kind not in _NOISE_KINDS:
            raise ValueError(
                f"AugmentationConfig.noise_kind must be one of {_NOISE_KINDS}, got "
                f"{self.noise_kind!r}"
            )
        if self.noise_epsilon < 0:
            raise ValueError(
                f"AugmentationConfig.noise_epsilon must be >= 0, got {self.noise_epsilon}"
            )
        _check_brightness_contrast(self.brightness, self.contrast)


# ------------------------------------------------------------------ intensity


def _check_brightness_contrast(brightness: float, contrast: float) -> None:
    if not -255 <= brightness <= 255:
        raise ValueError(f"brightness must be in [-255, 255] (0-255 scale), got {brightness}")
    if not -127 <= contrast <= 127:
        raise ValueError(f"contrast must be in [-127, 127] (0-255 scale), got {contrast}")


def brightness_contrast(
    image: np.ndarray, brightness: float = -40.0, contrast: float = -120.0
) -> np.ndarray:
    """Contrast v1: OpenCV-tutorial brightness then contrast adjustment.

    Parameters
    ----------
    image : ndarray, float, values in [0, 1], any shape
    brightness : float, default -40.0
        On the 0-255 scale, in ``[-255, 255]``.
    contrast : float, default -120.0
        On the 0-255 scale, in ``[-127, 127]``.

    Returns
    -------
    ndarray, float32, same shape, values in [0, 1]
        See the module docstring for the formula.
    """
    _check_brightness_contrast(brightness, contrast)
    x = np.asarray(image, dtype=np.float32) * 255.0
    if brightness != 0:
        shadow, highlight = (brightness, 255.0) if brightness > 0 else (0.0, 255.0 + brightness)
        x = np.clip(x * ((highlight - shadow) / 255.0) + shadow, 0.0, 255.0)
    if contrast != 0:
        f = 131.0 * (contrast + 127.0) / (127.0 * (131.0 - contrast))
        x = np.clip(x * f + 127.0 * (1.0 - f), 0.0, 255.0)
    return (x / 255.0).astype(np.float32)


def scale_intensity(image: np.ndarray, alpha: float = 1.5, beta: float = 0.7) -> np.ndarray:
    """Contrast v2: ``clip(alpha * image + beta / 255, 0, 1)``.

    Parameters
    ----------
    image : ndarray, float, values in [0, 1], any shape
    alpha : float, default 1.5
        Gain.
    beta : float, default 0.7
        Offset in 8-bit grey levels (as ``cv2.convertScaleAbs``).

    Returns
    -------
    ndarray, float32, same shape, values in [0, 1]
    """
    x = np.asarray(image, dtype=np.float32)
    return np.clip(alpha * x + beta / 255.0, 0.0, 1.0).astype(np.float32)


def add_noise(
    image: np.ndarray,
    epsilon: float = 0.1,
    rng: np.random.Generator | None = None,
    kind: str = "gaussian",
) -> np.ndarray:
    """Additive noise: ``clip(image + epsilon * z, 0, 1)``.

    Parameters
    ----------
    image : ndarray, float, values in [0, 1], any shape
    epsilon : float, default 0.1
        Standard deviation (gaussian) or half-width (uniform) of the noise.
    rng : numpy.random.Generator, optional
        Source of randomness (a fresh unseeded one if omitted).
    kind : {"gaussian", "uniform"}, default "gaussian"

    Returns
    -------
    ndarray, float32, same shape, values in [0, 1]
    """
    if kind not in _NOISE_KINDS:
        raise ValueError(f"kind must be one of {_NOISE_KINDS}, got {kind!r}")
    rng = np.random.default_rng() if rng is None else rng
    x = np.asarray(image, dtype=np.float32)
    if kind == "gaussian":
        z = rng.standard_normal(x.shape, dtype=np.float32)
    else:
        z = rng.uniform(-1.0, 1.0, x.shape).astype(np.float32)
    return np.clip(x + np.float32(epsilon) * z, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------ geometry


def affine_params(
    shape: Sequence[int],
    angle_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset for :func:`scipy.ndimage.affine_transform`.

    The forward map (input pixel to output pixel) rotates by ``angle_deg``
    (counter-clockwise as displayed, rows pointing down), zooms by ``scale``
    about the image centre and then shifts by ``shift`` pixels (rows, cols).
    ``affine_transform`` needs the inverse (output to input), returned here.

    Parameters
    ----------
    shape : (H, W, ...)
        Image shape; only the first two entries are used.
    angle_deg : float
    shift : (float, float)
        Shift in pixels along rows and columns.
    scale : float
        Zoom factor (> 1 enlarges).

    Returns
    -------
    matrix : ndarray, float64, shape (2, 2)
    offset : ndarray, float64, shape (2,)
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # forward rotation in (row, col) with rows down: counter-clockwise on screen
    forward = scale * np.array([[cos, -sin], [sin, cos]])
    inverse = np.linalg.inv(forward)
    centre = (np.asarray(shape[:2], dtype=float) - 1.0) / 2.0
    offset = centre - inverse @ (centre + np.asarray(shift, dtype=float))
    return inverse, offset


def _transform_2d(
    plane: np.ndarray, matrix: np.ndarray, offset: np.ndarray, order: int, mode: str
) -> np.ndarray:
    return ndimage.affine_transform(
        plane, matrix, offset=offset, order=order, mode=mode, cval=0.0, prefilter=False
    )


def affine_pair(
    image: np.ndarray,
    mask: np.ndarray | None,
    angle_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    fill_mode: str = "constant",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the same rotation / shift / zoom to one image and its mask.

    Parameters
    ----------
    image : ndarray, float, shape (H, W) or (H, W, C)
    mask : ndarray, shape (H, W) or (H, W, 1), bool or numeric, or None
    angle_deg, shift, scale
        See :func:`affine_params` (``shift`` in pixels).
    fill_mode : {"constant", "nearest"}, default "constant"

    Returns
    -------
    image : ndarray, float32, same shape, values clipped to [0, 1]
        Linear interpolation.
    mask : ndarray, same shape and dtype as ``mask`` (or None)
        Nearest-neighbour interpolation (stays binary).
    """
    if fill_mode not in _FILL_MODES:
        raise ValueError(f"fill_mode must be one of {_FILL_MODES}, got {fill_mode!r}")
    img = np.asarray(image, dtype=np.float32)
    matrix, offset = affine_params(img.shape, angle_deg, shift, scale)
    if img.ndim == 2:
        out = _transform_2d(img, matrix, offset, 1, fill_mode)
    else:
        out = np.stack(
            [
                _transform_2d(img[..., c], matrix, offset, 1, fill_mode)
                for c in range(img.shape[-1])
            ],
            axis=-1,
        )
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if mask is None:
        return out, None
    m = np.asarray(mask)
    plane = m[..., 0] if m.ndim == 3 else m
    source = plane.astype(np.uint8) if plane.dtype == bool else plane
    moved = _transform_2d(source, matrix, offset, 0, fill_mode).astype(m.dtype)
    return out, moved.reshape(m.shape)
