"""Named numbers for ``myst_nb.glue``: a table or mapping flattened into ``{key: value}``.

The chapters quote results in their prose with ``{glue:text}`key```. :func:`glue_values`
turns a table into such keys, so that a chapter glues all of a table's numbers in one loop:

    >>> import pandas as pd
    >>> table = pd.DataFrame({"dice_mean": [0.9, 0.8]}, index=["U-Net", "ResUNet"])
    >>> glue_values("score", table)
    {'score_u_net_dice_mean': 0.9, 'score_resunet_dice_mean': 0.8}
    >>> glue_values("", {"best epoch": 3})
    {'best_epoch': 3}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["glue_values", "slug"]


def slug(text: Any) -> str:
    """Lower case, with dashes and spaces replaced by underscores (``"U-Net"`` -> ``u_net``)."""
    return str(text).lower().replace("-", "_").replace(" ", "_")


def _key(prefix: str, *parts: Any) -> str:
    names = [str(prefix)] if prefix else []
    for part in parts:
        names += [str(p) for p in part] if isinstance(part, tuple) else [str(part)]
    return slug("_".join(names))


def _python_value(value: Any) -> Any:
    """A Python scalar (``glue`` shows numpy scalars with their type name)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def glue_values(prefix: str, data: pd.DataFrame | pd.Series | Mapping[Any, Any]) -> dict[str, Any]:
    """Flatten a table or a mapping into ``{key: scalar}`` for ``glue``.

    Parameters
    ----------
    prefix : str
        Start of every key (``""``: none).
    data : pandas.DataFrame, pandas.Series or mapping
        A DataFrame gives ``{prefix}_{row}_{column}`` for every cell (a MultiIndex row
        label is joined with ``_``); a Series or mapping gives ``{prefix}_{key}``.

    Returns
    -------
    dict of str -> bool, int, float or str
        Keys are lower-cased with dashes and spaces replaced by underscores; numbers become
        Python ``int``/``float`` (each column keeps its type), other values ``str``. Later
        cells win when two labels give the same key.
    """
    if isinstance(data, pd.DataFrame):
        # Cell by cell (not iterrows, which casts a row of int and float to float).
        return {
            _key(prefix, label, column): _python_value(data.iat[i, j])
            for i, label in enumerate(data.index)
            for j, column in enumerate(data.columns)
        }
    if isinstance(data, pd.Series | Mapping):
        return {_key(prefix, label): _python_value(value) for label, value in data.items()}
    raise TypeError(f"data must be a DataFrame, Series or mapping, got {type(data).__name__}")
