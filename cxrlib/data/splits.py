"""Train / validation / test splits that cannot leak.

The split is made on the table of radiographs (one row per image, an ``id``
column) BEFORE any augmentation, stratified by site and label so that every
split has the same mix of Montgomery and Shenzhen, normal and TB images.
Augmented or duplicated copies made before the split would put copies of one
radiograph on both sides and inflate the validation score; the guards here
(:func:`check_no_leakage`, :func:`assert_disjoint`) and in
:class:`cxrlib.seg.augment.SegmentationSequence` catch that.

Allocation within a stratum of ``n`` rows: rows are ordered by ``id`` and
shuffled with a generator seeded by ``seed`` (so the result does not depend on
the order of the input table); ``round(n * test_fraction)`` rows go to test and
``round(n * val_fraction)`` to validation, at least one each when the stratum
has three rows or more and the fraction is positive, and at least one row
always stays in train. Missing labels form their own stratum.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.errors import CxrlibError

__all__ = [
    "SPLITS",
    "LeakageError",
    "split_table",
    "kfold_splits",
    "assert_disjoint",
    "assert_unique_ids",
    "check_no_leakage",
    "ids_of",
]

#: The split names, in order.
SPLITS = ("train", "val", "test")
_MISSING = "<missing>"
_MAX_LISTED = 20


class LeakageError(CxrlibError, ValueError):
    """The same radiograph appears in more than one split (or twice in a table).

    Attributes
    ----------
    ids : list
        The offending ids (sorted by their string form).
    """

    def __init__(self, message: str, ids: Iterable[Hashable] = ()) -> None:
        self.ids = sorted(ids, key=str)
        super().__init__(message)


def _format_ids(ids: Collection[Hashable]) -> str:
    listed = sorted(ids, key=str)
    text = ", ".join(repr(i) for i in listed[:_MAX_LISTED])
    if len(listed) > _MAX_LISTED:
        text += f", ... ({len(listed) - _MAX_LISTED} more)"
    return text


def assert_unique_ids(table: pd.DataFrame, id_column: str = "id") -> None:
    """Raise :class:`LeakageError` if an id occurs in more than one row.

    Parameters
    ----------
    table : pandas.DataFrame
        Table with an ``id_column``.
    id_column : str, default "id"

    Raises
    ------
    ValueError
        If the column is missing.
    LeakageError
        Naming the duplicated ids.
    """
    if id_column not in table.columns:
        raise ValueError(f"table has no {id_column!r} column (columns: {list(table.columns)})")
    dup = table[id_column][table[id_column].duplicated(keep=False)]
    if len(dup):
        ids = set(dup)
        raise LeakageError(
            f"{len(ids)} id(s) occur in more than one row of the table: {_format_ids(ids)}; "
            f"each radiograph must appear once (duplicate or augment only after splitting)",
            ids,
        )


def assert_disjoint(
    *id_collections: Iterable[Hashable], names: Sequence[str] | None = None
) -> None:
    """Raise :class:`LeakageError` if any id is in more than one collection.

    Parameters
    ----------
    *id_collections : iterables of hashable
        For example the ids of the train, validation and test images.
    names : sequence of str, optional
        Names of the collections for the message; default ``"set 0"``,
        ``"set 1"``, ... (or ``train``/``val``/``test`` for three collections).

    Raises
    ------
    LeakageError
        Naming each shared id and the collections it is in.
    """
    sets = [set(ids) for ids in id_collections]
    if names is None:
        names = SPLITS if len(sets) == 3 else [f"set {i}" for i in range(len(sets))]
    if len(names) != len(sets):
        raise ValueError(f"got {len(names)} names for {len(sets)} id collections")
    where: dict[Hashable, list[str]] = {}
    for name, ids in zip(names, sets, strict=True):
        for i in ids:
            where.setdefault(i, []).append(name)
    shared = {i: n for i, n in where.items() if len(n) > 1}
    if shared:
        detail = "; ".join(
            f"{i!r} in {'+'.join(shared[i])}" for i in sorted(shared, key=str)[:_MAX_LISTED]
        )
        more = f"; ... ({len(shared) - _MAX_LISTED} more)" if len(shared) > _MAX_LISTED else ""
        raise LeakageError(
            f"{len(shared)} id(s) appear in more than one split: {detail}{more}", shared
        )


def check_no_leakage(
    table: pd.DataFrame, *, id_column: str = "id", split_column: str = "split"
) -> None:
    """Check a split table: unique ids, known split names, no id in two splits.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`split_table` (or any table with id and split columns).
    id_column, split_column : str

    Raises
    ------
    ValueError
        If a column is missing or a split name is not train/val/test.
    LeakageError
        If an id occurs in more than one split or more than once.
    """
    for column in (id_column, split_column):
        if column not in table.columns:
            raise ValueError(f"table has no {column!r} column (columns: {list(table.columns)})")
    unknown = set(table[split_column].dropna().unique()) - set(SPLITS)
    if unknown or table[split_column].isna().any():
        raise ValueError(
            f"column {split_column!r} must hold only {SPLITS}; found {sorted(map(str, unknown))}"
            + (" and missing values" if table[split_column].isna().any() else "")
        )
    groups = [table.loc[table[split_column] == s, id_column] for s in SPLITS]
    assert_disjoint(*groups, names=SPLITS)
    assert_unique_ids(table, id_column)


def _strata(table: pd.DataFrame, stratify: Sequence[str] | str | None) -> pd.Series:
    """One hashable stratum key per row; missing values are their own stratum."""
    if stratify is None or (not isinstance(stratify, str) and len(stratify) == 0):
        return pd.Series(["all"] * len(table), index=table.index)
    columns = [stratify] if isinstance(stratify, str) else list(stratify)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"stratify column(s) {missing} not in table (columns: {list(table.columns)})"
        )
    parts = [table[c].astype(object).where(table[c].notna(), _MISSING).astype(str) for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + " | " + part
    return key


def _has_mask(table: pd.DataFrame) -> pd.Series:
    if "has_mask" in table.columns:
        return table["has_mask"].fillna(False).astype(bool)
    if "mask_path" in table.columns:
        paths = table["mask_path"]
        return paths.notna() & (paths.astype(str).str.len() > 0)
    raise ValueError(
        "require_mask=True needs a 'has_mask' (bool) or 'mask_path' column; "
        f"table has {list(table.columns)}"
    )


def _ordered_positions(ids: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Row positions sorted by id (as text), then shuffled."""
    order = np.argsort(ids.astype(str).to_numpy(), kind="stable")
    return order[rng.permutation(len(order))]


