"""On-the-fly augmentation of training batches (images and masks together).

Images are ``float32`` in ``[0, 1]``; batches are ``(N, H, W, C)`` images with
``(N, H, W, 1)`` (or ``(N, H, W)``) masks. Augmentation is applied to TRAINING
batches only, after the split (see :mod:`cxrlib.data.splits`): augmenting before the
split puts copies of one radiograph on both sides and inflates validation
scores. :class:`SegmentationSequence` refuses training arrays whose ids meet
the validation ids.

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

Keras is imported only when :class:`SegmentationSequence` is first used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "AugmentationConfig",
    "Augmenter",
    "brightness_contrast",
    "scale_intensity",
    "add_noise",
    "affine_params",
    "affine_pair",
    "augment_examples",
    "make_augmented_copies",
    "SegmentationSequence",  # noqa: F822 (built on first access by __getattr__, imports keras)
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


# ------------------------------------------------------------------ batches


def _check_batch(images: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    imgs = np.asarray(images)
    msks = np.asarray(masks)
    if imgs.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {imgs.shape}")
    if msks.ndim == 3:
        msks = msks[..., None]
    if msks.ndim != 4 or msks.shape[:3] != imgs.shape[:3] or msks.shape[-1] != 1:
        raise ValueError(
            f"masks must have shape (N, H, W, 1) or (N, H, W) matching images {imgs.shape}, "
            f"got {np.asarray(masks).shape}"
        )
    return imgs, msks


class Augmenter:
    """Random training augmentation of image / mask batches.

    Parameters
    ----------
    config : AugmentationConfig, optional
        Parameters and probabilities (defaults: see :class:`AugmentationConfig`).
    seed : int, default 0
        Seed of the generator used when ``__call__`` gets no ``rng``.

    Examples
    --------
    >>> aug = Augmenter(AugmentationConfig(p_noise=0.5), seed=0)
    >>> x, y = aug(images, masks, np.random.default_rng(1))  # doctest: +SKIP
    """

    def __init__(self, config: AugmentationConfig | None = None, seed: int = 0) -> None:
        self.config = AugmentationConfig() if config is None else config
        if not isinstance(self.config, AugmentationConfig):
            raise ValueError(
                f"config must be an AugmentationConfig, got {type(self.config).__name__}"
            )
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"Augmenter({self.config!r}, seed={self.seed!r})"

    def augment_one(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one ``(H, W, C)`` image and its ``(H, W, 1)`` mask.

        The same number of random draws is made whatever is applied, so each
        image's randomness does not depend on the previous image's choices.
        """
        cfg = self.config
        u = rng.random(5)
        angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
        shift_frac = rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, size=2)
        scale = rng.uniform(*cfg.scale_range)
        noise_rng = np.random.default_rng(rng.integers(0, 2**63))
        img = np.asarray(image, dtype=np.float32)
        msk = mask
        if cfg.hflip and u[4] < cfg.p_hflip:
            img, msk = img[:, ::-1], msk[:, ::-1]
        if u[0] < cfg.p_geometric:
            shift = (shift_frac[0] * img.shape[0], shift_frac[1] * img.shape[1])
            img, msk = affine_pair(img, msk, angle, shift, scale, cfg.fill_mode)
        if u[1] < cfg.p_contrast_v1:
            img = brightness_contrast(img, cfg.brightness, cfg.contrast)
        if u[2] < cfg.p_contrast_v2:
            img = scale_intensity(img, cfg.alpha, cfg.beta)
        if u[3] < cfg.p_noise:
            img = add_noise(img, cfg.noise_epsilon, noise_rng, cfg.noise_kind)
        return np.clip(img, 0.0, 1.0).astype(np.float32), np.ascontiguousarray(msk)

    def __call__(
        self, images: Any, masks: Any, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment a batch.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C), float in [0, 1]
        masks : ndarray, shape (N, H, W, 1) or (N, H, W), bool or numeric
        rng : numpy.random.Generator, optional
            Source of randomness; defaults to the augmenter's own generator
            (seeded by ``seed``, advancing with each call).

        Returns
        -------
        images : ndarray, float32, shape (N, H, W, C), values in [0, 1]
        masks : ndarray, same shape and dtype as the input masks
            New arrays; the inputs are not modified.
        """
        imgs, msks = _check_batch(images, masks)
        rng = self._rng if rng is None else rng
        out_images = np.empty(imgs.shape, dtype=np.float32)
        out_masks = np.empty(msks.shape, dtype=msks.dtype)
        for i in range(imgs.shape[0]):
            out_images[i], out_masks[i] = self.augment_one(imgs[i], msks[i], rng)
        return out_images, out_masks.reshape(np.asarray(masks).shape)


def augment_examples(
    image: np.ndarray,
    mask: np.ndarray,
    config: AugmentationConfig | None = None,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each transform applied alone, for a side-by-side figure.

    Geometric examples use the extreme settings of ``config`` (largest
    rotation, largest shift along both axes, largest zoom) so they are visible.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    mask : ndarray, shape (H, W) or (H, W, 1)
    config : AugmentationConfig, optional
    seed : int, default 0
        Seed of the noise.

    Returns
    -------
    dict of str -> (image, mask)
        Keys ``"original"``, ``"contrast_v1"``, ``"contrast_v2"``, ``"noise"``,
        ``"rotation"``, ``"shift"``, ``"scale"`` (and ``"hflip"`` when
        ``config.hflip``); images ``float32`` and masks in the input shapes.
    """
    cfg = AugmentationConfig() if config is None else config
    img = np.asarray(image, dtype=np.float32)
    msk = np.asarray(mask)
    if img.ndim not in (2, 3) or msk.shape[:2] != img.shape[:2]:
        raise ValueError(
            f"image must be (H, W) or (H, W, C) and mask (H, W) or (H, W, 1) of the same size, "
            f"got {img.shape} and {msk.shape}"
        )
    height, width = img.shape[:2]
    shift = (cfg.shift_fraction * height, cfg.shift_fraction * width)
    examples = {
        "original": (img.copy(), msk.copy()),
        "contrast_v1": (brightness_contrast(img, cfg.brightness, cfg.contrast), msk.copy()),
        "contrast_v2": (scale_intensity(img, cfg.alpha, cfg.beta), msk.copy()),
        "noise": (
            add_noise(img, cfg.noise_epsilon, np.random.default_rng(seed), cfg.noise_kind),
            msk.copy(),
        ),
        "rotation": affine_pair(img, msk, cfg.rotation_deg, fill_mode=cfg.fill_mode),
        "shift": affine_pair(img, msk, shift=shift, fill_mode=cfg.fill_mode),
        "scale": affine_pair(img, msk, scale=cfg.scale_range[1], fill_mode=cfg.fill_mode),
    }
    if cfg.hflip:
        examples["hflip"] = (img[:, ::-1].copy(), msk[:, ::-1].copy())
    return examples


