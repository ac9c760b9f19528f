"""Cross-site generalisation: train on the radiographs of one hospital, test on another's.

The two public sets come from different hospitals, machines and populations
(Montgomery County, USA; Shenzhen, China). A model trained on one of them only is
scored

* on the held-out **test split of its own site** (radiographs it never saw, same
  hospital), and
* on **every radiograph with a mask of the other site** (a hospital it never saw).

The drop from the first to the second score measures how much of what the model
learned is specific to one hospital. Each site's model is trained with
:func:`cxrlib.seg.train.train_segmentation` (load-or-train: re-running is cheap) on a
table that holds only that site's rows, so the split, the augmentation and the model
selection never see the other site.

Files written into ``run_dir``: one training run per (model, training site) in
``run_dir/<model>_<site>/``, ``cross_site.csv`` (the summary table) and
``cross_site_per_image.csv`` (the per-image scores behind it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlib.book.seg_runs import by_architecture
from cxrlib.data.imageio import atomic_write_bytes
from cxrlib.seg.results import TrainResult, score_on_table
from cxrlib.seg.train import train_segmentation
from cxrlib.seg.train_config import TrainConfig
from cxrlib.stats import bootstrap_ci

__all__ = [
    "CROSS_SITE_COLUMNS",
    "cross_site_experiment",
    "configs_from_runs",
    "site_run_dir",
    "transfer_table",
    "site_drop",
]

#: Columns of the table returned by :func:`cross_site_experiment`.
CROSS_SITE_COLUMNS: tuple[str, ...] = (
    "train_site",
    "test_site",
    "model",
    "n_train",
    "n_test",
    "dice_mean",
    "dice_low",
    "dice_high",
    "iou_mean",
    "iou_low",
    "iou_high",
    "hd95_median",
)


def site_run_dir(run_dir: str | os.PathLike[str], model: str, site: str) -> Path:
    """Folder of the run that trains ``model`` on ``site`` only."""
    return Path(run_dir) / f"{model}_{site}"


def _masked_table(data: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        table = data
    else:
        from cxrlib.data.datasets import scan_dataset

        table = scan_dataset(data).table
    missing = [c for c in ("id", "site", "image_path", "mask_path") if c not in table]
    if missing:
        raise ValueError(f"the dataset table lacks column(s) {missing}")
    return table[table["mask_path"].notna()].reset_index(drop=True)


def _check_sites(table: pd.DataFrame, sites: Sequence[str]) -> tuple[str, ...]:
    sites = tuple(str(s) for s in sites)
    if len(sites) < 2 or len(set(sites)) != len(sites):
        raise ValueError(f"sites must name at least two different sites, got {sites!r}")
    available = sorted(table["site"].astype(str).unique())
    absent = [s for s in sites if s not in available]
    if absent:
        raise ValueError(
            f"site(s) {absent} have no radiographs with a lung mask in the dataset "
            f"(sites with masks: {available})"
        )
    return sites


def _summary(
    scores: pd.DataFrame, train_site: str, test_site: str, result: TrainResult, seed: int
) -> dict:
    dice = bootstrap_ci(scores["dice"], seed=seed)
    iou = bootstrap_ci(scores["iou"], seed=seed)
    hd95 = scores["hd95"].to_numpy(dtype=float)
    hd95 = hd95[np.isfinite(hd95)]
    return {
        "train_site": train_site,
        "test_site": test_site,
        "model": result.config.model,
        "n_train": int((result.split["split"] == "train").sum()),
        "n_test": len(scores),
        "dice_mean": dice[0],
        "dice_low": dice[1],
        "dice_high": dice[2],
        "iou_mean": iou[0],
        "iou_low": iou[1],
        "iou_high": iou[2],
        "hd95_median": float(np.median(hd95)) if hd95.size else float("nan"),
    }


def _own_test_scores(result: TrainResult, resolution: str, postprocess: str) -> pd.DataFrame:
    per_image = pd.read_csv(Path(result.run_dir) / "per_image.csv", dtype={"id": str})
    return per_image[
        (per_image["split"] == "test")
        & (per_image["resolution"] == resolution)
        & (per_image["postprocess"] == postprocess)
    ]


def _other_site_scores(
    result: TrainResult,
    rows: pd.DataFrame,
    resolution: str,
    postprocess: str,
    cache_dir: str | os.PathLike[str] | bool | None,
) -> pd.DataFrame:
    scores = score_on_table(
        result.load_model(),
        result.config,
        rows,
        original=resolution == "original",
        cache_dir=cache_dir,
    )
    return scores[(scores["resolution"] == resolution) & (scores["postprocess"] == postprocess)]


@contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """Hide TensorFlow's retracing warnings: each of the many models traces its own graph."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write_bytes(path, table.to_csv(index=False).encode("utf-8"))


