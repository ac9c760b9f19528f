"""Benchmark: lung segmentation end to end with the Keras, ONNX Runtime and OpenVINO runtimes.

Prints ONE table (after the CPU model and flags). Each row is a model and a runtime
(:func:`cxrlib.seg.runtime.load_predictor`):

* ``original``: the original ResUNet (filters 16-32-64-128-256, 4,722,737 parameters) at
  256x256 saved in float32; with Keras in float32 (the baseline of the ratio columns), Keras
  in mixed_bfloat16, ONNX Runtime, OpenVINO as saved (f32) and OpenVINO in bf16;
* ``cpu-recipe``: the CPU recipe's width-reduced ResUNet (filters 16-16-32-64-128) built
  at 256x256 in the recipe's precision (``"auto"``: mixed_bfloat16 on a CPU with native
  bfloat16), with Keras and with the runtime ``"auto"`` picks, both as saved.

Weights are random (speed does not depend on them). With ``ONEDNN_MAX_CPU_ISA=AVX2`` in the
environment (inherited by every child) the benchmark stands in for a CPU without AVX-512 and
bfloat16: the recipe model is built in float32 (``auto``) and the bfloat16 rows are left out.
Columns:

* ``export_s``: converting the ``.keras`` file once (a fresh process: imports included);
* ``cold_s``: the fixed cost each command pays: a fresh process importing cxrlib, loading
  the model (a cached export for ONNX/OpenVINO) and predicting its first batch, less the
  time a second batch takes (what is left is imports, loading, tracing and compiling);
* ``img_s_77`` / ``img_s_640``: end to end on the first 77 and on all 640 real radiographs
  (512x512 PNGs): :func:`cxrlib.seg.folder.segment_folder` reading each PNG, resizing it,
  predicting in batches, resizing the probabilities back, thresholding and writing the mask
  PNG (no post-processing, no overlays: random weights make noise masks whose connected
  components cost the same in every row). Throughput excludes the set-up that
  ``segment_folder`` reports (model checks, loading, OpenVINO's compile) but includes
  Keras' tracing of its prediction graph on the first batch;
* ``predict_img_s``: ``predictor.predict`` alone on random batches at 256x256;
* ``x_77``, ``x_640``, ``x_pred``: ratios to the baseline row.

Usage::

    CXR_REAL_DIR=/work/shared/cxr-real python benchmarks/bench_segment_runtime.py
    python benchmarks/bench_segment_runtime.py --images DIR --counts 8 --img-size 64
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keras_env import cpu_description  # noqa: E402

ORIGINAL_FILTERS = (16, 32, 64, 128, 256)


@dataclass
class Row:
    """One model and runtime of the table, and what was measured."""

    label: str
    model: str  # "original" or "cpu-recipe"
    runtime: str
    precision: str | None
    used: str = ""  # what the predictor computes in
    export_s: float = float("nan")
    cold_s: float = float("nan")
    img_s: dict[int, float] = field(default_factory=dict)
    predict_img_s: float = float("nan")


def _default_images() -> Path:
    root = Path(os.environ.get("CXR_REAL_DIR", "/work/shared/cxr-real"))
    return root / "Lung Segmentation" / "CXR_png"


def _build_models(scratch: Path, size: int) -> dict[str, Path]:
    import keras

    from cxrlib.precision import precision_scope
    from cxrlib.seg.models import build_resunet
    from cxrlib.seg.train_config import cpu_recipe

    keras.utils.set_random_seed(0)
    paths = {"original": scratch / "original" / "model.keras"}
    build_resunet((size, size, 1), ORIGINAL_FILTERS).save(_mkdir(paths["original"]))
    recipe = cpu_recipe()
    paths["cpu-recipe"] = scratch / "cpu-recipe" / "model.keras"
    with precision_scope(recipe.precision):
        build_resunet((size, size, 1), recipe.resolved_filters).save(_mkdir(paths["cpu-recipe"]))
    return paths


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _child(code: str) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON line last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export_seconds(model: Path, runtime: str) -> float:
    code = (
        "import time; t = time.perf_counter()\n"
        "import json\n"
        "from cxrlib.seg.runtime import export_model\n"
        f"export_model({str(model)!r}, {runtime!r})\n"
        "print(json.dumps({'s': time.perf_counter() - t}))\n"
    )
    return float(_child(code)["s"])


def _cold_seconds(model: Path, row: Row, batch: int) -> tuple[float, str]:
    code = (
        "import time; t = time.perf_counter()\n"
        "import json\n"
        "import numpy as np\n"
        "from cxrlib.seg.runtime import load_predictor\n"
        f"p = load_predictor({str(model)!r}, {row.runtime!r}, precision={row.precision!r})\n"
        f"x = np.zeros(({batch}, *p.input_size, 1), np.float32)\n"
        "p.predict(x)\n"
        "first = time.perf_counter()\n"
        "p.predict(x)\n"
        "steady = time.perf_counter() - first\n"
        "assert p.export_seconds == 0.0, 'the export was not cached'\n"
        "print(json.dumps({'s': first - t - steady, 'used': p.precision}))\n"
    )
    out = _child(code)
    return float(out["s"]), str(out["used"])


def _subset(images: Path, n: int, scratch: Path) -> Path:
    """A folder of links to the first ``n`` images (file-name order)."""
    files = sorted(p for p in images.iterdir() if p.is_file())[:n]
    folder = scratch / f"first{n}"
    folder.mkdir(exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def _segment_folder_accepts_runtime() -> bool:
    from cxrlib.seg.folder import segment_folder

    return "runtime" in inspect.signature(segment_folder).parameters


def _end_to_end(model: Path, row: Row, images: Path, out: Path, batch: int) -> float:
    """Images per second of segmenting ``images`` (set-up excluded)."""
    from cxrlib.seg.folder import segment_folder

    report = segment_folder(
        model, images, out, runtime=row.runtime, precision=row.precision, batch_size=batch,
        postprocess=False, overlays=False, progress=False,
    )  # fmt: skip
    return report.images_per_s  # set-up (checks, load, compile) not included


def _end_to_end_fallback(model: Path, row: Row, images: Path, out: Path, batch: int) -> float:
    """The same steps without segment_folder (read, resize, predict, resize back, write)."""
    from cxrlib.data.imageio import read_image, write_png
    from cxrlib.preprocess.transforms import resize_image
    from cxrlib.seg.runtime import load_predictor

    predictor = load_predictor(model, row.runtime, precision=row.precision)
    files = sorted(images.iterdir())
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        originals = [read_image(f) for f in files[i : i + batch]]
        x = np.stack([resize_image(im, predictor.input_size) for im in originals])[..., None]
        probs = predictor.predict(x)
        for f, im, p in zip(files[i : i + batch], originals, probs, strict=True):
            mask = resize_image(p[..., 0], im.shape, method="bilinear") > 0.5
            write_png(out / f"{f.stem}.png", mask)
    return len(files) / (time.perf_counter() - start)


def _predict_only(model: Path, row: Row, n: int, batch: int) -> tuple[float, str]:
    from cxrlib.seg.runtime import load_predictor

    predictor = load_predictor(model, row.runtime, precision=row.precision, max_batch=batch)
    x = np.random.default_rng(0).random((n, *predictor.input_size, 1), dtype=np.float32)
    predictor.predict(x[:batch])  # warm-up: traces / compiles
    start = time.perf_counter()
    predictor.predict(x)
    return n / (time.perf_counter() - start), predictor.precision


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=_default_images())
    parser.add_argument("--counts", type=int, nargs="+", default=[77, 640])
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--predict-images", type=int, default=64)
    args = parser.parse_args(argv)

    from cxrlib.seg.runtime import AUTO_ORDER, available_runtimes, resolve_runtime

    available = available_runtimes()
    auto = resolve_runtime("auto")
    from cxrlib.precision import cpu_supports_bf16, onednn_isa_cap

    native_bf16 = bool(cpu_supports_bf16())  # bf16 rows only where the CPU computes it
    rows = [Row("original keras float32 (baseline)", "original", "keras", "float32")]
    if native_bf16:
        rows.append(Row("original keras mixed_bfloat16", "original", "keras", "mixed_bfloat16"))
    for runtime in ("onnx", "openvino"):
        if runtime in available:
            rows.append(Row(f"original {runtime} as saved", "original", runtime, None))
    if "openvino" in available and native_bf16:
        rows.append(Row("original openvino bf16", "original", "openvino", "mixed_bfloat16"))
    rows.append(Row("cpu-recipe keras as saved", "cpu-recipe", "keras", None))
    rows.append(Row(f"cpu-recipe auto={auto} as saved", "cpu-recipe", auto, None))

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    use_folder = _segment_folder_accepts_runtime()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        scratch = Path(tmp)
        models = _build_models(scratch, args.img_size)
        folders = {n: _subset(args.images, n, scratch) for n in args.counts}
        counts = {n: len(list(f.iterdir())) for n, f in folders.items()}
        exported: dict[tuple[str, str], float] = {}
        for row in rows:
            model = models[row.model]
            if row.runtime != "keras":
                key = (row.model, row.runtime)
                if key not in exported:
                    exported[key] = _export_seconds(model, row.runtime)
                row.export_s = exported[key]
            row.cold_s, row.used = _cold_seconds(model, row, args.batch_size)
            run = _end_to_end if use_folder else _end_to_end_fallback
            for n, folder in folders.items():
                out = scratch / "out" / f"{rows.index(row)}-{n}"
                row.img_s[n] = run(model, row, folder, out, args.batch_size)
            row.predict_img_s, _ = _predict_only(model, row, args.predict_images, args.batch_size)
            print(f"# done: {row.label}", file=sys.stderr, flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"segmentation runtimes at {args.img_size}x{args.img_size}, batch {args.batch_size}, "
        f"random weights, {cpu_description()}, "
        f"{f'ONEDNN_MAX_CPU_ISA={onednn_isa_cap()}, ' if onednn_isa_cap() else ''}"
        f"native bf16 {native_bf16}, {cores} cores, load average {load:.1f}; "
        f"end to end via {'segment_folder' if use_folder else 'predictor + read/write loop'}; "
        f"auto order {AUTO_ORDER}, installed {available}"
    )
    n_cols = [f"img_s_{counts[n]}" for n in args.counts]
    x_cols = [f"x_{counts[n]}" for n in args.counts]
    header = ["row", "computes", "export_s", "cold_s", *n_cols, "predict_img_s", *x_cols, "x_pred"]
    base = rows[0]
    table = []
    for row in rows:
        ratios = [row.img_s[n] / base.img_s[n] for n in args.counts]
        table.append(
            [
                row.label, row.used, _fmt(row.export_s), _fmt(row.cold_s),
                *(_fmt(row.img_s[n]) for n in args.counts), _fmt(row.predict_img_s),
                *(_fmt(r, 2) for r in ratios), _fmt(row.predict_img_s / base.predict_img_s, 2),
            ]
        )  # fmt: skip
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table, strict=True)]
    for line in (header, *table):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(map(str, line), widths, strict=True))
        ]
        print("  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
