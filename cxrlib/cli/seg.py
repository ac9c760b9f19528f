"""Command-line front ends of lung segmentation: ``cxrlib train-seg`` and ``cxrlib segment``.

``cxrlib train-seg DATA_DIR --out RUN_DIR`` trains (or reuses) a model with
:func:`cxrlib.seg.train.train_segmentation`; its defaults are the book's CPU recipe
(:func:`cxrlib.seg.train_config.cpu_recipe`): a width-reduced ResUNet (filters
16-16-32-64-128) at 128 x 128 in the fastest precision of the machine (``auto``),
30 epochs of batch 8 with a cosine learning-rate decay.
``--filters original`` trains the architecture's original filters.

``cxrlib segment MODEL IMAGES_DIR OUT_DIR`` segments a folder with
:func:`cxrlib.seg.folder.segment_folder`.

:func:`register` adds both commands to the ``cxrlib`` parser
(:func:`cxrlib.cli.build_parser` calls it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrlib.cli.args import (
    add_inference_arguments,
    existing_folder,
    positive_int,
    segmentation_model_file,
    show_progress,
    unit_interval,
)
from cxrlib.errors import CxrlibError
from cxrlib.precision import PRECISION_CHOICES
from cxrlib.seg.train_config import CPU_RECIPE_FILTERS, MODELS, RECIPES, TrainConfig, cpu_recipe
from cxrlib.seg.train_config import recipe as named_recipe

__all__ = ["register", "parse_filters"]

# The recipe's values for the help texts; its precision stays "auto" until training (resolving
# it here would import the Keras backend for every command, `--help` included).
_RECIPE = cpu_recipe("resunet", precision="float32")
_ORIGINAL = "original"
# cxrlib.seg.quality.FLAG_BELOW, for the help text (importing it would import SciPy for every
# command; tests/test_cli_seg.py checks the two agree).
DEFAULT_FLAG_BELOW = 0.95


def parse_filters(text: str) -> tuple[int, ...] | str:
    """Parse ``"16,32,64"`` into ``(16, 32, 64)``; ``"original"`` stays (argparse type)."""
    if text.strip().lower() == _ORIGINAL:
        return _ORIGINAL
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--filters must be comma-separated integers like 16,32,64,128,256, got {text!r}"
        ) from None
    if len(values) < 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"--filters needs at least two positive integers, got {text!r}"
        )
    return values


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The CPU recipe of ``args.model`` with the options given on the command line."""
    chosen = {
        "img_size": args.img_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "precision": args.precision,
        "seed": args.seed,
        "patience": args.patience,
        "lr_schedule": args.lr_schedule,
        "filters": None if args.filters == _ORIGINAL else args.filters,
    }
    overrides = {
        name: value
        for name, value in chosen.items()
        if value is not None or (name == "filters" and args.filters == _ORIGINAL)
    }
    if args.no_augment:
        overrides["augment"] = False
    if args.min_learning_rate is not None:
        overrides["min_learning_rate"] = args.min_learning_rate
    elif args.learning_rate is not None:
        floor = named_recipe(args.recipe, args.model).min_learning_rate
        if args.learning_rate < floor:
            # the recipe's floor would exceed the rate: decay to a hundredth of it instead
            overrides["min_learning_rate"] = args.learning_rate / 100
    return named_recipe(args.recipe, args.model, **overrides)


def _cmd_train_seg(args: argparse.Namespace) -> int:
    from cxrlib.seg.train import train_segmentation

    data_dir = existing_folder(args.data_dir)
    config = _config_from_args(args)
    result = train_segmentation(
        data_dir,
        config,
        args.out,
        overwrite=args.overwrite,
        progress=show_progress(args),
    )
    verb = "trained" if result.trained else "reused (same configuration and data)"
    print(
        f"{result.config.model} {verb}: {result.model_path} ({result.epochs_run} epochs, "
        f"precision {result.config.precision})"
    )
    if result.timings.get("train_images_per_s"):
        when = "" if result.trained else " (when it was trained)"
        print(
            f"training speed{when}: {result.timings['train_images_per_s']:.1f} images/s, "
            f"total {result.timings.get('total_seconds', float('nan')) / 60:.1f} min"
        )
    for split in ("val", "test"):
        if split not in result.metrics:
            continue
        table = result.summary_table(split, "original").xs("postprocessed", level="postprocess")
        print(f"{split} Dice at the original resolution (post-processed, 95% CI):")
        for site, row in table.iterrows():
            print(
                f"  {site:12s} n={int(row['n']):3d}  {row['dice_mean']:.4f} "
                f"[{row['dice_low']:.4f}, {row['dice_high']:.4f}]"
            )
    return 0


class SegmentError(CxrlibError):
    """``cxrlib segment`` found nothing to segment (printed as one line, exit status 2)."""


