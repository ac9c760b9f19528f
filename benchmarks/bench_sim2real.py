"""Benchmark: how real are the phantoms? Train on phantoms only, score on real radiographs.

A segmentation model is trained with ``cxrlib train-seg``'s defaults (the CPU recipe) on
synthetic phantoms only (:func:`cxrlib.synthetic.write_dataset`, compilation layout,
512 x 512), then scored on every real radiograph of the development set that has a
mask (``$CXR_REAL_DIR`` or ``--real``): Dice, IoU and HD95 at each image's original
resolution against the original masks, post-processed as ``cxrlib segment`` does, per
site with 95 % bootstrap confidence intervals, and the worst image of each site.

The model never sees a real radiograph, so its score on the real set measures how much
of what it learnt from the phantoms carries over (the project guide aims at mean Dice
0.85 or more). It prints ONE table, with the machine's description.

Usage::

    CXR_REAL_DIR=../shared/cxr-real python benchmarks/bench_sim2real.py
    python benchmarks/bench_sim2real.py --real ../shared/cxr-real --n 400 --epochs 30
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keras_env import keras_environment  # noqa: E402
from real_data import add_real_argument, usable  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_real_argument(parser)
    parser.add_argument("--n", type=int, default=400, help="phantoms to train on (400)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (30)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and training seed (0)")
    parser.add_argument(
        "--work", default=None, help="folder for phantoms and the run (a temporary one)"
    )
    return parser.parse_args(argv)


def _worst(scores, site: str) -> str:
    rows = scores if site == "all" else scores[scores["site"] == site]
    worst = rows.loc[rows["dice"].idxmin()]
    return f"{worst['id']} ({worst['dice']:.3f})"


def run(real: Path, work: Path, n: int, epochs: int, seed: int) -> int:
    import pandas as pd

    from cxrlib.data.datasets import scan_dataset
    from cxrlib.seg.metrics import summarize_by_site
    from cxrlib.seg.results import score_on_table
    from cxrlib.seg.train import train_segmentation
    from cxrlib.seg.train_config import cpu_recipe
    from cxrlib.synthetic import write_dataset

    start = time.perf_counter()
    phantoms = work / "phantoms"
    write_dataset(phantoms, n=n, size=512, seed=seed, progress=False)
    synth_s = time.perf_counter() - start
    config = cpu_recipe(epochs=epochs, seed=seed)
    start = time.perf_counter()
    result = train_segmentation(phantoms, config, work / "run", progress=False)
    train_s = time.perf_counter() - start

    table = scan_dataset(real).table
    rows = table[table["mask_path"].notna()].reset_index(drop=True)
    start = time.perf_counter()
    scores = score_on_table(result.load_model(), config, rows, cache_dir=False)
    score_s = time.perf_counter() - start
    scores = scores[
        (scores["resolution"] == "original") & (scores["postprocess"] == "postprocessed")
    ]
    summary = summarize_by_site(scores)
    phantom_test = result.metrics["test"]["original"]["postprocessed"]["all"]

    table_rows = []
    for site, row in summary.iterrows():
        table_rows.append(
            {
                "scored on": f"real {site}",
                "n": int(row["n"]),
                "dice": f"{row['dice_mean']:.3f} [{row['dice_low']:.3f}, {row['dice_high']:.3f}]",
                "iou": f"{row['iou_mean']:.3f}",
                "hd95_px": f"{row['hd95_median']:.1f}",
                "worst image (dice)": _worst(scores, str(site)),
            }
        )
    table_rows.append(
        {
            "scored on": "phantom test split",
            "n": int(phantom_test["n"]),
            "dice": f"{phantom_test['dice_mean']:.3f} "
            f"[{phantom_test['dice_low']:.3f}, {phantom_test['dice_high']:.3f}]",
            "iou": f"{phantom_test['iou_mean']:.3f}",
            "hd95_px": f"{phantom_test['hd95_median']:.1f}",
            "worst image (dice)": "-",
        }
    )
    print(
        f"\nsim-to-real: {config.model} {list(config.resolved_filters)} at {config.img_size} px, "
        f"{config.precision}, trained on {n} phantoms only ({result.epochs_run} epochs); "
        "scored at the original resolution, post-processed"
    )
    print(keras_environment())
    print(
        f"phantoms {synth_s:.0f} s, training {train_s:.0f} s, scoring {len(rows)} real "
        f"radiographs {score_s:.0f} s"
    )
    print(pd.DataFrame(table_rows).to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not usable(args):
        return 2
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        return run(Path(args.real), work, args.n, args.epochs, args.seed)
    with tempfile.TemporaryDirectory(prefix="cxr-sim2real-") as tmp:
        return run(Path(args.real), Path(tmp), args.n, args.epochs, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
