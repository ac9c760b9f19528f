"""Benchmark: can a regressor fitted on validation masks predict the true Dice of test masks?

A candidate for a better mask-quality estimate than ``cxrlib segment``'s soft Dice
(:func:`cxrlib.seg.quality.soft_dice`). For the validation and test radiographs of a
``cxrlib train-seg`` run it computes, from the network's outputs alone:

* ``soft``: the soft Dice of the probabilities (up-sampled to 512) with the mask;
* ``uncertain``: pixels with 0.1 < p < 0.9 per predicted lung pixel;
* ``area``: lung fraction of the mask;
* ``prior_dice``, ``prior_ll``: agreement of the mask with the mean training mask (Dice, and
  mean log-likelihood under it): how typical the shape is;
* ``zoom_agree``: Dice between the mask and the predictions on the input zoomed by 0.9 and
  1.1 (mapped back), a test-time-augmentation agreement;
* ``removed``, ``added``, ``n_comp``: what post-processing changed, and the number of
  connected components before it.

Each measure's Spearman correlation with the true Dice is printed for both splits; then
ridge regression and gradient boosting are fitted on the validation split and scored on the
test split (Spearman of their estimate with the true Dice). It prints TWO tables.

Usage::

    cxrlib train-seg ../shared/cxr-real --out RUN
    CXR_REAL_DIR=../shared/cxr-real python benchmarks/bench_quality_regressor.py --run RUN
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keras_env import cpu_description  # noqa: E402
from real_data import add_real_argument, usable  # noqa: E402

MEASURES = (
    "soft", "uncertain", "area", "prior_dice", "prior_ll", "zoom_agree", "removed", "added",
    "n_comp",
)  # fmt: skip


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom about the centre, keeping the size (padding with 0 or cropping)."""
    from scipy import ndimage

    size = image.shape[0]
    zoomed = ndimage.zoom(image, factor, order=1)
    if zoomed.shape[0] <= size:
        out = np.zeros_like(image)
        pad = (size - zoomed.shape[0]) // 2
        out[pad : pad + zoomed.shape[0], pad : pad + zoomed.shape[1]] = zoomed
        return out
    crop = (zoomed.shape[0] - size) // 2
    return zoomed[crop : crop + size, crop : crop + size]


def measures(run_dir: Path, real: Path):
    """One row per validation/test radiograph: the measures above and the true Dice."""
    import pandas as pd
    from scipy import ndimage

    from cxrlib.data.datasets import scan_dataset
    from cxrlib.data.imageio import read_image, read_mask
    from cxrlib.preprocess import resize_image
    from cxrlib.seg.metrics import dice
    from cxrlib.seg.postprocess import postprocess_mask
    from cxrlib.seg.quality import soft_dice
    from cxrlib.seg.runtime import load_predictor

    split = pd.read_csv(run_dir / "split.csv", dtype={"id": str})
    table = scan_dataset(real).table
    table = table[table["mask_path"].notna()].merge(split[["id", "split"]], on="id")
    predictor = load_predictor(run_dir / "model.keras", "auto")
    size = predictor.input_size
    training = table[table["split"] == "train"]["mask_path"]
    prior = np.mean([resize_image(read_mask(p).astype(np.float32), size) for p in training], 0)
    rows = []
    for row in table[table["split"].isin(["val", "test"])].itertuples(index=False):
        image = read_image(row.image_path)
        small = resize_image(image, size, method="area")
        batch = np.stack([small, _zoom(small, 0.9), _zoom(small, 1.1)])[..., None]
        probs = predictor.predict(batch.astype(np.float32))[..., 0]
        full = resize_image(probs[0], image.shape, method="bilinear")
        raw = full > 0.5
        mask = postprocess_mask(raw)
        small_mask = postprocess_mask(probs[0] > 0.5)
        back = [_zoom(probs[1], 1 / 0.9) > 0.5, _zoom(probs[2], 1 / 1.1) > 0.5]
        likelihood = np.where(small_mask, prior, 1 - prior)
        rows.append(
            {
                "id": row.id,
                "split": row.split,
                "dice": dice(mask, read_mask(row.mask_path)),
                "soft": soft_dice(full, mask),
                "uncertain": float(((probs[0] > 0.1) & (probs[0] < 0.9)).sum())
                / max(1, int((probs[0] > 0.5).sum())),
                "area": float(mask.mean()),
                "prior_dice": dice(small_mask, prior > 0.5),
                "prior_ll": float(np.mean(np.log(likelihood + 1e-3))),
                "zoom_agree": 0.5 * sum(dice(small_mask, b) for b in back),
                "removed": float((raw & ~mask).sum()) / max(1, int(raw.sum())),
                "added": float((mask & ~raw).sum()) / max(1, int(mask.sum())),
                "n_comp": ndimage.label(raw)[1],
            }
        )
    return pd.DataFrame(rows), predictor.runtime


def main(argv: list[str] | None = None) -> int:
    """Compute the measures, fit the regressors on validation, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_real_argument(parser, run=True)
    args = parser.parse_args(argv)
    if not usable(args):
        return 2
    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table, runtime = measures(args.run, Path(args.real))
    val, test = table[table["split"] == "val"], table[table["split"] == "test"]
    single = pd.DataFrame(
        [
            {
                "measure": m,
                "val spearman": spearmanr(val[m], val["dice"])[0],
                "test spearman": spearmanr(test[m], test["dice"])[0],
            }
            for m in MEASURES
        ]
    )
    models = {
        "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 20))),
        "gradient boosting": lambda: GradientBoostingRegressor(
            n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=0
        ),
    }
    subsets = {"all measures": list(MEASURES), "soft + zoom_agree": ["soft", "zoom_agree"]}
    fitted = []
    for model_name, make in models.items():
        for subset_name, columns in subsets.items():
            model = make().fit(val[columns], val["dice"])
            estimate = model.predict(test[columns])
            fitted.append(
                {
                    "regressor": model_name,
                    "inputs": subset_name,
                    "test spearman": spearmanr(estimate, test["dice"])[0],
                }
            )
    print(
        f"mask-quality measures of {args.run} ({runtime} runtime; {len(val)} validation, "
        f"{len(test)} test radiographs; true Dice at 512 px); {cpu_description()}"
    )
    print(single.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print("\nfitted on the validation split, scored on the test split:")
    print(pd.DataFrame(fitted).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
