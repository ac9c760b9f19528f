"""Comparison tables of segmentation runs: splits, sizes, histories, scores, speed.

Every function takes one or more :class:`~cxrlib.seg.results.TrainResult` (found or trained by
:mod:`cxrlib.book.seg_runs`) and returns a pandas table or a dict of numbers:

* :func:`split_counts` and :func:`run_overview` say what each run was trained on and how;
* :func:`parameter_counts` and :func:`parameter_table` count the weights;
* :func:`history_summary` and :func:`history_table` give the best epoch and its scores;
* :func:`score_table`, :func:`postprocess_table` and :func:`paired_difference` compare the
  test scores, with bootstrap intervals from :mod:`cxrlib.stats`;
* :func:`speed_table` compares training and inference speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.book.seg_runs import RunNotFoundError, by_architecture
from cxrlib.seg.results import TrainResult
from cxrlib.stats import bootstrap_ci

__all__ = [
    "split_counts",
    "run_overview",
    "per_image_table",
    "history_summary",
    "history_table",
    "parameter_counts",
    "parameter_table",
    "score_table",
    "postprocess_table",
    "paired_difference",
    "differences_by_model",
    "speed_table",
]


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


def history_table(results: Mapping[str, TrainResult]) -> pd.DataFrame:
    """:func:`history_summary` of several runs, one row per name (columns: its keys)."""
    rows = {name: history_summary(result) for name, result in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


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
    from cxrlib.seg.train_config import DEFAULT_FILTERS

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


def paired_difference(
    first: TrainResult,
    second: TrainResult,
    *,
    split: str = "test",
    resolution: str = "original",
    postprocess: str = "raw",
    metric: str = "dice",
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
    n_boot, seed
        See :func:`cxrlib.stats.bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Indexed by site (each site, then ``all``); columns ``n``, ``diff_mean``,
        ``diff_low``, ``diff_high`` (95 % bootstrap interval over radiographs) and
        ``better`` (int): 1 when the interval shows ``second`` better, -1 when it shows
        ``first`` better, 0 when it contains zero. For ``hd95`` lower is better.

    Raises
    ------
    ValueError
        When the runs share no scored radiograph.
    """
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
        bounds = (low * better, high * better)
        rows[str(site)] = {
            "n": len(part),
            "diff_mean": mean,
            "diff_low": low,
            "diff_high": high,
            "better": int(min(bounds) > 0) - int(max(bounds) < 0),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "site"
    return out


def differences_by_model(
    baselines: Mapping[str, TrainResult],
    others: Mapping[str, TrainResult],
    **options: Any,
) -> pd.DataFrame:
    """Paired differences ``other - baseline`` for each run of ``others``, by architecture.

    Each run of ``others`` is compared with the run of ``baselines`` that trained the same
    architecture (``config.model``), e.g. the original networks against the recipe's.

    Parameters
    ----------
    baselines, others : mapping of str -> TrainResult
    **options
        Passed to :func:`paired_difference` (``metric``, ``split``, ``n_boot``, ...).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(model, site)`` (``model`` the architecture key, in the order of
        ``others``); the columns of :func:`paired_difference`.

    Raises
    ------
    ValueError
        When ``baselines`` has no run of an architecture of ``others``.
    """
    by_model = by_architecture(baselines)
    parts = {}
    for other in others.values():
        model = other.config.model
        if model not in by_model:
            raise ValueError(f"no baseline run of {model!r} (baselines of {sorted(by_model)})")
        parts[model] = paired_difference(by_model[model], other, **options)
    if not parts:
        raise ValueError("others holds no run to compare")
    return pd.concat(parts, names=["model"])


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
