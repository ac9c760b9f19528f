"""The leakage experiment: augmenting before the split inflates validation scores.

The original notebooks enlarged the data with augmented copies first and split
the enlarged set at random afterwards, so copies of one radiograph ended up in
training *and* validation. :func:`leakage_experiment` measures what that does to
the validation score by training the same small U-Net on the same budget under
two designs (:data:`DESIGNS`):

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

The split logic lives in :func:`split_designs` (no training; tested on its own).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.data.splits import assert_disjoint, split_table
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
    "leakage_experiment",
    "summary_values",
    "interval_relations",
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
        The same seed gives the same copies (the ones :func:`leakage_experiment`
        trains on with that seed).

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


# ---------------------------------------------------------------------- experiment


def _dice_per_image(model: Any, images: np.ndarray, masks: np.ndarray, batch_size: int):
    from cxrlib.seg.metrics import dice

    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.array([dice(p > 0.5, m) for p, m in zip(probs, masks, strict=True)])


def _cluster_bootstrap(
    scores: np.ndarray, sources: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
) -> np.ndarray:
    """Bootstrap replicates of the mean Dice, resampling radiographs (not copies).

    Copies of one radiograph are not independent, so whole radiographs (with
    all their copies) are drawn with replacement. Returns ``n_boot`` means
    (all ``nan`` when there are fewer than two radiographs).
    """
    frame = pd.DataFrame({"source": sources, "dice": scores})
    per_source = frame.groupby("source")["dice"].agg(["sum", "count"]).to_numpy(np.float64)
    if len(per_source) < 2:
        return np.full(n_boot, np.nan)
    picks = rng.integers(0, len(per_source), (n_boot, len(per_source)))
    return per_source[picks, 0].sum(axis=1) / per_source[picks, 1].sum(axis=1)


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    """95 % percentile interval of bootstrap replicates."""
    if np.isnan(replicates).all():
        return float("nan"), float("nan")
    low, high = np.percentile(replicates, [2.5, 97.5])
    return float(low), float(high)


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
        ``gap_high`` (validation and test resampled independently), and
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
        val_boot = _cluster_bootstrap(
            val_scores, splits.pool_source[chosen.val], np.random.default_rng([seed, 3])
        )
        test_boot = _cluster_bootstrap(test_scores, splits.test, np.random.default_rng([seed, 4]))
        val_low, val_high = _interval(val_boot)
        test_low, test_high = _interval(test_boot)
        gap_low, gap_high = _interval(val_boot - test_boot)
        rows[design] = {
            "train_images": len(chosen.train),
            "val_images": len(chosen.val),
            "val_radiographs": len(np.unique(splits.pool_source[chosen.val])),
            "shared_radiographs": len(splits.shared_sources(design)),
            "test_images": len(splits.test),
            "train_dice": float(train_scores.mean()),
            "val_dice": float(val_scores.mean()),
            "test_dice": float(test_scores.mean()),
            "val_low": val_low,
            "val_high": val_high,
            "test_low": test_low,
            "test_high": test_high,
            "gap": float(val_scores.mean() - test_scores.mean()),
            "gap_low": gap_low,
            "gap_high": gap_high,
            "train_seconds": seconds,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "design"
    return table


#: Short names of the designs in :func:`summary_values`.
SHORT_NAMES = {"augment-then-split": "leaky", "split-then-augment": "honest"}


def summary_values(results: pd.DataFrame) -> dict[str, float]:
    """Flatten the experiment's table into named numbers (for quoting in prose).

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`leakage_experiment`.

    Returns
    -------
    dict of str -> float
        ``"<short>_<column>"`` for every design and numeric column, where
        ``<short>`` is ``"leaky"`` (augment-then-split) or ``"honest"``
        (split-then-augment), e.g. ``"leaky_val_dice"``; plus
        ``"train_minutes"``, the training time of both designs together.

    Raises
    ------
    ValueError
        If a design is missing from the index.
    """
    missing = [d for d in DESIGNS if d not in results.index]
    if missing:
        raise ValueError(f"results lacks the design(s) {missing}; index is {list(results.index)}")
    values = {
        f"{SHORT_NAMES[design]}_{column}": float(results.loc[design, column])
        for design in DESIGNS
        for column in results.columns
        if pd.api.types.is_numeric_dtype(results[column])
    }
    if "train_seconds" in results.columns:
        values["train_minutes"] = float(results["train_seconds"].sum()) / 60.0
    return values


def interval_relations(results: pd.DataFrame) -> dict[str, str]:
    """How each design's validation interval sits relative to its test interval.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`leakage_experiment` (columns ``val_low``,
        ``val_high``, ``test_low``, ``test_high``).

    Returns
    -------
    dict of str -> str
        ``"leaky_relation"`` and ``"honest_relation"``, each ``"lies entirely
        above"``, ``"lies entirely below"`` or ``"overlaps"`` (to be followed by
        "the test interval"); when the table has ``gap_low`` and ``gap_high``,
        also ``"leaky_gap_relation"`` and ``"honest_gap_relation"``: how the
        interval of ``val - test`` relates to zero (``"lies entirely above"``,
        ``"lies entirely below"`` or ``"includes"``).
    """
    missing = [d for d in DESIGNS if d not in results.index]
    if missing:
        raise ValueError(f"results lacks the design(s) {missing}; index is {list(results.index)}")
    relations = {}
    for design in DESIGNS:
        row = results.loc[design]
        if row["val_low"] > row["test_high"]:
            relation = "lies entirely above"
        elif row["val_high"] < row["test_low"]:
            relation = "lies entirely below"
        else:
            relation = "overlaps"
        relations[f"{SHORT_NAMES[design]}_relation"] = relation
        if {"gap_low", "gap_high"} <= set(results.columns):
            if row["gap_low"] > 0:
                gap_relation = "lies entirely above"
            elif row["gap_high"] < 0:
                gap_relation = "lies entirely below"
            else:
                gap_relation = "includes"
            relations[f"{SHORT_NAMES[design]}_gap_relation"] = gap_relation
    return relations
