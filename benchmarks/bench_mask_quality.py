"""Benchmark: does ``cxrlib segment``'s quality estimate track the true Dice of its masks?

Takes a ``cxrlib train-seg`` run trained on the real development set and segments, with
``cxrlib segment``'s own code (:func:`cxrlib.seg.folder.segment_folder`), the run's
validation and test radiographs. Each mask's ``quality`` estimate and ``flag`` are set
against its true Dice with the reference mask at 512 x 512: Spearman correlation with a
95 % bootstrap interval, and how many of the worst 5 % masks the flag catches
(:func:`cxrlib.seg.quality.validate_quality`). Then images that are not frontal chest
radiographs, made from the first test radiographs or taken from scikit-image, must all
be flagged: inverted films, films turned by 90 degrees, one half of a chest stretched
to the full width (a stand-in for a lateral view: the set holds none), a photograph,
an astronaut, a page of coins and noise.

It prints TWO tables, with the machine's description.

Usage::

    cxrlib train-seg ../shared/cxr-real --out RUN
    CXR_REAL_DIR=../shared/cxr-real python benchmarks/bench_mask_quality.py --run RUN
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keras_env import keras_environment  # noqa: E402
from real_data import add_real_argument, usable  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_real_argument(parser, run=True)
    parser.add_argument("--worst-share", type=float, default=0.05, help="(0.05)")
    return parser.parse_args(argv)


def _link_folder(folder: Path, paths: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def _true_dice(out: Path, rows) -> np.ndarray:
    from cxrlib.data.imageio import read_mask
    from cxrlib.preprocess import resize_image
    from cxrlib.seg.metrics import dice

    values = []
    for row in rows.itertuples(index=False):
        predicted = read_mask(out / f"{Path(row.image_path).stem}.png")
        truth = read_mask(row.mask_path)
        if truth.shape != predicted.shape:
            truth = resize_image(truth.astype(np.float32), predicted.shape) > 0.5
        values.append(dice(predicted, truth))
    return np.asarray(values)


def _not_chest_images(folder: Path, films: list[Path]) -> dict[str, str]:
    """Write the out-of-distribution images; return ``file name -> kind``."""
    from skimage import data

    from cxrlib.data.imageio import read_image, write_png
    from cxrlib.preprocess import resize_image

    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}

    def put(name: str, kind: str, image: np.ndarray) -> None:
        image = resize_image(np.asarray(image, np.float32), (512, 512), method="area")
        write_png(folder / f"{name}.png", np.clip(image, 0, 1))
        kinds[f"{name}.png"] = kind

    for i, path in enumerate(films):
        film = read_image(path)
        put(f"inverted_{i}", "inverted radiograph", 1.0 - film)
        put(f"turned_{i}", "radiograph turned 90 degrees", np.rot90(film))
        put(f"half_{i}", "one half of a chest (lateral stand-in)", film[:, : film.shape[1] // 2])
    put("camera", "photograph", data.camera() / 255.0)
    put("astronaut", "photograph", data.astronaut().mean(axis=2) / 255.0)
    put("coins", "photograph", data.coins() / 255.0)
    put("noise", "noise", np.random.default_rng(0).random((512, 512)))
    return kinds


def run(run_dir: Path, real: Path, worst_share: float, work: Path) -> int:
    import pandas as pd

    from cxrlib.data.datasets import scan_dataset
    from cxrlib.seg.folder import segment_folder
    from cxrlib.seg.quality import FLAG_BELOW, validate_quality

    model = run_dir / "model.keras"
    split = pd.read_csv(run_dir / "split.csv", dtype={"id": str})
    table = scan_dataset(real).table
    table = table[table["mask_path"].notna()].merge(split[["id", "split"]], on="id")
    lines = []
    for name in ("val", "test"):
        rows = table[table["split"] == name].reset_index(drop=True)
        images = _link_folder(work / name, [Path(p) for p in rows["image_path"]])
        report = segment_folder(model, images, work / f"{name}-out", progress=False)
        by_file = report.table.set_index("file")
        files = [Path(p).name for p in rows["image_path"]]
        true_dice = _true_dice(work / f"{name}-out", rows)
        result = validate_quality(
            by_file.loc[files, "quality"].to_numpy(),
            true_dice,
            by_file.loc[files, "flag"].to_numpy(bool),
            worst_share=worst_share,
        )
        worst = int(np.argmin(true_dice))
        lines.append(
            {
                "split": name,
                "n": result["n"],
                "spearman [95% CI]": f"{result['spearman']:.3f} "
                f"[{result['spearman_low']:.3f}, {result['spearman_high']:.3f}]",
                f"worst {worst_share:.0%} (dice <=)": f"{result['n_worst']} "
                f"({result['worst_dice_max']:.3f})",
                "caught": result["caught"],
                "flagged": result["flagged"],
                "false alarms": result["false_alarms"],
                "worst image": f"{files[worst]} ({true_dice[worst]:.3f}, "
                f"quality {by_file.loc[files[worst], 'quality']:.3f})",
            }
        )
    test_rows = table[table["split"] == "test"].sort_values("id")
    films = [Path(p) for p in test_rows["image_path"].iloc[:3]]
    kinds = _not_chest_images(work / "not-chest", films)
    report = segment_folder(model, work / "not-chest", work / "not-chest-out", progress=False)
    odd = report.table.set_index("file").loc[sorted(kinds)]
    odd.insert(0, "kind", [kinds[f] for f in odd.index])
    print(
        f"\nmask quality: {model} segmented by cxrlib segment ({report.runtime} runtime); "
        f"true Dice at 512 px against the reference masks; flag below {FLAG_BELOW} "
        "or a shape that is not two lungs"
    )
    print(keras_environment())
    print(pd.DataFrame(lines).to_string(index=False))
    print(f"\nnot frontal chest radiographs: {int(odd['flag'].sum())} of {len(odd)} flagged")
    shown = odd[["kind", "quality", "flag", "flag_reason"]].copy()
    shown["quality"] = shown["quality"].map("{:.3f}".format)
    print(shown.to_string())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not usable(args):
        return 2
    with tempfile.TemporaryDirectory(prefix="cxr-quality-") as tmp:
        return run(args.run, Path(args.real), args.worst_share, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
