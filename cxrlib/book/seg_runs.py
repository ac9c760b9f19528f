"""Find, load or train the segmentation runs of the book's segmentation chapters.

A *run* is a folder written by :func:`cxrlib.seg.train.train_segmentation`: ``model.keras``,
``config.json``, ``key.json``, ``split.csv``, ``history.csv``, ``metrics.json`` and
``per_image.csv``. This module finds and loads them:

* :func:`segmentation_config` builds a :class:`~cxrlib.seg.train_config.TrainConfig` from notebook
  parameters (``filters="recipe"`` picks the CPU recipe's width, ``precision="auto"``
  the fastest precision of this machine);
* :func:`load_run` reads a finished run without training; :func:`find_or_train` looks for
  the run of an earlier chapter and trains it (load-or-train) only when it is missing;
  :func:`find_chapter_runs` does so for both architectures;
* :func:`original_runs` trains the original project's networks (their original filters)
  with the budget of the chapter's runs, so that they can be compared on equal terms.

The tables that compare runs are in :mod:`cxrlib.book.seg_tables`, the best and worst cases
and the inference timing in :mod:`cxrlib.book.seg_cases`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlib.errors import CxrlibError
from cxrlib.runs import read_json
from cxrlib.seg.results import TrainResult, read_run_files
from cxrlib.seg.train import train_segmentation
from cxrlib.seg.train_config import TrainConfig
from cxrlib.seg.train_config import recipe as named_recipe

__all__ = [
    "CHAPTER_RUNS",
    "MODEL_NAMES",
    "RunNotFoundError",
    "segmentation_config",
    "is_finished_run",
    "load_run",
    "find_or_train",
    "find_chapter_runs",
    "by_architecture",
    "ORIGINAL_SUFFIX",
    "original_runs",
]

#: Folder names of the segmentation chapter's two runs (the book runs it once per model).
CHAPTER_RUNS: dict[str, str] = {"unet": "03a_unet_training", "resunet": "03b_resunet_training"}

#: Display names of the architectures.
MODEL_NAMES: dict[str, str] = {"unet": "U-Net", "resunet": "ResUNet"}

#: Appended to a display name for the network with its original filters.
ORIGINAL_SUFFIX = " (original)"

_DONE_FILES = ("model.keras", "metrics.json", "split.csv", "config.json")


class RunNotFoundError(CxrlibError, FileNotFoundError):
    """A folder is not a finished training run (the message says what is missing)."""


# --------------------------------------------------------------------------- config


def segmentation_config(
    model: str,
    *,
    recipe: str | None = None,
    img_size: int | None = None,
    filters: Sequence[int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    seed: int = 0,
    **overrides: Any,
) -> TrainConfig:
    """Build the training configuration from a notebook's parameters.

    Parameters
    ----------
    model : {"unet", "resunet"}
    recipe : {"cpu", "gpu"}, optional
        A named recipe (:data:`cxrlib.seg.train_config.RECIPES`); when given, it is the
        configuration (with ``seed``) and the other values are ignored.
    img_size : int
        Side of the model input (divisible by ``2 ** (len(filters) - 1)``).
    filters : sequence of int or None
        Filters per level; None: the architecture's original filters.
    epochs, batch_size, seed : int
    precision : str, default "auto"
        See :func:`cxrlib.precision.resolve_precision`.
    **overrides
        Any other :class:`~cxrlib.seg.train_config.TrainConfig` field (``learning_rate``,
        ``lr_schedule``, ``patience``, ...).

    Returns
    -------
    TrainConfig

    Raises
    ------
    ValueError
        For a bad value (the message names the parameter).
    """
    key = str(model).lower()
    if recipe is not None:
        return named_recipe(recipe, key, seed=seed)
    if img_size is None or epochs is None or batch_size is None:
        raise ValueError("give a recipe, or img_size, epochs and batch_size")
    if isinstance(filters, str):
        raise ValueError(f"filters must be a list of ints or None, got the string {filters!r}")
    return TrainConfig(
        model=key,
        img_size=img_size,
        filters=None if filters is None else tuple(filters),
        epochs=epochs,
        batch_size=batch_size,
        precision=precision,
        seed=seed,
        **overrides,
    )


# --------------------------------------------------------------------------- runs


def is_finished_run(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a finished training run (``key.json`` status ``done``)."""
    path = Path(run_dir)
    stored = read_json(path / "key.json")
    if not isinstance(stored, dict) or stored.get("status") != "done":
        return False
    return all((path / name).is_file() for name in _DONE_FILES)


