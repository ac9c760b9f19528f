"""What a segmentation run produced: its result, its files read back, its scores.

* :class:`TrainResult` is what :func:`cxrlib.seg.train.train_segmentation` returns;
  :func:`read_run_files` rebuilds it from a finished run folder without training
  (:func:`read_history` reads ``history.csv``).
* :func:`score_predictions` scores predicted probabilities per image (Dice, IoU, HD95)
  at the model size and at each image's original resolution, raw and post-processed;
  :func:`summaries_to_dict` nests the per-site summaries of those scores as
  ``metrics.json`` stores them; :func:`evaluate_model` scores a model on a run's validation
  and test images (refusing non-finite predictions); :func:`score_on_table` scores a
  model on any dataset table with masks (another site, another dataset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.data.imageio import read_mask
from cxrlib.runs import finite, read_json
from cxrlib.seg.train_config import TrainConfig

__all__ = [
    "TrainResult",
    "read_run_files",
    "read_history",
    "score_predictions",
    "summaries_to_dict",
    "evaluate_model",
    "score_on_table",
]


@dataclass
class TrainResult:
    """What :func:`cxrlib.seg.train.train_segmentation` produced (or found in the run folder).

    Attributes
    ----------
    run_dir : pathlib.Path
    model_path : pathlib.Path
        ``run_dir/model.keras``.
    config : TrainConfig
    key : str
        The run's SHA-256 key.
    trained : bool
        False when a finished run with the same key was reused.
    resumed : bool
        True when an interrupted run was continued: training resumed from
        ``run_dir/backup``, or training had finished and only the model was rebuilt or
        scored (``timings["recovered_from"]``).
    epochs_run : int
        Epochs in the history (all epochs, also those before a resume).
    history : pandas.DataFrame
        One row per epoch (``epoch``, ``loss``, ``dice``, ``val_loss``,
        ``val_dice``, ..., ``learning_rate``).
    split : pandas.DataFrame
        ``id, site, label, split`` of every image with a mask.
    metrics : dict
        The content of ``metrics.json`` (see :func:`cxrlib.seg.train.train_segmentation`).
    timings : dict
        Seconds and images per second (``train_images_per_s``).
    """

    run_dir: Path
    model_path: Path
    config: TrainConfig
    key: str
    trained: bool
    resumed: bool
    epochs_run: int
    history: pd.DataFrame
    split: pd.DataFrame
    metrics: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)

    def summary_table(self, split: str = "test", resolution: str = "original") -> pd.DataFrame:
        """Scores per site as a table.

        Parameters
        ----------
        split : {"test", "val"}
        resolution : {"original", "model"}

        Returns
        -------
        pandas.DataFrame
            Rows ``(site, postprocess)``; columns ``n``, ``dice_mean``,
            ``dice_low``, ``dice_high``, ``iou_mean``, ..., ``hd95_median``.
        """
        scores = self.metrics.get(split)
        if not scores:
            raise ValueError(f"run has no {split!r} scores (splits: {list(self.metrics)})")
        rows = []
        for post, sites in scores[resolution].items():
            for site, values in sites.items():
                rows.append({"site": site, "postprocess": post, **values})
        return pd.DataFrame(rows).set_index(["site", "postprocess"])

    def load_model(self) -> Any:
        """Load ``model.keras`` (see :func:`cxrlib.seg.inference.load_segmentation_model`)."""
        from cxrlib.seg.inference import load_segmentation_model

        return load_segmentation_model(self.model_path)


def read_run_files(run_dir: Path, config: TrainConfig, key: str) -> TrainResult:
    """The :class:`TrainResult` of a finished run folder, read without training.

    Reads ``history.csv``, ``split.csv`` and ``metrics.json`` (scores and timings);
    ``trained`` and ``resumed`` are False. The caller has checked that the run is
    finished and parsed its ``config`` and ``key``
    (:func:`cxrlib.book.seg_runs.load_run` does both for any run folder).
    """
    metrics = read_json(run_dir / "metrics.json") or {}
    history = read_history(run_dir / "history.csv")
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / "model.keras",
        config=config,
        key=key,
        trained=False,
        resumed=False,
        epochs_run=len(history),
        history=history,
        split=pd.read_csv(run_dir / "split.csv", dtype={"id": str}),
        metrics=metrics.get("scores", {}),
        timings=metrics.get("timings", {}),
    )


def read_history(history_csv: Path) -> pd.DataFrame:
    """Read a run's ``history.csv``; keep the last row of a repeated epoch (after a resume)."""
    if not history_csv.is_file():
        return pd.DataFrame(columns=["epoch"])
    table = pd.read_csv(history_csv)
    if "epoch" in table:
        table = table.drop_duplicates("epoch", keep="last").sort_values("epoch")
    if "lr" in table and "learning_rate" not in table:
        table = table.rename(columns={"lr": "learning_rate"})
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- scoring


