"""Tests for cxrlib.book.leakage: the two split designs (no training) and a tiny experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.book.leakage import (
    COPY_CONFIG,
    DESIGNS,
    copies_table,
    design_summary,
    make_pool,
    split_designs,
)
from cxrlib.book.leakage_run import difference_interval, leakage_experiment
from cxrlib.data.splits import LeakageError
from cxrlib.seg.augment import AugmentationConfig, make_augmented_copies

LEAKY, HONEST = DESIGNS
IDS = [f"CHNCXR_{i:04d}_0" for i in range(40)]


def _source_ids(splits, rows):
    return {IDS[i] for i in splits.pool_source[rows]}


def test_augment_then_split_shares_radiographs_between_train_and_val():
    splits = split_designs(IDS, n_copies=3, val_fraction=0.2, test_fraction=0.25, seed=0)
    rows = splits.designs[LEAKY]
    shared = _source_ids(splits, rows.train) & _source_ids(splits, rows.val)
    assert shared, "the leaky design should put copies of a radiograph on both sides"
    assert len(splits.shared_sources(LEAKY)) == len(shared)


def test_split_then_augment_keeps_train_and_val_radiographs_apart():
    splits = split_designs(IDS, n_copies=3, val_fraction=0.2, test_fraction=0.25, seed=0)
    rows = splits.designs[HONEST]
    assert not _source_ids(splits, rows.train) & _source_ids(splits, rows.val)
    assert len(splits.shared_sources(HONEST)) == 0
    # validation holds the unchanged originals only, one per radiograph
    assert np.all(splits.pool_copy[rows.val] == 0)
    assert len(np.unique(splits.pool_source[rows.val])) == len(rows.val)
    # every copy of a training radiograph is used for training
    train_sources = np.unique(splits.pool_source[rows.train])
    assert len(rows.train) == len(train_sources) * (splits.n_copies + 1)


def test_test_radiographs_are_never_in_the_pool_and_budgets_match():
    splits = split_designs(IDS, n_copies=2, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert len(splits.test) == 10
    assert not set(splits.test) & set(splits.dev)
    assert sorted([*splits.test, *splits.dev]) == list(range(len(IDS)))
    assert not set(splits.pool_source) & set(splits.test)
    leaky, honest = splits.designs[LEAKY], splits.designs[HONEST]
    assert len(leaky.train) == len(honest.train)
    for rows in (leaky, honest):
        assert not set(rows.train) & set(rows.val)
    # the leaky design uses the whole pool, each row once
    assert sorted([*leaky.train, *leaky.val]) == list(range(len(splits.pool_source)))


def test_pool_layout_matches_make_augmented_copies():
    rng = np.random.default_rng(0)
    images = rng.random((12, 8, 8, 1)).astype(np.float32)
    masks = images > 0.5
    ids = [f"r{i}" for i in range(12)]
    splits = split_designs(ids, n_copies=2, val_fraction=0.25, test_fraction=0.25, seed=1)
    pool, _, source_index = make_augmented_copies(
        images[splits.dev], masks[splits.dev], 2, np.random.default_rng(0)
    )
    assert len(pool) == len(splits.pool_source)
    np.testing.assert_array_equal(splits.dev[source_index], splits.pool_source)
    originals = splits.pool_copy == 0
    np.testing.assert_array_equal(pool[originals], images[splits.pool_source[originals]])


def test_make_pool_keeps_masks_and_is_reproducible():
    rng = np.random.default_rng(1)
    images = rng.uniform(0.2, 0.6, (10, 8, 8, 1)).astype(np.float32)
    masks = rng.random((10, 8, 8, 1)) > 0.5
    splits = split_designs([f"r{i}" for i in range(10)], n_copies=3, seed=0)
    pool_images, pool_masks = make_pool(images, masks, splits, seed=4)
    assert pool_images.shape == (len(splits.pool_source), 8, 8, 1)
    # COPY_CONFIG changes intensities only: every copy keeps its radiograph's mask
    assert COPY_CONFIG.p_geometric == 0.0
    np.testing.assert_array_equal(pool_masks, masks[splits.pool_source])
    copies = splits.pool_copy > 0
    changed = np.abs(pool_images[copies] - images[splits.pool_source[copies]]).max(axis=(1, 2, 3))
    assert (changed > 0).any()
    again, _ = make_pool(images, masks, splits, seed=4)
    np.testing.assert_array_equal(pool_images, again)


def test_copies_table_says_where_every_copy_goes():
    splits = split_designs(IDS, n_copies=2, seed=0)
    leaky = copies_table(splits, LEAKY, IDS)
    assert (leaky["side"] != "unused").all()
    assert (leaky["side"] == "validation").sum() == len(splits.designs[LEAKY].val)
    honest = copies_table(splits, HONEST, IDS)
    val = honest[honest["side"] == "validation"]
    assert (val["copy"] == 0).all()
    # the augmented copies of validation radiographs are not used at all
    assert set(honest.loc[honest["side"] == "unused", "id"]) == set(val["id"])
    assert not set(val["id"]) & set(honest.loc[honest["side"] == "training", "id"])
    with pytest.raises(ValueError, match="design must be one of"):
        copies_table(splits, "augment-after-lunch", IDS)


def test_design_summary_counts():
    splits = split_designs(IDS, n_copies=3, val_fraction=0.25, test_fraction=0.25, seed=0)
    table = design_summary(splits)
    assert list(table.index) == list(DESIGNS)
    assert (table["test_radiographs"] == 10).all()
    assert table.loc[HONEST, "train_radiographs"] == 20
    assert table.loc[HONEST, "val_images"] == table.loc[HONEST, "val_radiographs"] == 10
    assert table.loc[HONEST, "shared_radiographs"] == 0
    assert table.loc[LEAKY, "train_images"] == table.loc[HONEST, "train_images"] == 80
    # the leaky design trains on copies of (almost) every development radiograph
    assert table.loc[LEAKY, "train_radiographs"] > 20
    assert table.loc[LEAKY, "shared_radiographs"] > 0


def test_same_seed_same_splits_other_seed_differs():
    a = split_designs(IDS, n_copies=2, seed=5)
    b = split_designs(IDS[::-1], n_copies=2, seed=5)  # order of the input does not matter
    assert {IDS[i] for i in a.test} == {IDS[::-1][i] for i in b.test}
    c = split_designs(IDS, n_copies=2, seed=6)
    assert set(a.test) != set(c.test) or not np.array_equal(
        a.designs[LEAKY].val, c.designs[LEAKY].val
    )


def test_sites_and_labels_stratify_the_id_split():
    sites = (["MC"] * 10 + ["CHN"] * 10) * 2
    labels = [0] * 20 + [1] * 20
    splits = split_designs(
        IDS, n_copies=1, val_fraction=0.2, test_fraction=0.4, sites=sites, labels=labels
    )
    groups = pd.Series([f"{sites[i]}-{labels[i]}" for i in splits.test]).value_counts()
    assert sorted(groups.index) == ["CHN-0", "CHN-1", "MC-0", "MC-1"]
    assert (groups == 4).all()


def test_sites_stratify_the_id_split():
    sites = ["MC"] * 20 + ["CHN"] * 20
    splits = split_designs(IDS, n_copies=1, val_fraction=0.2, test_fraction=0.25, sites=sites)
    test_sites = pd.Series([sites[i] for i in splits.test]).value_counts()
    assert test_sites["MC"] == test_sites["CHN"] == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_copies": 0}, "n_copies"),
        ({"n_copies": 2, "val_fraction": 0.0}, "val_fraction"),
        ({"n_copies": 2, "test_fraction": 1.0}, "test_fraction"),
        ({"n_copies": 2, "sites": ["MC"]}, "sites has 1 entries"),
        ({"n_copies": 2, "labels": [0, 1]}, "labels has 2 entries"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_designs(IDS, **kwargs)


def test_too_few_radiographs_and_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="at least one radiograph"):
        split_designs(["a", "b"], n_copies=1)
    with pytest.raises(LeakageError):
        split_designs(["a", "b", "a", "c", "d"], n_copies=1)


def test_experiment_rejects_mismatched_arrays_before_training():
    images = np.zeros((6, 16, 16, 1), np.float32)
    with pytest.raises(ValueError, match="masks must have shape"):
        leakage_experiment(images, np.zeros((6, 8, 8)), list("abcdef"))
    with pytest.raises(ValueError, match="ids has 5 entries"):
        leakage_experiment(images, np.zeros((6, 16, 16)), list("abcde"))
    with pytest.raises(ValueError, match="epochs"):
        leakage_experiment(images, np.zeros((6, 16, 16)), list("abcdef"), epochs=0)


def _discs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs of random centre and radius on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size, 1), bool)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.15, size * 0.3)
        masks[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    images = 0.2 + 0.6 * masks + rng.normal(0, 0.05, masks.shape)
    return np.clip(images, 0, 1).astype(np.float32), masks


def test_tiny_experiment_returns_one_row_per_design():
    images, masks = _discs(16, 16, seed=0)
    ids = [f"d{i}" for i in range(16)]
    config = AugmentationConfig(p_geometric=1.0, p_noise=0.0, p_contrast_v1=0.0)
    table = leakage_experiment(
        images,
        masks,
        ids,
        n_copies=1,
        epochs=1,
        filters=(4, 8),
        batch_size=8,
        val_fraction=0.25,
        test_fraction=0.25,
        config=config,
    )
    assert list(table.index) == list(DESIGNS)
    assert table.loc[LEAKY, "train_images"] == table.loc[HONEST, "train_images"]
    assert table.loc[LEAKY, "shared_radiographs"] > 0
    assert table.loc[HONEST, "shared_radiographs"] == 0
    assert table.loc[HONEST, "val_images"] == table.loc[HONEST, "val_radiographs"]
    assert (table["test_images"] == 4).all()
    for column in ("train_dice", "val_dice", "test_dice"):
        assert table[column].between(0.0, 1.0).all()
    np.testing.assert_allclose(table["gap"], table["val_dice"] - table["test_dice"])
    assert (table["gap_low"] <= table["gap"] + 1e-12).all()
    assert (table["gap"] <= table["gap_high"] + 1e-12).all()
    assert (table["test_low"] <= table["test_dice"] + 1e-12).all()
    assert (table["test_dice"] <= table["test_high"] + 1e-12).all()
    assert (table["val_low"] <= table["val_dice"] + 1e-12).all()
    assert (table["val_dice"] <= table["val_high"] + 1e-12).all()


def test_difference_interval_combines_the_two_intervals():
    # symmetric intervals: the half-widths add in quadrature
    low, high = difference_interval((0.9, 0.87, 0.93), (0.8, 0.76, 0.84))
    assert low == pytest.approx(0.1 - 0.05) and high == pytest.approx(0.1 + 0.05)
    # lopsided intervals: each side takes the matching sides of the two intervals
    low, high = difference_interval((0.9, 0.8, 0.91), (0.5, 0.49, 0.6))
    assert low == pytest.approx(0.4 - np.hypot(0.1, 0.1))
    assert high == pytest.approx(0.4 + np.hypot(0.01, 0.01))
    # exact estimates give a point; a nan bound gives nan
    assert difference_interval((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)) == pytest.approx((0.3, 0.3))
    assert np.isnan(difference_interval((0.5, np.nan, np.nan), (0.2, 0.1, 0.3))).all()