def load_run(run_dir: str | os.PathLike[str]) -> TrainResult:
    """Read a finished run without training (``trained`` and ``resumed`` are False).

    Parameters
    ----------
    run_dir : path
        A folder written by :func:`cxrlib.seg.train.train_segmentation`.

    Returns
    -------
    TrainResult

    Raises
    ------
    RunNotFoundError
        If the folder is missing or holds no finished run (the message says why).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFoundError(f"no training run at {path}: the folder does not exist")
    if not is_finished_run(path):
        missing = [name for name in ("key.json", *_DONE_FILES) if not (path / name).is_file()]
        reason = f"missing {missing}" if missing else "key.json does not say 'done'"
        raise RunNotFoundError(f"{path} holds no finished training run ({reason})")
    stored = read_json(path / "config.json")
    if not isinstance(stored, dict):
        raise RunNotFoundError(f"{path / 'config.json'} is not readable JSON")
    names = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig.from_dict({k: v for k, v in stored.items() if k in names})
    return read_run_files(path, config, str(read_json(path / "key.json").get("key", "")))


def _check_ids(result: TrainResult, table: pd.DataFrame) -> None:
    known = set(table["id"].astype(str))
    missing = sorted(set(result.split["id"].astype(str)) - known)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"the run in {result.run_dir} was trained on other data: {len(missing)} of its "
            f"radiographs are not in the dataset ({shown}); pass the same data_dir as the "
            "chapter that trained it, or remove the run to train it again"
        )


def find_or_train(
    model: str,
    data: str | os.PathLike[str] | pd.DataFrame,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    progress: bool = False,
) -> TrainResult:
    """Return the segmentation chapter's run of ``model``; train it only when missing.

    Looks for a finished run in ``runs_root / CHAPTER_RUNS[model]`` (as written by the
    book runner). When there is none (or ``runs_root`` is None), trains ``config``
    with :func:`cxrlib.seg.train.train_segmentation` into ``run_dir / CHAPTER_RUNS[model]``
    (load-or-train: a finished run with the same key there is reused).

    Parameters
    ----------
    model : {"unet", "resunet"}
    data : path or pandas.DataFrame
        The dataset folder or its table (:func:`cxrlib.data.datasets.scan_dataset`).
        A run found in ``runs_root`` must have been trained on radiographs of this
        dataset (their ids are checked).
    config : TrainConfig
        Used only to train a missing run; its ``model`` must be ``model``.
    run_dir : path
        The calling chapter's run folder (for runs it trains).
    runs_root : path, optional
        The folder holding the earlier chapters' run folders.
    overwrite : bool, default False
        Replace a run in ``run_dir`` trained with another configuration or data.
    cache_dir, progress
        Passed to :func:`cxrlib.seg.train.train_segmentation`.

    Returns
    -------
    TrainResult
        ``trained`` is True when this call trained the model.

    Raises
    ------
    ValueError
        For an unknown model, a config of another model, or a found run trained on
        other radiographs.
    """
    key = str(model).lower()
    if key not in CHAPTER_RUNS:
        raise ValueError(f"model must be one of {tuple(CHAPTER_RUNS)}, got {model!r}")
    if config.model != key:
        raise ValueError(f"config.model is {config.model!r} but model is {key!r}")
    table = _table(data)
    if runs_root is not None:
        found = Path(runs_root) / CHAPTER_RUNS[key]
        if is_finished_run(found):
            result = load_run(found)
            _check_ids(result, table)
            return result
        if found.exists():
            warnings.warn(
                f"{found} holds no finished run; training {key} in {Path(run_dir)} instead",
                stacklevel=2,
            )
    return train_segmentation(
        table,
        config,
        Path(run_dir) / CHAPTER_RUNS[key],
        overwrite=overwrite,
        cache_dir=cache_dir,
        progress=progress,
    )


def _table(data: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    from cxrlib.data.datasets import scan_dataset

    return scan_dataset(data).table


def find_chapter_runs(
    data: str | os.PathLike[str] | pd.DataFrame,
    run_dir: str | os.PathLike[str],
    *,
    runs_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    progress: bool = False,
    **config: Any,
) -> dict[str, TrainResult]:
    """Both runs of the segmentation chapter (U-Net and ResUNet), found or trained.

    Parameters
    ----------
    data, run_dir, runs_root, overwrite, cache_dir, progress
        See :func:`find_or_train`.
    **config
        Keyword arguments of :func:`segmentation_config` (``img_size``, ``filters``,
        ``epochs``, ``batch_size``, ``precision``, ``seed``, ...), used for the runs
        that must be trained.

    Returns
    -------
    dict of str -> TrainResult
        Keyed by display name (:data:`MODEL_NAMES`), U-Net first.
    """
    table = _table(data)
    return {
        MODEL_NAMES[model]: find_or_train(
            model,
            table,
            segmentation_config(model, **config),
            run_dir,
            runs_root=runs_root,
            overwrite=overwrite,
            cache_dir=cache_dir,
            progress=progress,
        )
        for model in CHAPTER_RUNS
    }


def by_architecture(results: Mapping[str, TrainResult]) -> dict[str, TrainResult]:
    """The runs keyed by their architecture (``result.config.model``: "unet", "resunet").

    Parameters
    ----------
    results : mapping of str -> TrainResult
        Runs keyed by a display name; of two runs of one architecture, the later is kept.

    Returns
    -------
    dict of str -> TrainResult
    """
    return {result.config.model: result for result in results.values()}


def original_runs(
    data: str | os.PathLike[str] | pd.DataFrame,
    like: Mapping[str, TrainResult],
    run_dir: str | os.PathLike[str],
    models: Sequence[str] = ("unet", "resunet"),
    *,
    epochs: int | None = None,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    progress: bool = False,
) -> dict[str, TrainResult]:
    """The original project's networks, trained like the chapter's runs (load-or-train).

    Each model takes the configuration of the run in ``like`` with the same architecture
    (input size, epochs, batch, schedule, precision, seed, split) and only its filters
    replaced by the original ones (``filters=None``: 32-64-128-256-512 for the U-Net,
    16-32-64-128-256 for the ResUNet), so that the comparison with the width-reduced
    recipe has an equal budget unless ``epochs`` says otherwise. A run of ``like`` that
    already has that configuration (the gpu recipe trains the original filters) is returned
    as it is, not trained again.

    Parameters
    ----------
    data : path or pandas.DataFrame
        The dataset folder or its table.
    like : mapping of str -> TrainResult
        The chapter's runs (e.g. :func:`find_chapter_runs`), looked up by
        ``result.config.model``.
    run_dir : path
        Runs are written to ``run_dir / "{model}_original"``; a finished run with the same
        configuration there is loaded, not trained again.
    models : sequence of {"unet", "resunet"}
        The architectures, in order; empty: none.
    epochs : int, optional
        Another number of epochs (None: those of the run in ``like``).
    overwrite, cache_dir, progress
        See :func:`cxrlib.seg.train.train_segmentation`.

    Returns
    -------
    dict of str -> TrainResult
        Keyed by ``MODEL_NAMES[model] + ORIGINAL_SUFFIX`` (``"U-Net (original)"``), in the
        order of ``models``.

    Raises
    ------
    ValueError
        For an unknown model, or one that ``like`` has no run of.
    """
    by_model = by_architecture(like)
    table = _table(data)
    out: dict[str, TrainResult] = {}
    for model in models:
        key = str(model).lower()
        if key not in MODEL_NAMES:
            raise ValueError(f"model must be one of {tuple(MODEL_NAMES)}, got {model!r}")
        if key not in by_model:
            raise ValueError(
                f"no run of {key!r} to copy the budget from (runs of {sorted(by_model)})"
            )
        changes: dict[str, Any] = {"filters": None}
        if epochs is not None:
            changes["epochs"] = int(epochs)
        config = dataclasses.replace(by_model[key].config, **changes)
        if config == by_model[key].config:  # already the original network (the gpu recipe)
            out[MODEL_NAMES[key] + ORIGINAL_SUFFIX] = by_model[key]
            continue
        out[MODEL_NAMES[key] + ORIGINAL_SUFFIX] = train_segmentation(
            table,
            config,
            Path(run_dir) / f"{key}_original",
            overwrite=overwrite,
            cache_dir=cache_dir,
            progress=progress,
        )
    return out
