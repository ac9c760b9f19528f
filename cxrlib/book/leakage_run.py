"""The leakage experiment: the same U-Net trained under both designs, scored on validation and test.

:func:`leakage_experiment` trains one model per design of :mod:`cxrlib.book.leakage` on the
same augmented pool, with the same initial weights and budget, and compares each model's
validation Dice with its Dice on held-out test radiographs. Intervals come from
:func:`cxrlib.stats.cluster_bootstrap_ci`, which resamples whole radiographs (the copies of
one radiograph are not independent); the interval of validation minus test combines the two
(:func:`difference_interval`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.book.leakage import DESIGNS, make_pool, split_designs
from cxrlib.data.splits import assert_disjoint
from cxrlib.seg.augment import AugmentationConfig
from cxrlib.stats import cluster_bootstrap_ci

__all__ = ["SHORT_NAMES", "difference_interval", "leakage_experiment"]

#: Short names of the designs, for glue keys (``leaky_val_dice``, ``honest_gap``, ...).
SHORT_NAMES = {"augment-then-split": "leaky", "split-then-augment": "honest"}


def difference_interval(
    first: tuple[float, float, float], second: tuple[float, float, float]
) -> tuple[float, float]:
    """Interval of ``first - second`` for two independent estimates with their intervals.

    The method of variance estimates recovery (MOVER, Zou and Donner 2008): the distances
    from each estimate to its bounds are combined in quadrature, on the side where each
    moves the difference.

    Parameters
    ----------
    first, second : (estimate, low, high)
        E.g. the output of :func:`cxrlib.stats.cluster_bootstrap_ci`.

    Returns
    -------
    (low, high) : tuple of float
        ``nan`` when a bound is ``nan``.
    """
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    low = (a - b) - np.hypot(a - a_low, b_high - b)
    high = (a - b) + np.hypot(a_high - a, b - b_low)
    return float(low), float(high)


def _dice_per_image(model: Any, images: np.ndarray, masks: np.ndarray, batch_size: int):
    from cxrlib.seg.metrics import dice

    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.array([dice(p > 0.5, m) for p, m in zip(probs, masks, strict=True)])


def _check_arrays(images: Any, masks: Any, ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {imgs.shape}")
    msks = np.asarray(masks)
    if msks.ndim == 3:
        msks = msks[..., None]
    if msks.shape != (*imgs.shape[:3], 1):
        raise ValueError(
            f"masks must have shape (N, H, W) or (N, H, W, 1) matching images {imgs.shape}, "
            f"got {np.asarray(masks).shape}"
        )
    if len(ids) != imgs.shape[0]:
        raise ValueError(f"ids has {len(ids)} entries but there are {imgs.shape[0]} images")
    return imgs, msks.astype(np.float32)


def _train(
    pool_images: np.ndarray,
    pool_masks: np.ndarray,
    train_ids: list[Any],
    guarded_ids: list[Any],
    *,
    filters: Sequence[int],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    loss: str,
    seed: int,
) -> Any:
    """Train a fresh U-Net (same initial weights for the same seed) on the given rows."""
    import keras

    from cxrlib.seg.augment import SegmentationSequence
    from cxrlib.seg.losses import get_loss
    from cxrlib.seg.models import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(input_shape=pool_images.shape[1:], filters=tuple(filters))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=get_loss(loss))
    batches = SegmentationSequence(
        pool_images,
        pool_masks,
        batch_size,
        shuffle=True,
        seed=seed,
        ids=train_ids,
        validation_ids=guarded_ids,
    )
    model.fit(batches, epochs=epochs, verbose=0)
    return model


def leakage_experiment(
    images: Any,
    masks: Any,
    ids: Sequence[Any],
    *,
    n_copies: int = 4,
    epochs: int = 100,
    filters: Sequence[int] = (8, 16, 32, 64),
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    loss: str = "bce_dice",
    val_fraction: float = 0.25,
    test_fraction: float = 0.5,
    config: AugmentationConfig | None = None,
    sites: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Train the same U-Net under both designs and compare validation with test Dice.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C), float in [0, 1]
        Radiographs, all with a lung mask; H and W divisible by
        ``2 ** (len(filters) - 1)``.
    masks : ndarray, shape (N, H, W) or (N, H, W, 1), bool or 0/1
    ids : sequence, length N
        Unique radiograph ids.
    n_copies : int, default 4
        Augmented copies per development radiograph.
    epochs : int, default 100
        Epochs of training, the same for both designs. The leak shows when the
        model has had time to memorise its training radiographs.
    filters : sequence of int, default (8, 16, 32, 64)
        U-Net filters per level (see :func:`cxrlib.seg.models.build_unet`).
    batch_size : int, default 8
    learning_rate : float, default 3e-3
        Adam learning rate.
    loss : str, default "bce_dice"
        A name accepted by :func:`cxrlib.seg.losses.get_loss`.
    val_fraction, test_fraction : float, default 0.25, 0.5
        Fractions of the radiographs for validation and test (a large test
        set costs no training time and narrows its interval).
    config : AugmentationConfig, optional
        Augmentation of the copies (default :data:`COPY_CONFIG`).
    sites, labels : sequence, length N, optional
        Site and label of each radiograph, to stratify the id split.
    seed : int, default 0
        Seeds the splits, the copies, the initial weights and the batch order.
        Calls :func:`keras.utils.set_random_seed`, which also seeds Python's and
        NumPy's global generators.
    progress : bool, default False
        Show a tqdm bar over the two trainings.

    Returns
    -------
    pandas.DataFrame
        One row per design (index: the names in :data:`DESIGNS`) with columns
        ``train_images``, ``val_images``, ``val_radiographs``,
        ``shared_radiographs`` (validation radiographs with a copy in
        training), ``test_images``, ``train_dice``, ``val_dice`` and
        ``test_dice`` (mean Dice of the thresholded prediction over the
        images of each set), ``val_low``,
        ``val_high``, ``test_low``, ``test_high`` (95 % bootstrap intervals,
        resampling radiographs), ``gap`` (``val_dice - test_dice``, the
        optimism of the validation score) with its 95 % interval ``gap_low``,
        ``gap_high`` (:func:`difference_interval` of the two intervals), and
        ``train_seconds``.

    Raises
    ------
    ValueError
        For inconsistent shapes or bad parameters.
    """
    from tqdm import tqdm

    imgs, msks = _check_arrays(images, masks, ids)
    if not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    ids = list(ids)
    splits = split_designs(
        ids,
        n_copies=n_copies,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        sites=sites,
        labels=labels,
    )
    pool_images, pool_masks = make_pool(imgs, msks, splits, config, seed)
    pool_ids = [ids[i] for i in splits.pool_source]
    test_ids = [ids[i] for i in splits.test]
    test_images, test_masks = imgs[splits.test], msks[splits.test]
    assert_disjoint(pool_ids, test_ids, names=("pool", "test"))

    rows = {}
    for design in tqdm(DESIGNS, desc="leakage experiment", disable=not progress):
        chosen = splits.designs[design]
        val_ids = [pool_ids[r] for r in chosen.val]
        # The guard of SegmentationSequence checks the training ids against the
        # test ids in both designs, and against the validation ids where the
        # design claims to have split first (the leaky design would be refused).
        guarded = test_ids + (val_ids if design == "split-then-augment" else [])
        start = time.perf_counter()
        model = _train(
            pool_images[chosen.train],
            pool_masks[chosen.train],
            [pool_ids[r] for r in chosen.train],
            guarded,
            filters=filters,
            epochs=int(epochs),
            batch_size=batch_size,
            learning_rate=learning_rate,
            loss=loss,
            seed=seed,
        )
        seconds = time.perf_counter() - start
        train_scores = _dice_per_image(
            model, pool_images[chosen.train], pool_masks[chosen.train], batch_size
        )
        val_scores = _dice_per_image(
            model, pool_images[chosen.val], pool_masks[chosen.val], batch_size
        )
        test_scores = _dice_per_image(model, test_images, test_masks, batch_size)
        val_mean, val_low, val_high = cluster_bootstrap_ci(
            val_scores, splits.pool_source[chosen.val], seed=seed
        )
        test_mean, test_low, test_high = cluster_bootstrap_ci(
            test_scores, splits.test, seed=seed + 1
        )
        gap_low, gap_high = difference_interval(
            (val_mean, val_low, val_high), (test_mean, test_low, test_high)
        )
        rows[design] = {
            "train_images": len(chosen.train),
            "val_images": len(chosen.val),
            "val_radiographs": len(np.unique(splits.pool_source[chosen.val])),
            "shared_radiographs": len(splits.shared_sources(design)),
            "test_images": len(splits.test),
            "train_dice": float(train_scores.mean()),
            "val_dice": val_mean,
            "test_dice": test_mean,
            "val_low": val_low,
            "val_high": val_high,
            "test_low": test_low,
            "test_high": test_high,
            "gap": val_mean - test_mean,
            "gap_low": gap_low,
            "gap_high": gap_high,
            "train_seconds": seconds,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "design"
    return table
