"""Best and worst test radiographs of segmentation runs, and how fast the models predict.

* :func:`pick_cases` ranks the test radiographs of a run by Dice;
* :func:`case_arrays` and :func:`case_panels` return them with their reference and
  predicted masks for an overlay figure (:func:`cxrlib.book.plots_seg.outline_cases`);
* :func:`inference_speed` and :func:`measure_inference` time the prediction of a model in
  images per second.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.book.seg_tables import per_image_table
from cxrlib.seg.results import TrainResult

__all__ = [
    "pick_cases",
    "random_cases",
    "case_titles",
    "case_arrays",
    "case_panels",
    "inference_speed",
    "measure_inference",
]


def _scored_rows(
    per_image: pd.DataFrame, n: Any, split: str, resolution: str, postprocess: str
) -> pd.DataFrame:
    """The per-image scores of one split, resolution and post-processing; ``n`` checked."""
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
    return rows


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
    rows = _scored_rows(per_image, n, split, resolution, postprocess)
    ranked = rows.sort_values(["dice", "id"], ascending=[False, True], kind="stable")
    count = min(int(n), len(ranked) // 2) or 1
    best = ranked.head(count).assign(case="best")
    worst = ranked.iloc[count:].tail(count).iloc[::-1].assign(case="worst")
    out = pd.concat([best, worst], ignore_index=True)
    return out[["case", "id", "site", "dice", "iou", "hd95"]]


def random_cases(
    per_image: pd.DataFrame,
    n: int = 4,
    *,
    seed: int = 0,
    split: str = "test",
    resolution: str = "original",
    postprocess: str = "raw",
) -> pd.DataFrame:
    """``n`` radiographs drawn at random from a split, for an unselected gallery.

    Parameters
    ----------
    per_image : pandas.DataFrame
        :func:`per_image_table` output.
    n : int, default 4
        Cases to draw (all of the split when it holds fewer).
    seed : int, default 0
        The same seed draws the same radiographs, whichever run scored them.
    split, resolution, postprocess : str
        Which scores to show.

    Returns
    -------
    pandas.DataFrame
        Columns ``case`` ("random"), ``id``, ``site``, ``dice``, ``iou``, ``hd95``, in the
        order of ``id``.
    """
    rows = _scored_rows(per_image, n, split, resolution, postprocess)
    ids = np.sort(rows["id"].astype(str).unique())
    chosen = np.sort(np.random.default_rng(seed).permutation(ids)[: int(n)])
    out = rows.assign(id=rows["id"].astype(str)).set_index("id").loc[chosen].reset_index()
    return out.assign(case="random")[["case", "id", "site", "dice", "iou", "hd95"]]


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
    pick: str = "extremes",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Test cases of one or more runs, ready for
    :func:`cxrlib.book.plots_seg.outline_cases` (one row of panels per run).

    ``pick="extremes"`` shows the ``n`` best and ``n`` worst test radiographs of each run
    (:func:`pick_cases`), ``pick="random"`` the same ``n`` radiographs drawn at random for
    every run (:func:`random_cases`), an unselected view of typical results.

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
    pick : {"extremes", "random"}, default "extremes"
    seed : int, default 0
        The random draw of ``pick="random"``.

    Returns
    -------
    images : ndarray, float32, shape (M, display_size, display_size)
    truths, preds : ndarray, bool, shape (M, display_size, display_size)
    titles : list of str
    """
    if pick not in ("extremes", "random"):
        raise ValueError(f"pick must be 'extremes' or 'random', got {pick!r}")
    parts = []
    prefix_names = len(results) > 1
    for name, result in results.items():
        kind = "postprocessed" if postprocess else "raw"
        if pick == "random":
            cases = random_cases(per_image_table(result), n, seed=seed, postprocess=kind)
        else:
            cases = pick_cases(per_image_table(result), n, postprocess=kind)
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
