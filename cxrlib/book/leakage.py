"""The leakage experiment: augmenting before the split inflates validation scores.

The original notebooks enlarged the data with augmented copies first and split
the enlarged set at random afterwards, so copies of one radiograph ended up in
training *and* validation. :func:`cxrlib.book.leakage_run.leakage_experiment`
measures what that does to the validation score by training the same small U-Net
on the same budget under two designs (:data:`DESIGNS`):

* ``"augment-then-split"`` (the leak): the development radiographs and their
  augmented copies are pooled and the pool is split at random, so most
  validation images have a sibling (the original or another copy of the same
  radiograph) in training;
* ``"split-then-augment"`` (the fix): the radiographs are split by id first;
  only training radiographs get augmented copies, and validation holds the
  original validation radiographs.

Both designs train on exactly the same number of images, drawn from the same
augmented pool (same pixels), with the same initial weights, batches per epoch
and epochs. Both are also scored on a test set of radiographs that neither ever
saw, split off by id before anything else: the honest estimate that each
design's validation score should agree with.

This module holds the split logic, :func:`split_designs` (no training; tested on its own),
and the augmented pool both designs draw from; the training and scoring are in
:mod:`cxrlib.book.leakage_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.data.splits import split_table
from cxrlib.seg.augment import AugmentationConfig, make_augmented_copies

__all__ = [
    "DESIGNS",
    "COPY_CONFIG",
    "DesignRows",
    "LeakageSplits",
    "split_designs",
    "make_pool",
    "copies_table",
    "design_summary",
]

#: The two experimental designs, leaky first.
DESIGNS = ("augment-then-split", "split-then-augment")

#: How the experiment's copies are made: the intensity augmentations of the
#: original notebooks that keep the radiograph readable (contrast v2 and noise,
#: each with probability 0.5, at their original settings). Like the original
#: copies they keep the geometry, so a copy has exactly its radiograph's mask.
#: Contrast v1 is left out (with its original settings it squeezes the grey
#: scale into a narrow band) and so are geometric transforms: both would make
#: validation copies harder than the untouched test radiographs, which would
#: blur the comparison of validation and test scores.
COPY_CONFIG = AugmentationConfig(p_geometric=0.0, p_contrast_v1=0.0, p_contrast_v2=0.5, p_noise=0.5)


@dataclass(frozen=True)
class DesignRows:
    """Rows of the augmented pool used by one design.

    Attributes
    ----------
    train, val : ndarray, int64, shape (n,)
        Row positions into the pool (see :class:`LeakageSplits`).
    """

    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class LeakageSplits:
    """Where every radiograph and augmented copy goes in the leakage experiment.

    The *pool* is what :func:`cxrlib.seg.augment.make_augmented_copies` returns for
    the development radiographs ``images[dev]`` with ``include_originals=True``:
    row ``r`` is copy ``r // len(dev)`` (0 = the unchanged original) of
    radiograph ``dev[r % len(dev)]``.

    Attributes
    ----------
    dev : ndarray, int64, shape (D,)
        Positions (into the input ``ids``) of the development radiographs,
        shared by both designs for training and validation.
    test : ndarray, int64, shape (T,)
        Positions of the held-out test radiographs (never in the pool).
    n_copies : int
        Augmented copies per development radiograph.
    pool_source : ndarray, int64, shape (D * (n_copies + 1),)
        Position (into ``ids``) of the radiograph each pool row comes from.
    pool_copy : ndarray, int64, shape (D * (n_copies + 1),)
        Copy number of each pool row (0 = original).
    designs : dict of str -> DesignRows
        Training and validation pool rows, keyed by the names in :data:`DESIGNS`.
    """

    dev: np.ndarray
    test: np.ndarray
    n_copies: int
    pool_source: np.ndarray
    pool_copy: np.ndarray
    designs: dict[str, DesignRows]

    def shared_sources(self, design: str) -> np.ndarray:
        """Positions of the radiographs with rows in both training and validation.

        Parameters
        ----------
        design : str
            One of :data:`DESIGNS`.

        Returns
        -------
        ndarray, int64, sorted
        """
        rows = self.designs[design]
        return np.intersect1d(self.pool_source[rows.train], self.pool_source[rows.val])


def _check_fraction(name: str, value: float) -> float:
    if not 0 < float(value) < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def split_designs(
    ids: Sequence[Any],
    *,
    n_copies: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.25,
    seed: int = 0,
    sites: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
) -> LeakageSplits:
    """Build the test set and the two train / validation designs of the experiment.

    First the radiographs are split by id with :func:`cxrlib.data.splits.split_table`
    (stratified by ``sites`` and ``labels`` when given) into train, validation
    and test. Then:

    * ``"split-then-augment"``: training = every copy (original and augmented)
      of the training radiographs; validation = the originals of the validation
      radiographs.
    * ``"augment-then-split"``: the pool of every copy of the training and
      validation radiographs is shuffled and cut at random, with as many
      validation rows as there are copies of the validation radiographs, so
      that both designs train on the same number of images.

    Parameters
    ----------
    ids : sequence of hashable, length N
        Radiograph ids, unique.
    n_copies : int
        Augmented copies per radiograph (>= 1).
    val_fraction, test_fraction : float, default 0.2, 0.25
        Fractions of the radiographs for validation and test.
    seed : int, default 0
        Seeds both splits.
    sites : sequence, length N, optional
        Acquisition site of each radiograph; the id split is stratified by it.
    labels : sequence, length N, optional
        Label of each radiograph (e.g. 0 normal, 1 TB); the id split is
        stratified by it too, as :func:`cxrlib.data.splits.split_table` does by
        default.

    Returns
    -------
    LeakageSplits

    Raises
    ------
    ValueError
        For bad parameters, or too few radiographs to put at least one in each
        split.
    cxrlib.data.splits.LeakageError
        If ``ids`` has duplicates.
    """
    if not isinstance(n_copies, int | np.integer) or n_copies < 1:
        raise ValueError(f"n_copies must be a positive integer, got {n_copies!r}")
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    ids = list(ids)
    table = pd.DataFrame({"id": ids})
    stratify = []
    for column, values in (("site", sites), ("label", labels)):
        if values is None:
            continue
        if len(values) != len(ids):
            raise ValueError(f"{column}s has {len(values)} entries but there are {len(ids)} ids")
        table[column] = list(values)
        stratify.append(column)
    split = split_table(
        table,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=stratify or None,
    )["split"].to_numpy()
    counts = {name: int((split == name).sum()) for name in ("train", "val", "test")}
    if min(counts.values()) < 1:
        raise ValueError(
            f"{len(ids)} radiographs give {counts} with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}: every split needs at least one radiograph"
        )
    dev = np.flatnonzero(split != "test").astype(np.int64)
    test = np.flatnonzero(split == "test").astype(np.int64)
    n_dev = len(dev)
    copies = n_copies + 1
    pool_source = np.tile(dev, copies)
    pool_copy = np.repeat(np.arange(copies, dtype=np.int64), n_dev)
    is_val_source = split[pool_source] == "val"

    honest = DesignRows(
        train=np.flatnonzero(~is_val_source).astype(np.int64),
        val=np.flatnonzero(is_val_source & (pool_copy == 0)).astype(np.int64),
    )
    n_val_rows = int(is_val_source.sum())
    order = np.random.default_rng([seed, 1]).permutation(len(pool_source)).astype(np.int64)
    leaky = DesignRows(train=np.sort(order[n_val_rows:]), val=np.sort(order[:n_val_rows]))
    return LeakageSplits(
        dev=dev,
        test=test,
        n_copies=int(n_copies),
        pool_source=pool_source,
        pool_copy=pool_copy,
        designs={DESIGNS[0]: leaky, DESIGNS[1]: honest},
    )


def make_pool(
    images: Any,
    masks: Any,
    splits: LeakageSplits,
    config: AugmentationConfig | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The augmented pool of the development radiographs (the layout of ``splits``).

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), float in [0, 1]
        All radiographs (the positions ``splits.dev`` are used).
    masks : ndarray, shape (N, H, W, 1) or (N, H, W)
    splits : LeakageSplits
        From :func:`split_designs` on the same radiographs.
    config : AugmentationConfig, optional
        How the copies are made (default :data:`COPY_CONFIG`).
    seed : int, default 0
        The same seed gives the same copies (the ones that
        :func:`cxrlib.book.leakage_run.leakage_experiment` trains on with that seed).

    Returns
    -------
    images : ndarray, float32, shape (D * (n_copies + 1), H, W, C)
    masks : ndarray, shape (D * (n_copies + 1), ...) like ``masks``
        Row ``r`` is copy ``splits.pool_copy[r]`` of radiograph
        ``splits.pool_source[r]``.
    """
    config = COPY_CONFIG if config is None else config
    pool_images, pool_masks, _ = make_augmented_copies(
        np.asarray(images)[splits.dev],
        np.asarray(masks)[splits.dev],
        splits.n_copies,
        np.random.default_rng([seed, 2]),
        config,
    )
    return pool_images, pool_masks


