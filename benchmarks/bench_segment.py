"""Benchmark: ``cxrlib segment`` end to end with ResUNet models at 256x256.

Prints ONE table. Every row runs :func:`cxrlib.seg.folder.segment_folder` (what
``cxrlib segment MODEL IMAGES_DIR OUT_DIR`` calls) on the same folder of radiographs:
read each file, resize it to the model's input, predict in batches, threshold,
post-process, resize the mask back to the file's resolution, write the mask PNG, the
overlay PNG and ``lungs.csv``. The rows:

* ``original float32``: the original ResUNet (4,722,737 parameters at 256x256) in
  float32, the baseline the speed-up column divides by;
* ``original mixed_bfloat16``: the same network computing in bfloat16;
* ``recipe-width mixed_bfloat16``: the CPU recipe's narrow ResUNet
  (:func:`cxrlib.seg.train_config.cpu_recipe`'s filters) built at 256x256 in bfloat16;
* one row per ``--model-file``: a trained model, in the precision it was saved with.

Built rows carry random weights: their masks are not lungs, so their post-processing
(connected components, hole filling) differs from a trained model's; a trained
``--model-file`` row shows the real mix. Each row runs the folder ``--repeats`` times
(each run loads the model file and traces the prediction graph, as one ``cxrlib segment``
command does) and reports the first and the best run. Loading the model file is the
"load s" column and, as in the command's own report, not part of images/s; neither is
importing TensorFlow.

Usage::

    CXR_REAL_DIR=../shared/cxr-real python benchmarks/bench_segment.py
    python benchmarks/bench_segment.py --images DIR --model-file RUN/model.keras

Without ``--images`` it segments the 77 real radiographs of ``Lung Segmentation/test``
when ``CXR_REAL_DIR`` is set, else 77 phantoms at 512x512 written to a temporary folder.
Target (issue 3): >= 20 images/s at 256x256 on 2 cores with a ResUNet.
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


def _default_images(scratch: Path, n: int) -> Path:
    real = os.environ.get("CXR_REAL_DIR")
    if real:
        folder = Path(real) / "Lung Segmentation" / "test"
        if not folder.is_dir():
            raise SystemExit(f"CXR_REAL_DIR is set but {folder} does not exist")
        return folder
    from cxrlib.synthetic import write_dataset

    write_dataset(scratch / "phantoms", n=n, size=512, seed=0, progress=False)
    return scratch / "phantoms" / "Lung Segmentation" / "CXR_png"


def _build_and_save(path: Path, size: int, filters: tuple[int, ...] | None, precision: str):
    import keras

    from cxrlib.precision import precision_scope
    from cxrlib.seg.models import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    kwargs = {"input_shape": (size, size, 1)}
    if filters is not None:
        kwargs["filters"] = filters
    with precision_scope(precision):
        model = build_model("resunet", **kwargs)
    model.save(path)
    return model.count_params()


def time_model(
    label: str, model_path: Path, images: Path, scratch: Path, batch: int, repeats: int
) -> dict:
    """Segment ``images`` with ``model_path`` ``repeats`` times; one table row."""
    import keras

    from cxrlib.seg.folder import segment_folder
    from cxrlib.seg.inference import load_segmentation_model, model_input_size

    keras.backend.clear_session()
    start = time.perf_counter()
    model = load_segmentation_model(model_path)
    load_s = time.perf_counter() - start
    reports = []
    for attempt in range(repeats):
        out = scratch / f"out-{label.replace(' ', '_').replace('/', '_')}-{attempt}"
        reports.append(segment_folder(model_path, images, out, batch_size=batch, progress=False))
    best = max(reports, key=lambda report: report.images_per_s)
    size = model_input_size(model)
    return {
        "model": label,
        "params": model.count_params(),
        "input": f"{size[0]}x{size[1]}",
        # the output layer computes in float32 in every policy: show a convolution's
        "precision": next(
            layer.dtype_policy.name for layer in model.layers if "conv" in layer.name
        ),
        "images": best.n_images,
        "load_s": load_s,
        "first_img_s": reports[0].images_per_s,
        "best_img_s": best.images_per_s,
        "best_cpu_s": best.cpu_seconds,
        "mean_lung_frac": float(best.table["lung_area_fraction"].mean()),
    }


def _table(rows: list[dict]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)
    base = table.loc[table["model"] == "original float32", "best_img_s"]
    table["speed_up"] = table["best_img_s"] / base.iloc[0] if len(base) else float("nan")
    return table.to_string(index=False, float_format=lambda v: f"{v:.2f}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=None, help="folder of radiographs")
    parser.add_argument("--n-phantoms", type=int, default=77, help="when no real data (77)")
    parser.add_argument("--img-size", type=int, default=256, help="built models' input (256)")
    parser.add_argument("--batch-size", type=int, default=16, help="inference batch (16)")
    parser.add_argument("--model-file", type=Path, action="append", default=[])
    parser.add_argument("--repeats", type=int, default=2, help="runs per model (2)")
    parser.add_argument("--no-original", action="store_true", help="skip the original rows")
    args = parser.parse_args(argv)

    from cxrlib.seg.train_config import cpu_recipe

    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        scratch = Path(tmp)
        images = args.images or _default_images(scratch, args.n_phantoms)
        built = []
        if not args.no_original:
            built += [("original float32", None, "float32")]
            built += [("original mixed_bfloat16", None, "mixed_bfloat16")]
        built += [("recipe-width mixed_bfloat16", cpu_recipe().resolved_filters, "mixed_bfloat16")]
        rows = []
        for label, filters, precision in built:
            path = scratch / f"{label.replace(' ', '_')}.keras"
            _build_and_save(path, args.img_size, filters, precision)
            rows.append(time_model(label, path, images, scratch, args.batch_size, args.repeats))
            print(f"  done {label}", file=sys.stderr, flush=True)
        for path in args.model_file:
            rows.append(
                time_model(
                    f"file:{path.parent.name}/{path.name}",
                    path,
                    images,
                    scratch,
                    args.batch_size,
                    args.repeats,
                )
            )
            print(f"  done {path}", file=sys.stderr, flush=True)

    print(f"cxrlib segment end to end on {images} ({keras_environment()}, batch {args.batch_size})")
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
