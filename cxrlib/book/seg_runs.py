"""Find, load, train and compare segmentation runs (the book's segmentation chapters).

A *run* is a folder written by :func:`cxrlib.seg.train.train_segmentation`: ``model.keras``,
``config.json``, ``key.json``, ``split.csv``, ``history.csv``, ``metrics.json`` and
``per_image.csv``. This module turns runs into the tables and arrays the chapters show:

* :func:`segmentation_config` builds a :class:`~cxrlib.seg.train.TrainConfig` from notebook
  parameters (``filters="recipe"`` picks the CPU recipe's width, ``precision="auto"``
  the fastest precision of this machine);
* :func:`load_run` reads a finished run without training; :func:`find_or_train` looks for
  the run of an earlier chapter and trains it (load-or-train) only when it is missing;
* :func:`split_counts`, :func:`parameter_table`, :func:`score_table`, :func:`speed_table`
  and :func:`history_summary` are the comparison tables;
* :func:`pick_cases` and :func:`case_arrays` select the best and worst test radiographs
  and return them with their reference and predicted masks for an overlay figure;
* :func:`inference_speed` times the prediction of a model in images per second.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.errors import CxrlibError
from cxrlib.precision import resolve_precision
from cxrlib.seg.train import (
    CPU_RECIPE_FILTERS,
    TrainConfig,
    TrainResult,
    read_run_files,
    train_segmentation,
)

__all__ = [
    "CHAPTER_RUNS",
    "MODEL_NAMES",
    "REFERENCE",
    "RunNotFoundError",
    "resolve_precision",
    "segmentation_config",
    "is_finished_run",
    "load_run",
    "find_or_train",
    "find_chapter_runs",
    "split_counts",
    "run_overview",
    "per_image_table",
    "history_summary",
    "history_values",
    "table_values",
    "parameter_counts",
    "parameter_table",
    "score_table",
    "postprocess_table",
    "score_values",
    "paired_difference",
    "speed_table",
    "pick_cases",
    "case_titles",
    "case_arrays",
    "case_panels",
    "inference_speed",
    "measure_inference",
]

#: Folder names of the segmentation chapter's two runs (the book runs it once per model).
CHAPTER_RUNS: dict[str, str] = {"unet": "03a_unet_training", "resunet": "03b_resunet_training"}

#: Display names of the architectures.
MODEL_NAMES: dict[str, str] = {"unet": "U-Net", "resunet": "ResUNet"}

#: Reference numbers of GUIDE section 4. Validation Dice *loss* of the original notebooks
#: (measured on a split made after augmentation, so optimistic) and the best published
#: per-site test Dice of U-Net-family models.
REFERENCE: dict[str, float] = {
    "unet_params": 7_759_521,
    "resunet_params": 4_722_737,
    "unet_val_dice_loss": 0.03169,
    "resunet_val_dice_loss": 0.02861,
    "best_dice_montgomery": 0.98,
    "best_dice_shenzhen_low": 0.95,
    "best_dice_shenzhen_high": 0.96,
}

_DONE_FILES = ("model.keras", "metrics.json", "split.csv", "config.json")


class RunNotFoundError(CxrlibError, FileNotFoundError):
    """A folder is not a finished training run (the message says what is missing)."""


# --------------------------------------------------------------------------- config


def segmentation_config(
    model: str,
    *,
    img_size: int,
    filters: Sequence[int] | str | None,
    epochs: int,
    batch_size: int,
    precision: str = "auto",
    seed: int = 0,
    **overrides: Any,
) -> TrainConfig:
    """Build the training configuration from a notebook's parameters.

    Parameters
    ----------
    model : {"unet", "resunet"}
    img_size : int
        Side of the model input (divisible by ``2 ** (len(filters) - 1)``).
    filters : sequence of int, "recipe" or None
        Filters per level; ``"recipe"``: the CPU recipe's width-reduced filters
        (:data:`cxrlib.seg.train.CPU_RECIPE_FILTERS`); None: the original filters.
    epochs, batch_size, seed : int
    precision : str, default "auto"
        See :func:`cxrlib.precision.resolve_precision`.
    **overrides
        Any other :class:`~cxrlib.seg.train.TrainConfig` field (``learning_rate``,
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
    if isinstance(filters, str):
        if filters != "recipe":
            raise ValueError(
                f"filters must be a list of ints, 'recipe' or None, got the string {filters!r}"
            )
        if key not in CPU_RECIPE_FILTERS:
            raise ValueError(f"model must be one of {tuple(CPU_RECIPE_FILTERS)}, got {model!r}")
        resolved: tuple[int, ...] | None = CPU_RECIPE_FILTERS[key]
    else:
        resolved = None if filters is None else tuple(filters)
    return TrainConfig(
        model=key,
        img_size=img_size,
        filters=resolved,
        epochs=epochs,
        batch_size=batch_size,
        precision=resolve_precision(precision),
        seed=seed,
        **overrides,
    )


# --------------------------------------------------------------------------- runs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_finished_run(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a finished training run (``key.json`` status ``done``)."""
    path = Path(run_dir)
    stored = _read_json(path / "key.json")
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
    stored = _read_json(path / "config.json")
    if not isinstance(stored, dict):
        raise RunNotFoundError(f"{path / 'config.json'} is not readable JSON")
    names = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig.from_dict({k: v for k, v in stored.items() if k in names})
    return read_run_files(path, config, str(_read_json(path / "key.json").get("key", "")))


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


# --------------------------------------------------------------------------- tables


def split_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Radiographs per site (rows, plus ``all``) and split (columns train/val/test/all).

    Parameters
    ----------
    split : pandas.DataFrame
        Columns ``site`` and ``split`` (``TrainResult.split``).

    Returns
    -------
    pandas.DataFrame
        int64 counts.
    """
    from cxrlib.data.splits import SPLITS

    counts = pd.crosstab(split["site"], split["split"], margins=True, margins_name="all")
    order = [name for name in SPLITS if name in counts.columns] + ["all"]
    counts = counts[order].astype("int64")
    counts.index.name, counts.columns.name = "site", None
    return counts


def run_overview(results: Mapping[str, TrainResult]) -> pd.DataFrame:
    """Where each run comes from and how it was trained.

    Returns
    -------
    pandas.DataFrame
        Indexed by name; columns ``run`` (folder name), ``trained_now`` (trained by
        this call rather than found), ``epochs_run``, ``img_size``, ``filters``,
        ``batch_size``, ``precision``.
    """
    rows = {
        name: {
            "run": Path(result.run_dir).name,
            "trained_now": bool(result.trained),
            "epochs_run": int(result.epochs_run),
            "img_size": int(result.config.img_size),
            "filters": "-".join(map(str, result.config.resolved_filters)),
            "batch_size": int(result.config.batch_size),
            "precision": result.config.precision,
        }
        for name, result in results.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def per_image_table(result: TrainResult) -> pd.DataFrame:
    """The per-image scores of a run (``per_image.csv``).

    Returns
    -------
    pandas.DataFrame
        Columns ``split``, ``id``, ``site``, ``resolution``, ``postprocess``,
        ``dice``, ``iou``, ``hd95``.
    """
    path = Path(result.run_dir) / "per_image.csv"
    if not path.is_file():
        raise RunNotFoundError(f"{path} does not exist (the run did not finish scoring)")
    return pd.read_csv(path, dtype={"id": str})


def history_summary(result: TrainResult) -> dict[str, float]:
    """Best epoch of a run and its validation scores.

    Returns
    -------
    dict
        ``best_epoch`` (1-based), ``epochs`` (run), ``best_val_dice``,
        ``best_val_dice_loss`` (``1 - best_val_dice``, comparable with the original
        notebooks' validation Dice loss), ``final_learning_rate``.
    """
    history = result.history
    if history.empty or "val_dice" not in history:
        raise ValueError(f"the run in {result.run_dir} has no validation history")
    best = int(history["val_dice"].to_numpy().argmax())
    rate = history["learning_rate"].iloc[-1] if "learning_rate" in history else np.nan
    return {
        "best_epoch": best + 1,
        "epochs": len(history),
        "best_val_dice": float(history["val_dice"].iloc[best]),
        "best_val_dice_loss": float(1.0 - history["val_dice"].iloc[best]),
        "final_learning_rate": float(rate),
    }


def history_values(results: Mapping[str, TrainResult]) -> dict[str, float]:
    """:func:`history_summary` of several runs, keyed ``{name}_{key}`` for ``glue``.

    Names are lower-cased with dashes and spaces replaced by underscores
    (``"U-Net"`` -> ``u_net``).
    """
    return {
        f"{_slug(name)}_{key}": value
        for name, result in results.items()
        for key, value in history_summary(result).items()
    }


def table_values(table: pd.DataFrame, prefix: str) -> dict[str, Any]:
    """Flatten a table into ``{prefix}_{row}_{column}: value`` for ``glue``.

    Row labels (joined with ``_`` for a MultiIndex) and column names are
    lower-cased with dashes and spaces replaced by underscores. Numbers become
    Python ``int``/``float`` (``glue`` shows numpy scalars with their type name),
    other values ``str``.
    """
    out: dict[str, Any] = {}
    for label, row in table.iterrows():
        parts = label if isinstance(label, tuple) else (label,)
        stem = _slug("_".join([prefix, *map(str, parts)]))
        for column, value in row.items():
            out[f"{stem}_{_slug(column)}"] = _python_value(value)
    return out


def _python_value(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def parameter_counts(model: str, filters: Sequence[int] | None = None) -> int:
    """Number of weights of a U-Net or ResUNet (any input size: the nets are convolutional).

    Parameters
    ----------
    model : {"unet", "resunet"}
    filters : sequence of int, optional
        None: the original filters.

    Returns
    -------
    int
    """
    from cxrlib.seg.models import build_model

    kwargs: dict[str, Any] = {"input_shape": (256, 256, 1)}
    if filters is not None:
        kwargs["filters"] = tuple(filters)
    return int(build_model(model, **kwargs).count_params())


def parameter_table(results: Mapping[str, TrainResult]) -> pd.DataFrame:
    """Original and trained parameter counts per model.

    Parameters
    ----------
    results : mapping of str -> TrainResult
        Keyed by a display name (e.g. ``"U-Net"``).

    Returns
    -------
    pandas.DataFrame
        Indexed by name; columns ``model``, ``original_filters``,
        ``original_params`` (at 256 x 256 x 1), ``trained_filters``,
        ``trained_params``, ``img_size``.
    """
    from cxrlib.seg.train import DEFAULT_FILTERS

    rows = {}
    for name, result in results.items():
        config = result.config
        rows[name] = {
            "model": config.model,
            "original_filters": "-".join(map(str, DEFAULT_FILTERS[config.model])),
            "original_params": parameter_counts(config.model),
            "trained_filters": "-".join(map(str, config.resolved_filters)),
            "trained_params": parameter_counts(config.model, config.resolved_filters),
            "img_size": config.img_size,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def score_table(
    results: Mapping[str, TrainResult],
    *,
    split: str = "test",
    resolution: str = "original",
    postprocess: str = "raw",
) -> pd.DataFrame:
    """Per-site Dice, IoU (mean, 95 % bootstrap CI) and median HD95 of several runs.

    Parameters
    ----------
    results : mapping of str -> TrainResult
        Keyed by a display name.
    split : {"test", "val"}
    resolution : {"original", "model"}
    postprocess : {"raw", "postprocessed"}

    Returns
    -------
    pandas.DataFrame
        One row per (name, site), sites including ``all``; columns ``name``,
        ``site``, ``n``, ``dice_mean``, ``dice_low``, ``dice_high``, ``iou_mean``,
        ``iou_low``, ``iou_high``, ``hd95_median``.
    """
    frames = []
    for name, result in results.items():
        table = result.summary_table(split=split, resolution=resolution)
        if postprocess not in table.index.get_level_values("postprocess"):
            raise ValueError(f"postprocess must be 'raw' or 'postprocessed', got {postprocess!r}")
        part = table.xs(postprocess, level="postprocess").reset_index()
        part.insert(0, "name", name)
        frames.append(part)
    columns = ["name", "site", "n", "dice_mean", "dice_low", "dice_high"]
    columns += ["iou_mean", "iou_low", "iou_high", "hd95_median"]
    return pd.concat(frames, ignore_index=True)[columns]


def postprocess_table(
    result: TrainResult, *, split: str = "test", resolution: str = "original"
) -> pd.DataFrame:
    """Per-site scores of one run without and with post-processing.

    Returns
    -------
    pandas.DataFrame
        :func:`score_table` layout with ``name`` ``"raw"`` and ``"post-processed"``.
    """
    raw = score_table({"raw": result}, split=split, resolution=resolution)
    post = score_table(
        {"post-processed": result}, split=split, resolution=resolution, postprocess="postprocessed"
    )
    return pd.concat([raw, post], ignore_index=True)


def score_values(scores: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Flatten a :func:`score_table` into ``{key: value}`` for ``glue``.

    Keys are ``{prefix}{name}_{site}_{column}`` in lower case, with spaces and
    dashes replaced by underscores (``"U-Net"`` becomes ``u_net``), for the columns
    ``n``, ``dice_mean``, ``dice_low``, ``dice_high``, ``iou_mean``, ``iou_low``,
    ``iou_high`` and ``hd95_median``.
    """
    columns = ["n", "dice_mean", "dice_low", "dice_high", "iou_mean", "iou_low", "iou_high"]
    columns.append("hd95_median")
    out: dict[str, float] = {}
    for row in scores.to_dict(orient="records"):
        stem = _slug(f"{prefix}{row['name']}_{row['site']}")
        for column in columns:
            if column in row:
                value = row[column]
                out[f"{stem}_{column}"] = int(value) if column == "n" else float(value)
    return out


def _slug(text: str) -> str:
    return str(text).lower().replace("-", "_").replace(" ", "_")


def paired_difference(
    first: TrainResult,
    second: TrainResult,
    *,
    split: str = "test",
    resolution: str = "original",
    postprocess: str = "raw",
    metric: str = "dice",
    names: tuple[str, str] = ("first", "second"),
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean per-image difference ``second - first`` on the radiographs both scored.

    Both runs score the same test radiographs when they share the data, the seed
    and the split fractions; the difference is then paired (each radiograph is
    compared with itself), which is much more precise than comparing two
    separate intervals.

    Parameters
    ----------
    first, second : TrainResult
    split, resolution, postprocess : str
        Which per-image scores to compare.
    metric : {"dice", "iou", "hd95"}
    names : (str, str), default ("first", "second")
        Names of the two runs in the verdict.
    n_boot, seed
        See :func:`cxrlib.seg.metrics.bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Indexed by site (each site, then ``all``); columns ``n``, ``diff_mean``,
        ``diff_low``, ``diff_high`` (95 % bootstrap interval over radiographs) and
        ``verdict``: ``"<second name> better"``, ``"<first name> better"`` or
        ``"no clear difference"`` (the interval contains zero). For ``hd95`` lower
        is better.

    Raises
    ------
    ValueError
        When the runs share no scored radiograph.
    """
    from cxrlib.seg.metrics import bootstrap_ci

    if metric not in ("dice", "iou", "hd95"):
        raise ValueError(f"metric must be 'dice', 'iou' or 'hd95', got {metric!r}")
    keys = ["id", "site"]

    def pick(result: TrainResult) -> pd.DataFrame:
        rows = per_image_table(result)
        rows = rows[
            (rows["split"] == split)
            & (rows["resolution"] == resolution)
            & (rows["postprocess"] == postprocess)
        ]
        return rows[[*keys, metric]]

    both = pick(first).merge(pick(second), on=keys, suffixes=("_first", "_second"))
    if both.empty:
        raise ValueError(
            f"the runs in {first.run_dir} and {second.run_dir} share no {split} radiograph; "
            "train them with the same data, seed and split fractions"
        )
    both["diff"] = both[f"{metric}_second"] - both[f"{metric}_first"]
    better = 1.0 if metric != "hd95" else -1.0
    rows = {}
    groups = [(site, part) for site, part in both.groupby("site", sort=True)]
    for site, part in [*groups, ("all", both)]:
        mean, low, high = bootstrap_ci(part["diff"], n_boot=n_boot, seed=seed)
        if min(low * better, high * better) > 0:
            verdict = f"{names[1]} better"
        elif max(low * better, high * better) < 0:
            verdict = f"{names[0]} better"
        else:
            verdict = "no clear difference"
        rows[str(site)] = {
            "n": len(part),
            "diff_mean": mean,
            "diff_low": low,
            "diff_high": high,
            "verdict": verdict,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "site"
    return out


def speed_table(
    results: Mapping[str, TrainResult], inference: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Training (and inference) speed of several runs.

    Parameters
    ----------
    results : mapping of str -> TrainResult
    inference : mapping of str -> float, optional
        Inference images per second per name (:func:`inference_speed`).

    Returns
    -------
    pandas.DataFrame
        Indexed by name; columns ``epochs``, ``train_minutes``,
        ``train_images_per_s`` (steady state: without the first epoch, which
        includes graph compilation) and, with ``inference``,
        ``inference_images_per_s``.
    """
    rows = {}
    for name, result in results.items():
        timings = result.timings
        steady = timings.get("train_images_per_s_steady") or timings.get("train_images_per_s")
        fit = timings.get("fit_seconds")
        rows[name] = {
            "epochs": result.epochs_run,
            "train_minutes": float(fit) / 60 if fit is not None else np.nan,
            "train_images_per_s": float(steady) if steady is not None else np.nan,
        }
        if inference is not None:
            rows[name]["inference_images_per_s"] = float(inference.get(name, np.nan))
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- cases


def pick_cases(
    per_image: pd.DataFrame,
    n: int = 2,
    *,
    split: str = "test",
    resolution: str = "original",
    postprocess: str = "raw",
) -> pd.DataFrame:
    """The ``n`` best and ``n`` worst radiographs by Dice.

    Parameters
    ----------
    per_image : pandas.DataFrame
        :func:`per_image_table` output.
    n : int, default 2
        Cases of each kind (fewer when the split is small; never the same
        radiograph twice).
    split, resolution, postprocess : str
        Which scores to rank.

    Returns
    -------
    pandas.DataFrame
        Columns ``case`` ("best"/"worst"), ``id``, ``site``, ``dice``, ``iou``,
        ``hd95``; best first (highest Dice), then worst (lowest Dice).
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rows = per_image[
        (per_image["split"] == split)
        & (per_image["resolution"] == resolution)
        & (per_image["postprocess"] == postprocess)
    ]
    if rows.empty:
        raise ValueError(
            f"no per-image scores for split={split!r}, resolution={resolution!r}, "
            f"postprocess={postprocess!r}"
        )
    ranked = rows.sort_values(["dice", "id"], ascending=[False, True], kind="stable")
    count = min(int(n), len(ranked) // 2) or 1
    best = ranked.head(count).assign(case="best")
    worst = ranked.iloc[count:].tail(count).iloc[::-1].assign(case="worst")
    out = pd.concat([best, worst], ignore_index=True)
    return out[["case", "id", "site", "dice", "iou", "hd95"]]


def case_titles(cases: pd.DataFrame, prefix: str = "") -> list[str]:
    """Panel titles such as ``"U-Net · best · shenzhen · Dice 0.953"``."""
    return [
        f"{prefix}{row.case} · {row.site} · Dice {row.dice:.3f}"
        for row in cases.itertuples(index=False)
    ]


def case_arrays(
    model: Any,
    cases: pd.DataFrame,
    table: pd.DataFrame,
    *,
    display_size: int = 256,
    threshold: float = 0.5,
    postprocess: bool = False,
    postprocess_k: int = 2,
    equalize: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radiographs, reference masks and predicted masks of some cases, for a figure.

    The model predicts at its input size; the probability map is up-sampled to
    ``display_size`` (bilinear) and thresholded there, like the scoring at the
    original resolution does.

    Parameters
    ----------
    model : keras.Model
        A segmentation model (:func:`cxrlib.seg.inference.load_segmentation_model`).
    cases : pandas.DataFrame
        Column ``id`` (e.g. :func:`pick_cases` output).
    table : pandas.DataFrame
        The dataset table (``id``, ``image_path``, ``mask_path``).
    display_size : int, default 256
    threshold : float, default 0.5
    postprocess : bool, default False
        Keep the ``postprocess_k`` largest components and fill holes.
    postprocess_k : int, default 2
    equalize : {None, "hist", "clahe"}
        The model's input equalization (``TrainConfig.equalize``); the images
        shown are not equalized.

    Returns
    -------
    images : ndarray, float32, shape (N, display_size, display_size)
    truths, preds : ndarray, bool, shape (N, display_size, display_size)
    """
    from cxrlib.preprocess import load_arrays, resize_image
    from cxrlib.seg.inference import model_input_size, predict_masks
    from cxrlib.seg.postprocess import postprocess_mask

    by_id = table.assign(id=table["id"].astype(str)).set_index("id")
    ids = cases["id"].astype(str).tolist()
    missing = [i for i in ids if i not in by_id.index]
    if missing:
        raise ValueError(f"case id(s) {missing} are not in the dataset table")
    rows = by_id.loc[ids].reset_index()
    size = model_input_size(model)
    at_model = load_arrays(
        rows, size=size, equalize=equalize, cache_dir=False, n_jobs=1, progress=False
    )
    shown = load_arrays(rows, size=display_size, cache_dir=False, n_jobs=1, progress=False)
    probs = predict_masks(model, at_model.images, batch_size=max(1, len(rows)))
    preds = np.stack(
        [resize_image(p[..., 0], display_size, method="bilinear") > threshold for p in probs]
    )
    if postprocess:
        preds = postprocess_mask(preds, k=postprocess_k, fill=True)
    return shown.images[..., 0], shown.masks[..., 0], np.asarray(preds, dtype=bool)


def inference_speed(
    model: Any, images: np.ndarray, *, batch_size: int = 8, repeats: int = 3
) -> float:
    """Images per second of :func:`cxrlib.seg.inference.predict_masks` (after a warm-up).

    Parameters
    ----------
    model : keras.Model
    images : ndarray, float32, shape (N, H, W) or (N, H, W, 1)
        At the model's input size.
    batch_size : int, default 8
    repeats : int, default 3
        The best of ``repeats`` timed passes over ``images`` is reported.

    Returns
    -------
    float
    """
    from cxrlib.seg.inference import predict_masks

    if len(images) == 0:
        raise ValueError("inference_speed needs at least one image")
    if not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    predict_masks(model, images[:batch_size], batch_size=batch_size)  # trace the graph
    best = np.inf
    for _ in range(int(repeats)):
        start = time.perf_counter()
        predict_masks(model, images, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return float(len(images) / best)


def measure_inference(
    results: Mapping[str, TrainResult],
    table: pd.DataFrame,
    *,
    n: int = 16,
    batch_size: int = 8,
    repeats: int = 3,
) -> dict[str, float]:
    """Inference images per second of each run's model on ``n`` of its test radiographs.

    The radiographs are loaded at each model's input size first (reading and
    resizing are not timed).

    Returns
    -------
    dict of str -> float
        Keyed like ``results``.
    """
    from cxrlib.preprocess import load_arrays

    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    speeds = {}
    for name, result in results.items():
        ids = result.split.loc[result.split["split"] == "test", "id"].astype(str)
        if ids.empty:
            ids = result.split["id"].astype(str)
        rows = table[table["id"].astype(str).isin(set(ids.head(n)))]
        config = result.config
        arrays = load_arrays(
            rows,
            size=config.img_size,
            equalize=config.equalize,
            cache_dir=False,
            n_jobs=1,
            progress=False,
        )
        speeds[name] = inference_speed(
            result.load_model(), arrays.images, batch_size=batch_size, repeats=repeats
        )
    return speeds


def case_panels(
    results: Mapping[str, TrainResult],
    table: pd.DataFrame,
    *,
    n: int = 2,
    display_size: int = 256,
    postprocess: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Best and worst test cases of one or more runs, ready for
    :func:`cxrlib.book.plots_seg.outline_cases` (one row of panels per run).

    Parameters
    ----------
    results : mapping of str -> TrainResult
    table : pandas.DataFrame
        The dataset table.
    n : int, default 2
        Best and worst cases per run.
    display_size : int, default 256
    postprocess : bool, default False
        Rank and show the post-processed predictions instead of the raw ones.

    Returns
    -------
    images : ndarray, float32, shape (M, display_size, display_size)
    truths, preds : ndarray, bool, shape (M, display_size, display_size)
    titles : list of str
    """
    parts = []
    prefix_names = len(results) > 1
    for name, result in results.items():
        cases = pick_cases(
            per_image_table(result), n, postprocess="postprocessed" if postprocess else "raw"
        )
        model = result.load_model()
        arrays = case_arrays(
            model,
            cases,
            table,
            display_size=display_size,
            threshold=result.config.threshold,
            postprocess=postprocess,
            postprocess_k=result.config.postprocess_k,
            equalize=result.config.equalize,
        )
        titles = case_titles(cases, f"{name} · " if prefix_names else "")
        parts.append((*arrays, titles))
    images = np.concatenate([p[0] for p in parts])
    truths = np.concatenate([p[1] for p in parts])
    preds = np.concatenate([p[2] for p in parts])
    return images, truths, preds, [t for p in parts for t in p[3]]