def _upsample_probs(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from cxrlib.preprocess import resize_image

    plane = probs[..., 0] if probs.ndim == 3 else probs
    if plane.shape == tuple(shape):
        return plane.astype(np.float32, copy=False)
    return resize_image(plane, tuple(int(s) for s in shape), method="area")


def score_predictions(
    probs: np.ndarray,
    split: pd.DataFrame,
    masks_model: np.ndarray,
    *,
    threshold: float = 0.5,
    postprocess_k: int = 2,
    fill_holes: bool = True,
    original: bool = True,
) -> pd.DataFrame:
    """Per-image Dice, IoU and HD95 at the model size and at the original resolution.

    Parameters
    ----------
    probs : ndarray, float32, shape (N, S, S, 1)
        Predicted lung probabilities at the model size.
    split : pandas.DataFrame
        N rows with ``id``, ``site`` and ``mask_path`` (for the original masks).
    masks_model : ndarray, bool, shape (N, S, S, 1)
        Reference masks at the model size.
    threshold : float, default 0.5
    postprocess_k : int, default 2
        Components kept by :func:`cxrlib.seg.postprocess.postprocess_mask`.
    fill_holes : bool, default True
    original : bool, default True
        Also score at each image's original resolution: the probability map is
        upsampled to the original mask's size (area/bilinear resampling),
        thresholded and compared with the original mask (HD95 in original pixels).

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``site``, ``resolution`` (``"model"``/``"original"``),
        ``postprocess`` (``"raw"``/``"postprocessed"``), ``dice``, ``iou``,
        ``hd95``.
    """
    from cxrlib.seg.metrics import per_image_scores
    from cxrlib.seg.postprocess import postprocess_mask

    if len(probs) != len(split) or len(masks_model) != len(split):
        raise ValueError(
            f"probs ({len(probs)}), masks ({len(masks_model)}) and split rows ({len(split)}) "
            "must have the same length"
        )
    ids, sites = split["id"].astype(str).tolist(), split["site"].astype(str).tolist()
    frames = []

    def add(preds: Any, truths: Any, resolution: str, post: str) -> None:
        scores = per_image_scores(preds, truths, ids, sites)
        scores.insert(2, "resolution", resolution)
        scores.insert(3, "postprocess", post)
        frames.append(scores)

    raw = probs > threshold
    add(raw, masks_model, "model", "raw")
    add(
        postprocess_mask(raw, k=postprocess_k, fill=fill_holes),
        masks_model,
        "model",
        "postprocessed",
    )
    if original:
        rows = {"raw": [], "postprocessed": []}
        for i, mask_path in enumerate(split["mask_path"].tolist()):
            truth = read_mask(mask_path)  # one file, or several merged (left + right)
            pred = _upsample_probs(probs[i], truth.shape) > threshold
            cleaned = postprocess_mask(pred, k=postprocess_k, fill=fill_holes)
            for post, mask in (("raw", pred), ("postprocessed", cleaned)):
                one = per_image_scores(mask[None], truth[None], [ids[i]], [sites[i]])
                rows[post].append(one)
        for post, parts in rows.items():
            scores = pd.concat(parts, ignore_index=True)
            scores.insert(2, "resolution", "original")
            scores.insert(3, "postprocess", post)
            frames.append(scores)
    return pd.concat(frames, ignore_index=True)


def summaries_to_dict(per_image: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Nest :func:`cxrlib.seg.metrics.summarize_by_site` tables for ``metrics.json``.

    Parameters
    ----------
    per_image : pandas.DataFrame
        Output of :func:`score_predictions` with a ``split`` column.

    Returns
    -------
    dict
        ``{split: {resolution: {postprocess: {site: {n, dice_mean, dice_low,
        dice_high, iou_mean, iou_low, iou_high, hd95_median, hd95_undefined}}}}}``
        with ``site`` including ``"all"``.
    """
    from cxrlib.seg.metrics import summarize_by_site

    out: dict[str, Any] = {}
    for (split, resolution, post), group in per_image.groupby(
        ["split", "resolution", "postprocess"], sort=True
    ):
        table = summarize_by_site(group, n_boot=n_boot, seed=seed)
        sites = {
            str(site): {name: finite(value) for name, value in row.items()}
            for site, row in table.to_dict(orient="index").items()
        }
        out.setdefault(split, {}).setdefault(resolution, {})[post] = sites
    return out


def evaluate_model(
    model: Any, config: TrainConfig, split: pd.DataFrame, loaded: Any
) -> tuple[pd.DataFrame, float]:
    """Score ``model`` on the validation and test rows of ``split`` (:func:`score_predictions`).

    Parameters
    ----------
    model : keras.Model
    config : TrainConfig
        Its threshold, post-processing and batch size are used.
    split : pandas.DataFrame
        The run's split (``split`` column, ``mask_path`` for the original masks).
    loaded : cxrlib.preprocess arrays
        ``images`` and ``masks`` at the model size, in the rows of ``split``.

    Returns
    -------
    (pandas.DataFrame, float)
        The per-image scores with a ``split`` column, and the seconds it took.

    Raises
    ------
    cxrlib.seg.checkpoints.TrainingError
        The model predicts non-finite probabilities (training diverged).
    """
    from cxrlib.seg.checkpoints import TrainingError
    from cxrlib.seg.inference import predict_masks

    start = time.perf_counter()
    frames = []
    for name in ("val", "test"):
        rows = (split["split"] == name).to_numpy()
        if not rows.any():
            continue
        probs = predict_masks(model, loaded.images[rows], batch_size=config.batch_size)
        bad = int((~np.isfinite(probs)).reshape(len(probs), -1).any(axis=1).sum())
        if bad:
            raise TrainingError(
                f"the trained model predicts non-finite probabilities for {bad} of "
                f"{len(probs)} {name} images (training diverged); the run is marked failed"
            )
        scores = score_predictions(
            probs,
            split.loc[rows].reset_index(drop=True),
            loaded.masks[rows],
            threshold=config.threshold,
            postprocess_k=config.postprocess_k,
            fill_holes=config.fill_holes,
        )
        scores.insert(0, "split", name)
        frames.append(scores)
    return pd.concat(frames, ignore_index=True), time.perf_counter() - start


def score_on_table(
    model: Any,
    config: TrainConfig,
    rows: pd.DataFrame,
    *,
    original: bool = True,
    cache_dir: str | Path | bool | None = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Score ``model`` on every row of a dataset table (images it may never have seen).

    Parameters
    ----------
    model : keras.Model
        A segmentation model whose input side is ``config.img_size``.
    config : TrainConfig
        Its input size, equalization, batch size, threshold and post-processing are used.
    rows : pandas.DataFrame
        Rows of :func:`cxrlib.data.datasets.scan_dataset`'s table that have a mask
        (``id``, ``site``, ``image_path``, ``mask_path``).
    original : bool, default True
        Also score at each image's original resolution (see :func:`score_predictions`).
    cache_dir, progress
        Passed to :func:`cxrlib.preprocess.load_arrays`.

    Returns
    -------
    pandas.DataFrame
        :func:`score_predictions`'s per-image table for ``rows``.

    Raises
    ------
    ValueError
        A row without a mask (the message names its id).
    """
    from cxrlib.preprocess import load_arrays
    from cxrlib.seg.inference import predict_masks

    rows = rows.reset_index(drop=True)
    missing = rows.loc[rows["mask_path"].isna(), "id"].astype(str).tolist()
    if missing:
        raise ValueError(
            f"score_on_table needs a mask for every row; {len(missing)} have none, "
            f"e.g. {missing[:3]}"
        )
    arrays = load_arrays(
        rows,
        size=config.img_size,
        equalize=config.equalize,
        cache_dir=cache_dir,
        progress=progress,
    )
    probs = predict_masks(model, arrays.images, batch_size=config.batch_size)
    return score_predictions(
        probs,
        rows,
        arrays.masks,
        threshold=config.threshold,
        postprocess_k=config.postprocess_k,
        fill_holes=config.fill_holes,
        original=original,
    )