def cross_site_experiment(
    data_dir: str | os.PathLike[str] | pd.DataFrame,
    config: TrainConfig | Sequence[TrainConfig],
    run_dir: str | os.PathLike[str],
    *,
    sites: Sequence[str] = ("montgomery", "shenzhen"),
    resolution: str = "original",
    postprocess: str = "raw",
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | bool | None = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Train on each site alone; score on its own test split and on the other sites.

    Parameters
    ----------
    data_dir : path or pandas.DataFrame
        A dataset folder or its table (:func:`cxrlib.data.datasets.scan_dataset`); only
        radiographs with a lung mask are used.
    config : TrainConfig or sequence of TrainConfig
        The training configuration; several configurations (e.g. one per
        architecture) run the experiment once each.
    run_dir : path
        One run per (model, site) goes to ``run_dir/<model>_<site>``; the tables to
        ``run_dir/cross_site.csv`` and ``run_dir/cross_site_per_image.csv``.
    sites : sequence of str, default ("montgomery", "shenzhen")
        At least two sites with masks.
    resolution : {"original", "model"}, default "original"
        Score at each radiograph's original resolution (the probability map is
        up-sampled) or at the model's input size.
    postprocess : {"raw", "postprocessed"}, default "raw"
        Score the thresholded prediction as is, or after keeping the two largest
        components and filling holes.
    overwrite : bool, default False
        Replace runs in ``run_dir`` trained with another configuration or data.
    cache_dir, progress
        Passed to :func:`cxrlib.seg.train.train_segmentation` and
        :func:`cxrlib.preprocess.load_arrays`.

    Returns
    -------
    pandas.DataFrame
        One row per (model, training site, test site) with the columns of
        :data:`CROSS_SITE_COLUMNS`: the training radiographs (``n_train``), the
        radiographs scored (``n_test``: the own site's test split when
        ``test_site == train_site``, else every masked radiograph of
        ``test_site``), mean Dice and IoU with 95 % bootstrap intervals, and the
        median HD95 in pixels.

    Raises
    ------
    ValueError
        For an unknown site, a site without masks, or bad ``resolution`` /
        ``postprocess`` values.
    """
    if resolution not in ("original", "model"):
        raise ValueError(f"resolution must be 'original' or 'model', got {resolution!r}")
    if postprocess not in ("raw", "postprocessed"):
        raise ValueError(f"postprocess must be 'raw' or 'postprocessed', got {postprocess!r}")
    configs = [config] if isinstance(config, TrainConfig) else list(config)
    if not configs or not all(isinstance(c, TrainConfig) for c in configs):
        raise ValueError("config must be a TrainConfig or a non-empty sequence of them")
    table = _masked_table(data_dir)
    sites = _check_sites(table, sites)
    run_dir = Path(run_dir)
    with _quiet_tensorflow():
        rows, per_image = _run_all(
            table, configs, sites, run_dir, resolution, postprocess, overwrite, cache_dir, progress
        )
    summary = pd.DataFrame(rows, columns=list(CROSS_SITE_COLUMNS))
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(run_dir / "cross_site.csv", summary)
    scores = pd.concat(per_image, ignore_index=True) if per_image else pd.DataFrame()
    _write_csv(run_dir / "cross_site_per_image.csv", scores)
    return summary


def _run_all(
    table: pd.DataFrame,
    configs: Sequence[TrainConfig],
    sites: Sequence[str],
    run_dir: Path,
    resolution: str,
    postprocess: str,
    overwrite: bool,
    cache_dir: str | os.PathLike[str] | bool | None,
    progress: bool,
) -> tuple[list[dict], list[pd.DataFrame]]:
    """Train each (config, site) and score it on every site: summary rows and per-image rows."""
    rows, per_image = [], []
    for one in configs:
        for train_site in sites:
            result = train_segmentation(
                table[table["site"] == train_site],
                one,
                site_run_dir(run_dir, one.model, train_site),
                overwrite=overwrite,
                cache_dir=cache_dir,
                progress=progress,
            )
            for test_site in sites:
                if test_site == train_site:
                    scores = _own_test_scores(result, resolution, postprocess)
                else:
                    others = table[table["site"] == test_site].reset_index(drop=True)
                    scores = _other_site_scores(result, others, resolution, postprocess, cache_dir)
                if scores.empty:
                    continue
                rows.append(_summary(scores, train_site, test_site, result, one.seed))
                per_image.append(
                    scores[["id", "site", "dice", "iou", "hd95"]].assign(
                        model=one.model, train_site=train_site
                    )
                )
    return rows, per_image


def configs_from_runs(
    results: Mapping[str, TrainResult], models: Sequence[str], *, epochs: int | None = None
) -> list[TrainConfig]:
    """The configurations of earlier runs, for a cross-site experiment that mirrors them.

    Parameters
    ----------
    results : mapping of str -> TrainResult
        Runs (any keys, e.g. display names); each model is looked up by
        ``result.config.model``.
    models : sequence of str
        Architectures to take, in order (``"unet"``, ``"resunet"``).
    epochs : int, optional
        Replace the number of epochs (None keeps the runs' own).

    Returns
    -------
    list of TrainConfig

    Raises
    ------
    ValueError
        When no run trained one of ``models``.
    """
    by_model = {model: result.config for model, result in by_architecture(results).items()}
    configs = []
    for model in models:
        key = str(model).lower()
        if key not in by_model:
            raise ValueError(f"no run of model {model!r} (runs of: {sorted(by_model)})")
        config = by_model[key]
        configs.append(config if epochs is None else dataclasses.replace(config, epochs=epochs))
    return configs


def _model_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    rows = table[table["model"] == model]
    if rows.empty:
        raise ValueError(f"the cross-site table has no rows for model {model!r}")
    return rows


def transfer_table(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The rows of one model, indexed ``"{train_site}_to_{test_site}"``.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`cross_site_experiment` table.
    model : str
        ``"unet"`` or ``"resunet"``.

    Returns
    -------
    pandas.DataFrame
        Columns ``n_train``, ``n_test``, ``dice_mean``, ``dice_low``, ``dice_high`` and
        ``hd95_median``.
    """
    rows = _model_rows(table, model)
    index = rows["train_site"].astype(str) + "_to_" + rows["test_site"].astype(str)
    columns = ["n_train", "n_test", "dice_mean", "dice_low", "dice_high", "hd95_median"]
    return rows[columns].set_axis(index.to_numpy(), axis=0)


def site_drop(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """How much Dice one model loses at each test site when trained elsewhere.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`cross_site_experiment` table.
    model : str

    Returns
    -------
    pandas.DataFrame
        Indexed by test site (those scored by the model trained there and by one trained
        elsewhere): ``own`` (Dice of the model trained on that site, on its own test split),
        ``other`` (mean Dice of the models trained on other sites) and ``drop``
        (``own - other``).
    """
    rows = _model_rows(table, model)
    out = {}
    for test_site, part in rows.groupby("test_site", sort=True):
        own = part.loc[part["train_site"] == test_site, "dice_mean"]
        other = part.loc[part["train_site"] != test_site, "dice_mean"]
        if len(own) and len(other):
            own_dice, other_dice = float(own.iloc[0]), float(other.mean())
            out[test_site] = {"own": own_dice, "other": other_dice, "drop": own_dice - other_dice}
    return pd.DataFrame.from_dict(out, orient="index", columns=["own", "other", "drop"])