def copies_table(splits: LeakageSplits, design: str, ids: Sequence[Any]) -> pd.DataFrame:
    """Where each row of the pool goes in one design.

    Parameters
    ----------
    splits : LeakageSplits
    design : str
        One of :data:`DESIGNS`.
    ids : sequence
        The radiograph ids given to :func:`split_designs`.

    Returns
    -------
    pandas.DataFrame
        One row per pool row (index: the pool row) with columns ``id`` (the
        radiograph), ``copy`` (0 = original) and ``side`` (``"training"``,
        ``"validation"`` or ``"unused"``).
    """
    if design not in splits.designs:
        raise ValueError(f"design must be one of {tuple(splits.designs)}, got {design!r}")
    rows = splits.designs[design]
    side = np.full(len(splits.pool_source), "unused", dtype=object)
    side[rows.train] = "training"
    side[rows.val] = "validation"
    ids = list(ids)
    table = pd.DataFrame(
        {
            "id": [ids[i] for i in splits.pool_source],
            "copy": splits.pool_copy,
            "side": side,
        }
    )
    table.index.name = "pool_row"
    return table


def design_summary(splits: LeakageSplits) -> pd.DataFrame:
    """Image and radiograph counts of each design (what is trained and validated on).

    Parameters
    ----------
    splits : LeakageSplits

    Returns
    -------
    pandas.DataFrame
        One row per design (index: :data:`DESIGNS`), int columns
        ``train_images``, ``train_radiographs``, ``val_images``,
        ``val_radiographs``, ``shared_radiographs`` (with copies on both sides)
        and ``test_radiographs``.
    """
    rows = {}
    for design, chosen in splits.designs.items():
        rows[design] = {
            "train_images": len(chosen.train),
            "train_radiographs": len(np.unique(splits.pool_source[chosen.train])),
            "val_images": len(chosen.val),
            "val_radiographs": len(np.unique(splits.pool_source[chosen.val])),
            "shared_radiographs": len(splits.shared_sources(design)),
            "test_radiographs": len(splits.test),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "design"
    return table
