"""Benchmark: training images/s of the seed networks on each Keras backend, and the default.

Prints ONE table. Each option runs in its own process (the Keras backend is chosen at
import): TensorFlow eager-graph (``jit_compile=False``, the baseline), TensorFlow with XLA
(``jit_compile=True``), JAX (always jit-compiled) and PyTorch (eager), each only where
installed. For every option it times ``train_on_batch`` of both architectures with their
original (seed) filters at ``--img-size`` in float32, after warm-up. Then the default of
``cxrlib train-seg`` (the CPU recipe's filters, TensorFlow, precision ``auto`` as resolved
in that process) and the recipe in float32. ``ratio`` is a row's images/s over the
TensorFlow float32 seed network of the same architecture.

``--isa-cap AVX2`` runs every child with ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN then uses no
AVX-512 or bfloat16 instruction, and cxrlib's CPU probe reports no native bfloat16, which
is how this benchmark stands in for a CPU without them on one that has them.

Usage::

    python benchmarks/bench_training_backends.py                # 128x128, batch 8
    python benchmarks/bench_training_backends.py --isa-cap AVX2

Numbers depend on the CPU and its load; the header line gives the CPU model and flags.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPTIONS = (
    ("tensorflow", False, "tensorflow"),
    ("tensorflow", True, "tensorflow"),
    ("jax", True, "jax"),
    ("torch", False, "torch"),
)

_CHILD = """
import json, sys, time
import numpy as np
import keras
from cxrlib.precision import precision_scope, resolve_precision
from cxrlib.seg.losses import get_loss
from cxrlib.seg.models import build_model
args = json.loads(sys.argv[1])
rows = []
for name in args["models"]:
    keras.utils.set_random_seed(0)
    kwargs = {"input_shape": (args["size"], args["size"], 1)}
    if args["filters"]:
        kwargs["filters"] = tuple(args["filters"][name])
    policy = resolve_precision(args["precision"])
    with precision_scope(policy):
        model = build_model(name, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("bce_dice"),
                  jit_compile=args["jit"])
    rng = np.random.default_rng(0)
    x = rng.random((args["batch"], args["size"], args["size"], 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    for _ in range(args["warmup"]):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(args["steps"]):
        model.train_on_batch(x, y)
    rows.append({"model": name, "precision": policy, "params": model.count_params(),
                 "train_img_s": args["steps"] * args["batch"] / (time.perf_counter() - start)})
print("RESULT " + json.dumps(rows))
"""


def _run_option(
    backend: str,
    jit: bool,
    args: argparse.Namespace,
    *,
    filters: dict[str, list[int]] | None = None,
    precision: str = "float32",
) -> list[dict] | str:
    payload = {
        "models": args.models.split(","),
        "size": args.img_size,
        "batch": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "jit": jit,
        "filters": filters,
        "precision": precision,
    }
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if args.isa_cap:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa_cap
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(payload)],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed: {last[:120]}"


def main(argv: list[str] | None = None) -> int:
    """Run every installed option and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (6)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", default="unet,resunet")
    parser.add_argument(
        "--isa-cap",
        default=None,
        help="ONEDNN_MAX_CPU_ISA for every child, e.g. AVX2 (stands in for a CPU without "
        "AVX-512 and bfloat16)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from keras_env import cpu_description

    from cxrlib.seg.train_config import CPU_RECIPE_FILTERS

    recipe = {name: list(CPU_RECIPE_FILTERS[name]) for name in args.models.split(",")}
    runs = [
        (
            f"seed, {backend}{' + XLA' if jit and backend == 'tensorflow' else ''}",
            backend,
            jit,
            package,
            None,
            "float32",
        )
        for backend, jit, package in OPTIONS
    ]
    runs += [
        ("default (recipe, auto)", "tensorflow", False, "tensorflow", recipe, "auto"),
        ("recipe, float32", "tensorflow", False, "tensorflow", recipe, "float32"),
    ]
    rows, notes = [], []
    for label, backend, jit, package, filters, precision in runs:
        if importlib.util.find_spec(package) is None:
            notes.append(f"{label}: not installed")
            continue
        got = _run_option(backend, jit, args, filters=filters, precision=precision)
        if isinstance(got, str):
            notes.append(f"{label}: {got}")
            continue
        rows += [{"option": label, **row} for row in got]
        print(f"  done {label}", file=sys.stderr, flush=True)

    import pandas as pd

    table = pd.DataFrame(rows)
    if not table.empty:
        base = table[table["option"] == "seed, tensorflow"].set_index("model")["train_img_s"]
        table["ratio"] = [
            r.train_img_s / base.get(r.model, float("nan")) for r in table.itertuples()
        ]
    load = os.getloadavg()[0]
    cap = f", ONEDNN_MAX_CPU_ISA={args.isa_cap}" if args.isa_cap else ""
    print(
        f"training images/s, {args.img_size}x{args.img_size}, batch {args.batch_size}; "
        f"baseline: the seed network in float32 on TensorFlow ({cpu_description()}{cap}, "
        f"{os.cpu_count()} cores, load {load:.1f})"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
