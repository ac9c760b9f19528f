"""Command-line front ends of TB diagnosis: ``cxrlib train-tb`` and ``cxrlib classify``.

``cxrlib train-tb DATA_DIR --out RUN_DIR`` trains (or reuses) a TB classifier with
:func:`cxrlib.tb.train.train_tb`. Its defaults are the best pipeline measured
offline on the real development set: lung masks predicted by a ResUNet trained
for the run (the CPU recipe, 15 epochs), hand-crafted lung features with their
left/right differences at 512 x 512, and the mean of an L2 logistic regression and gradient
boosting, cross-validated 5-fold x 2.

``cxrlib classify RUN_DIR IMAGES_DIR --out predictions.csv`` writes the calibrated TB
probability of every radiograph in a folder and its call at an operating point
(``--operating-point who|youden|0.5|<number>``) with :func:`cxrlib.tb.classify.classify`.

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
)

__all__ = ["operating_point", "parse_names", "register"]

_DEFAULTS = {
    "features": "handcrafted",
    "classifier": "ensemble",
    "image_size": 512,
    "seg_epochs": 15,
    "splits": 5,
    "repeats": 2,
    "seed": 0,
    "calibration": "sigmoid",
    "inner_splits": 5,
    "operating_point": "who",
}
_CLASSIFIERS = ("ensemble", "logreg", "svm", "gboost", "mlp")
_CALIBRATIONS = ("sigmoid", "isotonic", "none")


def parse_names(text: str) -> tuple[str, ...]:
    """Parse ``"handcrafted,encoder"`` into ``("handcrafted", "encoder")`` (argparse type)."""
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def operating_point(text: str) -> str:
    """Check ``--operating-point``: ``who``, ``youden`` or a number in (0, 1) (argparse type)."""
    from cxrlib.tb.operating import parse_operating_point

    try:
        name, _ = parse_operating_point(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def _print_result(result) -> None:
    s = result.summary()
    config = result.config
    print(
        f"{'+'.join(config.features)} + {config.classifier}: {s['n']} radiographs, "
        f"{result.X.shape[1]} features, {config.n_splits}-fold x {config.n_repeats} CV"
    )
    print(
        f"CV AUC {s['auc']:.3f} [95% CI {s['auc_low']:.3f}, {s['auc_high']:.3f}]  "
        f"accuracy {s['accuracy']:.3f}  sensitivity {s['sensitivity']:.3f}  "
        f"specificity {s['specificity']:.3f} (threshold {config.threshold:g})"
    )
    print("per site:")
    for site, row in result.per_site().iterrows():
        print(
            f"  {site:12s} n={int(row['n']):4d}  AUC {row['auc']:.3f} "
            f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]  accuracy {row['accuracy']:.3f}"
        )
    brier = result.brier(n_boot=1000)
    print(f"Brier score (calibration {config.calibration}; lower is better):")
    for site, row in brier.iterrows():
        before = ""
        if "uncalibrated_brier" in row:
            before = f"  (uncalibrated {row['uncalibrated_brier']:.3f})"
        print(
            f"  {site:12s} {row['brier']:.3f} [{row['brier_low']:.3f}, {row['brier_high']:.3f}]"
            f"{before}"
        )
    print(
        "operating points, thresholds chosen inside the folds (WHO target: sensitivity "
        ">= 0.90 at specificity >= 0.70):"
    )
    for row in result.nested_operating_points().itertuples(index=False):
        verdict = "meets the target" if row.meets_target else "misses the target"
        if row.ci_excludes_target:
            verdict += ", CI excludes it"
        print(
            f"  {row.operating_point:6s} {row.site:12s} sensitivity {row.sensitivity:.3f} "
            f"[{row.sensitivity_low:.3f}, {row.sensitivity_high:.3f}]  specificity "
            f"{row.specificity:.3f} [{row.specificity_low:.3f}, {row.specificity_high:.3f}] "
            f"(threshold {row.threshold:.3f}; {verdict})"
        )
    saved = ", ".join(
        f"{name} {point['threshold']:.3f}" for name, point in result.final_operating_points.items()
    )
    if saved:
        print(f"thresholds saved for cxrlib classify: {saved}")
    if result.skipped:
        print(f"left out {len(result.skipped)} radiograph(s):")
        for path, reason in result.skipped:
            print(f"  {path}: {reason}")
    total = result.timings.get("total_seconds")
    if total is not None:
        print(f"total time {total / 60:.1f} min")


def _cmd_train_tb(args: argparse.Namespace) -> int:
    from cxrlib.tb.config import TBConfig
    from cxrlib.tb.train import train_tb

    data_dir = existing_folder(args.data_dir)
    seg_model = None
    if args.seg_model is not None:
        seg_model = segmentation_model_file(args.seg_model, "--seg-model")
    config = TBConfig(
        features=args.features,
        classifier=args.classifier,
        image_size=args.image_size,
        seg_epochs=args.seg_epochs,
        seed=args.seed,
        n_splits=args.splits,
        n_repeats=args.repeats,
        calibration=args.calibration,
        inner_splits=args.inner_splits,
    )
    result = train_tb(
        data_dir,
        args.out,
        config,
        seg_model=seg_model,
        overwrite=args.overwrite,
        progress=show_progress(args),
    )
    verb = "trained" if result.trained else "reused (same configuration and data)"
    print(f"TB run {verb}: {result.run_dir}")
    _print_result(result)
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from cxrlib.tb.classify import classify

    report = classify(
        args.run_dir,
        args.images_dir,
        args.out,
        operating_point=args.operating_point,
        progress=show_progress(args),
        runtime=args.runtime,
        scheduler=args.scheduler,
        n_workers=args.workers,
    )
    print(report.summary())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-tb`` and ``classify`` commands to the ``cxrlib`` parser."""
    train = subparsers.add_parser(
        "train-tb",
        help="train (or reuse) a TB classifier and cross-validate it",
        description=(
            "Predict the lungs of every labelled radiograph in DATA_DIR with a segmentation "
            "model (--seg-model, or one trained into RUN_DIR/segmentation on the radiographs "
            "that have masks), compute features inside the lungs, cross-validate a "
            "classifier, calibrated on inner folds (AUC with 95% CI, Brier score, sensitivity "
            "and specificity per site at operating points whose thresholds are chosen inside "
            "the folds) and fit it on all radiographs. Writes tb_model.joblib, "
            "tb_config.json, cv_metrics.json, oof_predictions.csv and fold_thresholds.csv "
            "into RUN_DIR; a second run with the same settings and data "
            "reuses them. Defaults: hand-crafted features (with left/right asymmetry) at "
            "512 px + an ensemble of logistic regression and gradient boosting, 5-fold x 2 "
            "(about 9 min on 2 CPU cores with bfloat16 for 640 radiographs, segmentation "
            "training included)."
        ),
    )
    train.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="dataset folder")
    train.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    train.add_argument(
        "--features",
        type=parse_names,
        default=parse_names(_DEFAULTS["features"]),
        metavar="NAME,...",
        help=(
            "feature extractors, comma-separated: handcrafted, encoder, vgg16, resnet50, "
            "inceptionresnetv2 (+ _lung variants; ImageNet weights must be on disk) "
            f"({_DEFAULTS['features']})"
        ),
    )
    train.add_argument(
        "--classifier",
        choices=_CLASSIFIERS,
        default=_DEFAULTS["classifier"],
        help=f"({_DEFAULTS['classifier']})",
    )
    train.add_argument(
        "--seg-model",
        type=Path,
        default=None,
        metavar="PATH",
        help="a .keras segmentation model or a train-seg run folder (default: train one)",
    )
    train.add_argument(
        "--image-size",
        type=positive_int,
        default=_DEFAULTS["image_size"],
        help=f"side of the images for the features ({_DEFAULTS['image_size']})",
    )
    train.add_argument(
        "--seg-epochs",
        type=positive_int,
        default=_DEFAULTS["seg_epochs"],
        help=f"epochs of the segmentation model trained for the run ({_DEFAULTS['seg_epochs']})",
    )
    train.add_argument(
        "--splits", type=positive_int, default=_DEFAULTS["splits"], help="CV folds (5)"
    )
    train.add_argument(
        "--repeats", type=positive_int, default=_DEFAULTS["repeats"], help="CV repeats (2)"
    )
    train.add_argument(
        "--calibration",
        choices=_CALIBRATIONS,
        default=_DEFAULTS["calibration"],
        help=(
            "calibration of the probability on inner folds of every training set: Platt's "
            f"sigmoid, isotonic regression or none ({_DEFAULTS['calibration']})"
        ),
    )
    train.add_argument(
        "--inner-splits",
        type=positive_int,
        default=_DEFAULTS["inner_splits"],
        help=(
            "folds of the inner cross-validation inside each training part, which "
            "calibrates and chooses the thresholds of the operating points "
            f"({_DEFAULTS['inner_splits']})"
        ),
    )
    train.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="(0)")
    train.add_argument(
        "--overwrite", action="store_true", help="replace a different run in RUN_DIR"
    )
    train.set_defaults(func=_cmd_train_tb)

    cls = subparsers.add_parser(
        "classify",
        help="write the TB probability and call of every radiograph in a folder",
        description=(
            "Segment the lungs of every radiograph in IMAGES_DIR (any depth, any names) with "
            "the run's own segmentation model, compute the run's features and write "
            "file,probability,prediction,operating_point,threshold to --out: the "
            "calibrated TB probability, and the call (1 = TB) when it reaches the "
            "threshold of the operating point. Unreadable files are listed and skipped. "
            "Works offline."
        ),
    )
    cls.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a cxrlib train-tb run")
    cls.add_argument("images_dir", type=Path, metavar="IMAGES_DIR", help="folder of images")
    cls.add_argument(
        "--out", type=Path, required=True, metavar="CSV", help="predictions CSV to write"
    )
    cls.add_argument(
        "--operating-point",
        type=operating_point,
        default=_DEFAULTS["operating_point"],
        metavar="who|youden|0.5|NUMBER",
        help=(
            "threshold of the TB call: 'who' (default) is the run's threshold for a "
            "sensitivity of at least 0.90 with the best specificity (the WHO target for a "
            "triage test, which should miss few TB cases; chosen on out-of-fold "
            "probabilities of the training radiographs); 'youden' maximises sensitivity + "
            "specificity; a number in (0, 1) is a fixed threshold (0.5 works for runs made "
            "before calibration, which saved no thresholds)"
        ),
    )
    add_inference_arguments(cls)
    cls.set_defaults(func=_cmd_classify)


if __name__ == "__main__":  # pragma: no cover
    from cxrlib.cli import main

    sys.exit(main())
