"""Benchmark: U-Net and ResUNet training and inference speed, float32 vs mixed bfloat16.

Prints ONE table. For each architecture (the original filters unless ``--filters``)
and each precision it times a few ``train_on_batch`` steps after warm-up (random
images and masks at ``--img-size``, ``--batch-size``) and ``predict_on_batch`` on
batches of ``--infer-batch-size``; the speed-up columns compare each row with the
float32 row of the same architecture. A ``recipe:resunet`` row times the network
of the CPU recipe (:func:`cxrlib.seg.train_config.cpu_recipe`: width-reduced ResUNet, its
image size and precision), and ``--model-file`` adds the inference of a trained
model file.

Usage::

    python benchmarks/bench_segmentation.py                 # 128x128, batch 8
    python benchmarks/bench_segmentation.py --img-size 256 --batch-size 4
    python benchmarks/bench_segmentation.py --model-file runs/seg/model.keras

Numbers depend on the machine and on its load: on a shared machine run it twice.
Target on a CPU with AVX512_BF16: mixed precision trains the U-Net >= 1.8x faster
than float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from keras_env import keras_environment  # noqa: E402


def _time_training(model, x, y, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def _time_inference(model, x, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        model.predict_on_batch(x)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(x)
    return steps * len(x) / (time.perf_counter() - start)


def _data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    return x, y


def bench_architecture(name: str, precision: str, args: argparse.Namespace) -> dict:
    """Train and inference images/s of one architecture in one precision."""
    import keras

    from cxrlib.precision import precision_scope
    from cxrlib.seg.losses import get_loss
    from cxrlib.seg.models import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    kwargs = {"input_shape": (args.img_size, args.img_size, 1)}
    if args.filters:
        kwargs["filters"] = args.filters
    with precision_scope(precision):
        model = build_model(name, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("bce_dice"))
        x, y = _data(args.batch_size, args.img_size, 0)
        train = _time_training(model, x, y, args.warmup, args.steps)
        xi, _ = _data(args.infer_batch_size, args.img_size, 1)
        infer = _time_inference(model, xi, args.warmup, args.infer_steps)
    return {
        "model": name,
        "params": model.count_params(),
        "size": args.img_size,
        "precision": precision,
        "train_img_s": train,
        "infer_img_s": infer,
    }


def bench_recipe(args: argparse.Namespace) -> dict:
    """Training and inference images/s of the CPU recipe's network (:func:`cpu_recipe`)."""
    import keras

    from cxrlib.precision import precision_scope
    from cxrlib.seg.losses import get_loss
    from cxrlib.seg.models import build_model
    from cxrlib.seg.train_config import cpu_recipe

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    config = cpu_recipe("resunet")
    size = config.img_size
    with precision_scope(config.precision):
        model = build_model(
            config.model, input_shape=(size, size, 1), filters=config.resolved_filters
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss(config.loss))
        x, y = _data(args.batch_size, size, 0)
        train = _time_training(model, x, y, args.warmup, args.steps)
        xi, _ = _data(args.infer_batch_size, size, 1)
        infer = _time_inference(model, xi, args.warmup, args.infer_steps)
    return {
        "model": "recipe:resunet",
        "params": model.count_params(),
        "size": size,
        "precision": config.precision,
        "train_img_s": train,
        "infer_img_s": infer,
    }


def bench_model_file(path: Path, args: argparse.Namespace) -> dict:
    """Inference images/s of a trained model file, in the precision it was saved with."""
    import keras

    from cxrlib.seg.inference import load_segmentation_model, model_input_size

    keras.backend.clear_session()
    model = load_segmentation_model(path)
    size = model_input_size(model)[0]
    xi, _ = _data(args.infer_batch_size, size, 1)
    infer = _time_inference(model, xi, args.warmup, args.infer_steps)
    return {
        "model": f"file:{path.name}",
        "params": model.count_params(),
        "size": size,
        "precision": model.layers[1].dtype_policy.name,
        "train_img_s": float("nan"),
        "infer_img_s": infer,
    }


def _table(rows: list[dict]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)
    base = table[table["precision"] == "float32"].set_index("model")
    for column, speedup in (("train_img_s", "train_speedup"), ("infer_img_s", "infer_speedup")):
        table[speedup] = [
            row[column] / base.loc[row["model"], column] if row["model"] in base.index else np.nan
            for _, row in table.iterrows()
        ]
    columns = [
        "model",
        "params",
        "size",
        "precision",
        "train_img_s",
        "train_speedup",
        "infer_img_s",
        "infer_speedup",
    ]
    return table[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")


def _filters(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch (8)")
    parser.add_argument("--infer-batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (6)")
    parser.add_argument("--infer-steps", type=int, default=4, help="timed inference batches")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="unet,resunet")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--filters", type=_filters, default=None, help="e.g. 16,32,64,128,256")
    parser.add_argument("--model-file", type=Path, default=None, help="time this .keras model")
    parser.add_argument("--no-recipe", action="store_true", help="skip the recipe row")
    args = parser.parse_args(argv)

    rows = []
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            rows.append(bench_architecture(name, precision, args))
            print(f"  done {name} {precision}", file=sys.stderr, flush=True)
    if not args.no_recipe:
        rows.append(bench_recipe(args))
    if args.model_file:
        rows.append(bench_model_file(args.model_file, args))
    print(
        f"segmentation speed, images/s ({keras_environment()}; training "
        f"batch {args.batch_size}, inference batch {args.infer_batch_size})"
    )
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
