"""On-the-fly augmentation of training batches (images and masks together).

Images are ``float32`` in ``[0, 1]``; batches are ``(N, H, W, C)`` images with
``(N, H, W, 1)`` (or ``(N, H, W)``) masks. Augmentation is applied to TRAINING
batches only, after the split (see :mod:`cxrlib.data.splits`): augmenting before the
split puts copies of one radiograph on both sides and inflates validation
scores. :class:`SegmentationSequence` refuses training arrays whose ids meet
the validation ids.

The transforms themselves and :class:`AugmentationConfig` are in
:mod:`cxrlib.seg.transforms` (re-exported here); this module draws them at random
(:class:`Augmenter`), shows each alone (:func:`augment_examples`), makes augmented copies
(:func:`make_augmented_copies`, for the leakage experiment) and batches training data
(:class:`SegmentationSequence`).

Keras is imported only when :class:`SegmentationSequence` is first used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cxrlib.seg.transforms import (
    AugmentationConfig,
    add_noise,
    affine_pair,
    affine_params,
    brightness_contrast,
    scale_intensity,
)

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