def _allocate(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    while n_test + n_val > max(n - 1, 0):  # keep at least one row in train
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_table(
    table: pd.DataFrame,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    stratify: Sequence[str] | str | None = ("site", "label"),
    require_mask: bool = False,
    id_column: str = "id",
) -> pd.DataFrame:
    """Add a ``split`` column (``"train"``/``"val"``/``"test"``) to a table of radiographs.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per radiograph with a unique ``id_column`` and the ``stratify``
        columns.
    val_fraction, test_fraction : float, default 0.15
        Fractions of each stratum for validation and test; both ``>= 0`` with a
        sum below 1.
    seed : int, default 0
        Seed; the same seed and table (in any row order) give the same split.
    stratify : sequence of str or str or None, default ("site", "label")
        Columns whose value combinations are split separately (missing values
        are a stratum of their own). ``None`` or ``()`` for a plain random split.
    require_mask : bool, default False
        Keep only rows that have a lung mask (column ``has_mask``, or a
        non-empty ``mask_path``) before splitting, e.g. for segmentation.
    id_column : str, default "id"

    Returns
    -------
    pandas.DataFrame
        A copy of the (filtered) table, rows in their original order, with a
        ``split`` column of dtype ``object``.

    Raises
    ------
    ValueError
        For bad fractions or missing columns.
    LeakageError
        If an id occurs more than once in the table.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1), got {val_fraction}, {test_fraction}"
        )
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (leave rows for training), got "
            f"{val_fraction} + {test_fraction}"
        )
    assert_unique_ids(table, id_column)
    out = table.copy()
    if require_mask:
        out = out[_has_mask(out).to_numpy()].copy()
    if "split" in out.columns:
        warnings.warn("table already has a 'split' column; it is replaced", stacklevel=2)
    strata = _strata(out, stratify)
    labels = np.full(len(out), "train", dtype=object)
    rng = np.random.default_rng(seed)
    for key in sorted(strata.unique()):
        positions = np.flatnonzero((strata == key).to_numpy())
        ordered = positions[_ordered_positions(out[id_column].iloc[positions], rng)]
        n_val, n_test = _allocate(len(ordered), val_fraction, test_fraction)
        labels[ordered[:n_test]] = "test"
        labels[ordered[n_test : n_test + n_val]] = "val"
    out["split"] = labels
    return out


def kfold_splits(
    table: pd.DataFrame,
    k: int = 5,
    seed: int = 0,
    stratify: Sequence[str] | str | None = ("site", "label"),
    *,
    id_column: str = "id",
) -> list[pd.DataFrame]:
    """Stratified k-fold cross-validation splits.

    Within each stratum (rows ordered by id, then shuffled by ``seed``) rows are
    dealt to folds in turn; the starting fold carries over from one stratum to
    the next, so small strata spread evenly over the folds.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per radiograph with a unique ``id_column``. To keep a held-out
        test set, pass only its non-test rows.
    k : int, default 5
        Number of folds, ``2 <= k <= len(table)``.
    seed : int, default 0
    stratify : sequence of str or str or None, default ("site", "label")
    id_column : str, default "id"

    Returns
    -------
    list of pandas.DataFrame
        ``k`` copies of the table, each with a ``split`` column (``"train"`` or
        ``"val"``) and a ``fold`` column (the fold index of each row); fold
        ``i``'s validation rows are those with ``fold == i``.

    Raises
    ------
    ValueError
        For bad ``k`` or missing columns.
    LeakageError
        If an id occurs more than once.
    """
    if not isinstance(k, int | np.integer) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if k > len(table):
        raise ValueError(f"k={k} folds need at least {k} rows, table has {len(table)}")
    assert_unique_ids(table, id_column)
    strata = _strata(table, stratify)
    folds = np.zeros(len(table), dtype=int)
    rng = np.random.default_rng(seed)
    start = 0
    for key in sorted(strata.unique()):
        positions = np.flatnonzero((strata == key).to_numpy())
        ordered = positions[_ordered_positions(table[id_column].iloc[positions], rng)]
        folds[ordered] = (start + np.arange(len(ordered))) % k
        start = (start + len(ordered)) % k
    result = []
    for fold in range(k):
        out = table.copy()
        out["fold"] = folds
        out["split"] = np.where(folds == fold, "val", "train").astype(object)
        result.append(out)
    return result


def ids_of(table: pd.DataFrame, split: str, id_column: str = "id") -> list[Any]:
    """Return the ids of one split, in table order.

    Parameters
    ----------
    table : pandas.DataFrame
        Table with ``split`` and ``id_column`` columns.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    id_column : str, default "id"

    Returns
    -------
    list
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return table.loc[table["split"] == split, id_column].tolist()