def make_augmented_copies(
    images: Any,
    masks: Any,
    n_copies: int,
    rng: np.random.Generator,
    config: AugmentationConfig | None = None,
    *,
    include_originals: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Enlarge a data set with augmented copies (for the leakage experiment).

    This is what the original notebooks did BEFORE splitting, which leaks
    copies of one radiograph into validation. Use it only to demonstrate the
    leak; ``source_index`` maps each output back to its radiograph, so
    ``ids[source_index]`` lets :mod:`cxrlib.data.splits` and
    :class:`SegmentationSequence` detect it.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), float in [0, 1]
    masks : ndarray, shape (N, H, W, 1) or (N, H, W)
    n_copies : int
        Augmented copies per image (>= 0).
    rng : numpy.random.Generator
    config : AugmentationConfig, optional
        Augmentation used for the copies (default :class:`AugmentationConfig`).
    include_originals : bool, default True
        Put the unchanged images first.

    Returns
    -------
    images : ndarray, float32, shape (M, H, W, C)
    masks : ndarray, shape (M, ...) like the input masks
    source_index : ndarray, int64, shape (M,)
        Row of the input each output comes from; ``M = N * (n_copies +
        include_originals)``.
    """
    if not isinstance(n_copies, int | np.integer) or n_copies < 0:
        raise ValueError(f"n_copies must be a non-negative integer, got {n_copies!r}")
    imgs, _ = _check_batch(images, masks)
    msks = np.asarray(masks)
    augmenter = Augmenter(config)
    out_images, out_masks, sources = [], [], []
    n = imgs.shape[0]
    if include_originals:
        out_images.append(imgs.astype(np.float32))
        out_masks.append(msks.copy())
        sources.append(np.arange(n))
    for _ in range(n_copies):
        x, y = augmenter(imgs, msks, rng)
        out_images.append(x)
        out_masks.append(y)
        sources.append(np.arange(n))
    if not out_images:
        return (
            np.zeros((0, *imgs.shape[1:]), np.float32),
            np.zeros((0, *msks.shape[1:]), msks.dtype),
            np.zeros(0, np.int64),
        )
    return (
        np.concatenate(out_images),
        np.concatenate(out_masks),
        np.concatenate(sources).astype(np.int64),
    )


# ------------------------------------------------------------------ keras dataset


def _leaked_ids(ids: Iterable[Any], validation_ids: Iterable[Any]) -> list[Any]:
    return sorted(set(ids) & set(validation_ids), key=str)


def _build_sequence_class() -> type:
    """Define :class:`SegmentationSequence` (imports keras)."""
    import keras

    from cxrlib.data.splits import LeakageError

    class SegmentationSequence(keras.utils.PyDataset):
        """Batches ``(images, masks)`` from numpy arrays for ``model.fit``.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) or (N, H, W), float in [0, 1]
        masks : ndarray, shape (N, H, W, 1) or (N, H, W), bool or numeric
        batch_size : int, default 16
        augment : bool, default False
            Apply an :class:`Augmenter` (training data only).
        config : AugmentationConfig, optional
            Augmentation parameters when ``augment`` is True.
        shuffle : bool, optional
            Reshuffle the order every epoch; defaults to ``augment``.
        seed : int, default 0
            Seeds the shuffling and augmentation: batch ``i`` of epoch ``e`` is
            the same in every run, in any worker order.
        ids : sequence, length N, optional
            Image ids of the rows (required with ``validation_ids``).
        validation_ids : iterable, optional
            Ids of the validation (and test) images. Building a sequence
            whose ``ids`` meet them raises :class:`cxrlib.data.splits.LeakageError`.
        **kwargs
            ``workers``, ``use_multiprocessing``, ``max_queue_size`` for
            :class:`keras.utils.PyDataset`.

        Yields
        ------
        (images, masks) : float32 ``(B, H, W, C)`` and float32 ``(B, H, W, 1)``
        """

        def __init__(
            self,
            images: Any,
            masks: Any,
            batch_size: int = 16,
            *,
            augment: bool = False,
            config: AugmentationConfig | None = None,
            shuffle: bool | None = None,
            seed: int = 0,
            ids: Sequence[Any] | None = None,
            validation_ids: Iterable[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            imgs = np.asarray(images)
            if imgs.ndim == 3:
                imgs = imgs[..., None]
            self.images, self.masks = _check_batch(imgs, masks)
            n = self.images.shape[0]
            if n == 0:
                raise ValueError("SegmentationSequence needs at least one image, got 0")
            if not isinstance(batch_size, int | np.integer) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            self.ids = None if ids is None else list(ids)
            if self.ids is not None and len(self.ids) != n:
                raise ValueError(f"ids has {len(self.ids)} entries but there are {n} images")
            if validation_ids is not None:
                if self.ids is None:
                    raise ValueError(
                        "validation_ids given without ids: pass the ids of the training rows "
                        "so that leakage can be checked"
                    )
                leaked = _leaked_ids(self.ids, validation_ids)
                if leaked:
                    shown = ", ".join(repr(i) for i in leaked[:20])
                    more = f", ... ({len(leaked) - 20} more)" if len(leaked) > 20 else ""
                    raise LeakageError(
                        f"{len(leaked)} training id(s) are also validation ids: {shown}{more}. "
                        "Split first, then augment the training rows only.",
                        leaked,
                    )
            self.batch_size = int(batch_size)
            self.augment = bool(augment)
            self.shuffle = self.augment if shuffle is None else bool(shuffle)
            self.seed = int(seed)
            self.augmenter = Augmenter(config, seed=seed) if self.augment else None
            self.epoch = 0
            self._order = self._make_order()

        def _make_order(self) -> np.ndarray:
            n = self.images.shape[0]
            if not self.shuffle:
                return np.arange(n)
            return np.random.default_rng([self.seed, self.epoch]).permutation(n)

        def __len__(self) -> int:
            return math.ceil(self.images.shape[0] / self.batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if not 0 <= index < len(self):
                raise IndexError(f"batch index {index} out of range (0..{len(self) - 1})")
            rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            x = self.images[rows].astype(np.float32)
            y = self.masks[rows]
            if self.augmenter is not None:
                rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
                x, y = self.augmenter(x, y, rng)
            return x, y.astype(np.float32)

        def on_epoch_end(self) -> None:
            """Advance the epoch counter and reshuffle.

            ``epoch`` counts these calls; Keras also makes one when it resets
            its iterator before the first epoch.
            """
            self.epoch += 1
            self._order = self._make_order()

    SegmentationSequence.__module__ = __name__
    SegmentationSequence.__qualname__ = "SegmentationSequence"
    return SegmentationSequence


def __getattr__(name: str) -> Any:
    """Build :class:`SegmentationSequence` on first access (keeps keras out of import)."""
    if name == "SegmentationSequence":
        cls = _build_sequence_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
