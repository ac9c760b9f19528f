"""Tests for cxrlib.data.splits: stratified, reproducible, leak-proof splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.data import splits
from cxrlib.data.splits import LeakageError


def _table(seed: int = 0) -> pd.DataFrame:
    """MC 80 normal / 58 TB, CHN 200 / 200, 10 CHN rows without a label."""
    rows = []
    for site, prefix, counts in (("MC", "MCUCXR", (80, 58)), ("CHN", "CHNCXR", (200, 200))):
        number = 0
        for label, count in enumerate(counts):
            for _ in range(count):
                number += 1
                rows.append({"id": f"{prefix}_{number:04d}_{label}", "site": site, "label": label})
    for i in range(10):
        rows.append({"id": f"CHNCXR_9{i:03d}_x", "site": "CHN", "label": None})
    table = pd.DataFrame(rows)
    table["label"] = table["label"].astype("Int64")
    table["has_mask"] = np.arange(len(table)) % 5 != 0
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_split_proportions_per_site_and_label():
    table = _table()
    out = splits.split_table(table, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert len(out) == len(table)
    assert list(out["id"]) == list(table["id"])  # original row order kept
    label = out["label"].astype(object).where(out["label"].notna(), "missing")
    for (site, lab), group in out.groupby([out["site"], label]):
        n = len(group)
        counts = group["split"].value_counts()
        for name, fraction in (("val", 0.15), ("test", 0.15)):
            assert abs(counts.get(name, 0) - round(n * fraction)) <= 1, (site, lab, name)
        assert counts.get("train", 0) >= n - 2 * round(n * 0.15) - 2


def test_small_strata_are_represented():
    table = pd.DataFrame(
        {"id": [f"r{i}" for i in range(7)], "site": ["A"] * 4 + ["B"] * 3, "label": 0}
    )
    out = splits.split_table(table, seed=1)
    for _, group in out.groupby("site"):
        assert set(group["split"]) == {"train", "val", "test"}
    single = splits.split_table(table.iloc[:1], seed=0)
    assert single["split"].tolist() == ["train"]


def test_missing_label_is_its_own_stratum():
    out = splits.split_table(_table(), seed=0)
    unlabeled = out[out["label"].isna()]
    assert len(unlabeled) == 10
    assert set(unlabeled["split"]) == {"train", "val", "test"}


def test_split_is_reproducible_and_independent_of_row_order():
    a = splits.split_table(_table(seed=0), seed=7).set_index("id")["split"]
    b = splits.split_table(_table(seed=1), seed=7).set_index("id")["split"]
    c = splits.split_table(_table(seed=0), seed=8).set_index("id")["split"]
    assert a.sort_index().equals(b.sort_index())
    assert not a.sort_index().equals(c.sort_index())


def test_splits_are_disjoint_and_cover_the_table():
    out = splits.split_table(_table(), seed=0)
    ids = [set(out.loc[out["split"] == s, "id"]) for s in splits.SPLITS]
    assert sum(len(s) for s in ids) == len(out)
    splits.assert_disjoint(*ids)
    splits.check_no_leakage(out)


def test_id_crossing_splits_raises_leakage_error():
    out = splits.split_table(_table(), seed=0)
    leaked_id = out.loc[out["split"] == "val", "id"].iloc[0]
    copy = out[out["id"] == leaked_id].assign(split="train")  # same radiograph, in train too
    with pytest.raises(LeakageError, match=leaked_id) as info:
        splits.check_no_leakage(pd.concat([out, copy], ignore_index=True))
    assert info.value.ids == [leaked_id]
    assert "train+val" in str(info.value)


def test_assert_disjoint_names_ids_and_sets():
    with pytest.raises(LeakageError, match=r"'b' in train\+test"):
        splits.assert_disjoint(["a", "b"], ["c"], ["b", "d"])
    with pytest.raises(LeakageError, match=r"'x' in fit\+holdout"):
        splits.assert_disjoint(["x"], ["x"], names=["fit", "holdout"])
    splits.assert_disjoint(["a"], ["b"], ["c"])


def test_duplicate_ids_in_table_are_refused():
    table = _table()
    dup = pd.concat([table, table.iloc[[3]]], ignore_index=True)
    with pytest.raises(LeakageError, match=table["id"].iloc[3]):
        splits.split_table(dup)


def test_require_mask_keeps_only_rows_with_masks():
    table = _table()
    out = splits.split_table(table, require_mask=True)
    assert len(out) == int(table["has_mask"].sum())
    assert out["has_mask"].all()
    with pytest.raises(ValueError, match="has_mask"):
        splits.split_table(table.drop(columns="has_mask"), require_mask=True)
    by_path = table.drop(columns="has_mask").assign(
        mask_path=np.where(table["has_mask"], "m.png", None)
    )
    assert len(splits.split_table(by_path, require_mask=True)) == len(out)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "< 1"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"stratify": ("site", "sex")}, "sex"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        splits.split_table(_table(), **kwargs)


def test_check_no_leakage_rejects_unknown_split_names():
    out = splits.split_table(_table(), seed=0)
    out.loc[0, "split"] = "holdout"
    with pytest.raises(ValueError, match="holdout"):
        splits.check_no_leakage(out)


def test_kfold_splits():
    table = _table()
    folds = splits.kfold_splits(table, k=5, seed=0)
    assert len(folds) == 5
    val_count = pd.Series(0, index=table["id"])
    for i, fold in enumerate(folds):
        val = fold.loc[fold["split"] == "val", "id"]
        val_count[val] += 1
        assert (fold.loc[fold["split"] == "val", "fold"] == i).all()
        splits.assert_disjoint(fold.loc[fold["split"] == "train", "id"], val)
        mc_tb = fold[(fold["site"] == "MC") & (fold["label"] == 1)]
        assert abs((mc_tb["split"] == "val").sum() - 58 / 5) <= 1
    assert (val_count == 1).all()
    again = splits.kfold_splits(table.iloc[::-1], k=5, seed=0)
    assert (
        again[0]
        .set_index("id")["fold"]
        .sort_index()
        .equals(folds[0].set_index("id")["fold"].sort_index())
    )
    with pytest.raises(ValueError, match="k must"):
        splits.kfold_splits(table, k=1)


def test_sequence_refuses_training_arrays_with_validation_ids():
    """Augmenting before splitting puts copies of a radiograph in both sets: caught."""
    pytest.importorskip("keras")
    from cxrlib.seg.augment import SegmentationSequence, make_augmented_copies

    rng = np.random.default_rng(0)
    ids = np.array([f"img{i}" for i in range(6)])
    images = rng.random((6, 16, 16, 1), dtype=np.float32)
    masks = images > 0.5
    # the leaky recipe: augment first, then split the enlarged set at random
    big_x, big_y, source = make_augmented_copies(images, masks, 2, rng)
    order = rng.permutation(len(big_x))
    train_rows, val_rows = order[:12], order[12:]
    with pytest.raises(LeakageError, match="img"):
        SegmentationSequence(
            big_x[train_rows],
            big_y[train_rows],
            ids=ids[source[train_rows]],
            validation_ids=ids[source[val_rows]],
            augment=True,
        )
    # the right recipe: split first (by id), augment the training rows on the fly
    table = pd.DataFrame({"id": ids, "site": "MC", "label": [0, 1] * 3})
    split = splits.split_table(table, val_fraction=0.34, test_fraction=0.0, seed=0)
    train = split["split"].eq("train").to_numpy()
    seq = SegmentationSequence(
        images[train],
        masks[train],
        batch_size=2,
        ids=ids[train],
        validation_ids=ids[~train],
        augment=True,
    )
    assert len(seq) == int(np.ceil(train.sum() / 2))