def _cmd_segment(args: argparse.Namespace) -> int:
    from cxrlib.seg.folder import segment_folder

    model = segmentation_model_file(args.model)
    images_dir = existing_folder(args.images_dir, "images folder")
    if not any(images_dir.iterdir()):
        raise SegmentError(f"no images in {images_dir}: the folder is empty")
    quality = {} if args.flag_below is None else {"flag_below": args.flag_below}
    report = segment_folder(
        model,
        images_dir,
        args.out_dir,
        batch_size=args.batch_size,
        postprocess=not args.no_postprocess,
        overlays=not args.no_overlays,
        dicom_seg=args.dicom_seg,
        precision=args.precision,
        runtime=args.runtime,
        scheduler=args.scheduler,
        n_workers=args.workers,
        overwrite=args.overwrite,
        progress=show_progress(args),
        **quality,
    )
    if report.n_images == 0:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in report.skipped[:3])
        more = f"; and {len(report.skipped) - 3} more" if len(report.skipped) > 3 else ""
        raise SegmentError(
            f"no image in {images_dir} could be segmented ({len(report.skipped)} entries "
            f"skipped: {reasons}{more})"
        )
    print(report.summary())
    out = Path(args.out_dir)
    print(f"lung areas: {out / 'lungs.csv'} (all columns: {out / 'lungs.parquet'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-seg`` and ``segment`` commands to the ``cxrlib`` parser."""
    train = subparsers.add_parser(
        "train-seg",
        help="train (or reuse) a lung-segmentation model and score it per site",
        description=(
            "Train a U-Net or ResUNet on a dataset folder (rows with masks), split by site "
            "and label before augmentation, and write model.keras, history, split.csv and "
            "metrics.json (validation and test Dice/IoU/HD95 per site with 95% CIs) into "
            "--out. A second run with the same settings and data reuses the model. The "
            "defaults are the CPU recipe: a width-reduced ResUNet (16-16-32-64-128) at "
            "128x128 in the fastest precision of this CPU (auto), 30 epochs of batch 8, "
            "cosine learning-rate decay (about 16 min on 2 AVX512_BF16 cores for the real "
            "development set; test Dice 0.956 at 512x512)."
        ),
    )
    train.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="dataset folder")
    train.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    train.add_argument("--model", choices=MODELS, default="resunet", help="(resunet)")
    train.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="cpu",
        help="named recipe the options below change (cpu; gpu: original filters at 256x256, "
        "batch 16, 50 epochs); the defaults shown are the cpu recipe's",
    )
    train.add_argument(
        "--img-size",
        type=positive_int,
        default=None,
        help=f"model input side, divisible by 16 ({_RECIPE.img_size})",
    )
    train.add_argument(
        "--epochs", type=positive_int, default=None, help=f"maximum epochs ({_RECIPE.epochs})"
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"({_RECIPE.batch_size})",
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"initial Adam learning rate ({_RECIPE.learning_rate})",
    )
    train.add_argument(
        "--min-learning-rate",
        type=float,
        default=None,
        help=(
            f"the rate the cosine decay ends at and the plateau schedule's floor "
            f"({_RECIPE.min_learning_rate}; a hundredth of --learning-rate when that is lower)"
        ),
    )
    train.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=None,
        help=(
            "auto: mixed_float16 on a GPU, mixed_bfloat16 on CPUs with AVX512_BF16/AMX, "
            "float32 elsewhere (auto)"
        ),
    )
    train.add_argument("--seed", type=int, default=None, help=f"({_RECIPE.seed})")
    train.add_argument(
        "--filters",
        type=parse_filters,
        default=None,
        help=(
            "filters per level, e.g. 16,32,64,128,256, or 'original' (recipe: "
            + "; ".join(f"{m} {','.join(map(str, f))}" for m, f in CPU_RECIPE_FILTERS.items())
            + ")"
        ),
    )
    train.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        help=f"epochs without validation improvement before stopping ({_RECIPE.patience})",
    )
    train.add_argument(
        "--lr-schedule",
        choices=("plateau", "cosine"),
        default=None,
        help=f"learning-rate schedule ({_RECIPE.lr_schedule})",
    )
    train.add_argument("--no-augment", action="store_true", help="no training augmentation")
    train.add_argument(
        "--overwrite", action="store_true", help="replace a different run in RUN_DIR"
    )
    train.set_defaults(func=_cmd_train_seg)

    seg = subparsers.add_parser(
        "segment",
        help="segment the lungs in every image of a folder",
        description=(
            "Write a 0/255 lung mask PNG per image (at the image's resolution), an overlay "
            "in OUT_DIR/overlays/, OUT_DIR/lungs.csv and OUT_DIR/lungs.parquet. Only files "
            "directly in IMAGES_DIR are read; non-image and unreadable files are listed and "
            "skipped. MODEL may be a cxrlib train-seg run folder. Resumable: finished "
            "images are recorded in OUT_DIR/manifest/ and a rerun does only the rest. "
            "Exits with status 2 when no image could be segmented."
        ),
    )
    seg.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="a .keras segmentation model, or a cxrlib train-seg run folder (its model.keras)",
    )
    seg.add_argument("images_dir", type=Path, metavar="IMAGES_DIR", help="folder of images")
    seg.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder")
    seg.add_argument("--batch-size", type=positive_int, default=16, help="(16)")
    seg.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=None,
        help=(
            "inference precision (default: as the model was trained, but float32 for a "
            "bfloat16 model on a CPU without native bfloat16)"
        ),
    )
    add_inference_arguments(seg)
    seg.add_argument(
        "--flag-below",
        type=unit_interval,
        default=None,
        metavar="Q",
        help=(
            "flag masks whose quality estimate (the soft Dice of the mask with its "
            "probabilities, column quality) is below Q; masks not shaped like two lungs "
            f"are flagged whatever their estimate ({DEFAULT_FLAG_BELOW})"
        ),
    )
    seg.add_argument("--no-postprocess", action="store_true", help="keep raw thresholded masks")
    seg.add_argument("--no-overlays", action="store_true", help="do not write overlays")
    seg.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write a DICOM-SEG (OUT_DIR/dicom-seg/NAME.dcm) for each DICOM input",
    )
    seg.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of a segment run with other settings in OUT_DIR",
    )
    seg.set_defaults(func=_cmd_segment)


if __name__ == "__main__":  # pragma: no cover
    from cxrlib.cli import main

    sys.exit(main())
