"""Benchmark: does zoom test-time augmentation raise the test Dice of a segmentation run?

For the test radiographs of a ``cxrlib train-seg`` run (its own split), the network predicts
the input as it is and zoomed about the centre by each factor; the predictions are mapped
back, averaged, up-sampled to 512 px, thresholded at 0.5 and post-processed like
``cxrlib segment``'s masks, then scored against the reference masks. Prints one table:
mean Dice per site and overall for no augmentation, 3 zooms (0.95, 1, 1.05) and 5 zooms
(0.9 to 1.1), and the paired differences.

Usage::

    CXR_REAL_DIR=../shared/cxr-real python benchmarks/bench_seg_tta.py --run RUN
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality_regressor import _zoom  # noqa: E402
from keras_env import cpu_description  # noqa: E402
from real_data import add_real_argument, usable  # noqa: E402

ZOOMS = {"none": (1.0,), "3 zooms": (0.95, 1.0, 1.05), "5 zooms": (0.9, 0.95, 1.0, 1.05, 1.1)}


def main(argv: list[str] | None = None) -> int:
    """Score the test split with and without zoom averaging; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_real_argument(parser, run=True)
    args = parser.parse_args(argv)
    if not usable(args):
        return 2
    import pandas as pd

    from cxrlib.data.datasets import scan_dataset
    from cxrlib.data.imageio import read_image, read_mask
    from cxrlib.preprocess import resize_image
    from cxrlib.seg.metrics import dice
    from cxrlib.seg.postprocess import postprocess_mask
    from cxrlib.seg.runtime import load_predictor

    split = pd.read_csv(args.run / "split.csv", dtype={"id": str})
    table = scan_dataset(args.real).table
    table = table[table["mask_path"].notna()].merge(split[["id", "split"]], on="id")
    predictor = load_predictor(args.run / "model.keras", "keras", precision="float32")
    factors = ZOOMS["5 zooms"]
    rows = []
    for row in table[table["split"] == "test"].itertuples(index=False):
        image = read_image(row.image_path)
        small = resize_image(image, predictor.input_size, method="area")
        batch = np.stack([_zoom(small, f) for f in factors])[..., None].astype(np.float32)
        probs = predictor.predict(batch)[..., 0]
        back = {f: p if f == 1.0 else _zoom(p, 1 / f) for f, p in zip(factors, probs, strict=True)}
        truth = read_mask(row.mask_path)
        scores = {"site": row.site}
        for name, chosen in ZOOMS.items():
            mean = np.mean([back[f] for f in chosen], axis=0)
            full = resize_image(mean, image.shape, method="bilinear")
            scores[name] = dice(postprocess_mask(full > 0.5), truth)
        rows.append(scores)
    scored = pd.DataFrame(rows)
    by_site = scored.groupby("site")[list(ZOOMS)].mean()
    by_site.loc["all"] = scored[list(ZOOMS)].mean()
    for name in list(ZOOMS)[1:]:
        by_site[f"{name} - none"] = by_site[name] - by_site["none"]
    print(
        f"test Dice at 512 px of {args.run} ({len(scored)} radiographs) with zoom test-time "
        f"augmentation, float32 Keras; {cpu_description()}"
    )
    print(by_site.to_string(float_format=lambda v: f"{v:+.4f}" if v < 0.5 else f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
