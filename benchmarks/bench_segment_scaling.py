"""Benchmark: ``cxrlib segment`` on a whole folder, in-process and on local Dask workers.

Prints ONE table and a resume check:

* rows: the same folder of synthetic radiographs segmented in this process
  (``--scheduler inline``, the baseline), then on a local Dask cluster of 1 and 2
  worker processes (``--scheduler local --workers N``); images/s without the set-up,
  the set-up (cluster start, model load) separately, and the parallel efficiency
  ``images/s(N) / (N * images/s(1 worker))``;
* resume: ``cxrlib segment`` on 2 local workers is killed (SIGKILL of its whole process
  group: the client and every worker) once about half the images are recorded; the
  rerun must segment exactly the images the manifest had not recorded;
* a paper estimate for a CheXmask-sized archive (657,000 radiographs) from the
  measured rate of one worker, with its assumptions printed.

On a 2-core machine one worker (or the in-process run) already uses both cores, so a
second worker cannot add speed there: the efficiency column shows the cost of the
workers, not the scaling of a bigger machine.

The model is the default recipe's ResUNet (``cxrlib train-seg`` defaults) with random
weights (speed does not depend on them), run with the default runtime.

Usage::

    python benchmarks/bench_segment_scaling.py              # 2,000 phantoms at 512x512
    python benchmarks/bench_segment_scaling.py --n 200      # a quick look
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from keras_env import cpu_description  # noqa: E402

CHEXMASK_IMAGES = 657_000


def _phantoms(folder: Path, n: int, size: int) -> Path:
    from cxrlib.synthetic import write_dataset

    write_dataset(folder, n=n, size=size, seed=0, progress=False, n_jobs=os.cpu_count() or 1)
    return folder / "Lung Segmentation" / "CXR_png"


def _model(path: Path) -> Path:
    import keras

    from cxrlib.seg.models import build_model
    from cxrlib.seg.train_config import cpu_recipe

    recipe = cpu_recipe("resunet", precision="float32")
    keras.utils.set_random_seed(0)
    size = recipe.img_size
    build_model("resunet", input_shape=(size, size, 1), filters=recipe.resolved_filters).save(path)
    return path


def _row(label: str, report, workers: int) -> dict:
    return {
        "run": label,
        "workers": workers,
        "images": report.n_segmented,
        "setup_s": report.setup_seconds,
        "seconds": report.seconds,
        "img_per_s": report.images_per_s,
        "runtime": report.runtime,
    }


def _recorded(out: Path) -> int:
    from cxrlib.seg.manifest import Manifest

    return len(Manifest(out).records())


def _kill_and_resume(model: Path, images: Path, out: Path, n: int, runtime: str) -> dict:
    """Kill a 2-worker run at about half way; the rerun redoes only what was not recorded."""
    from cxrlib.seg.folder import segment_folder

    command = [
        sys.executable, "-c", "from cxrlib.cli import main; main()", "--quiet", "segment",
        str(model), str(images), str(out), "--scheduler", "local", "--workers", "2",
        "--runtime", runtime,
    ]  # fmt: skip
    child = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 1800
    while _recorded(out) < n // 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    time.sleep(1.0)  # orphaned workers notice their nanny is gone
    recorded = _recorded(out)
    with warnings.catch_warnings():  # "taking over the stale lock": the point of the test
        warnings.simplefilter("ignore", UserWarning)
        report = segment_folder(model, images, out, progress=False, runtime=runtime)
    return {
        "killed_after_recorded": recorded,
        "rerun_segmented": report.n_segmented,
        "rerun_resumed": report.resumed,
        "expected_redo": n - recorded,
        "only_unfinished_redone": report.n_segmented == n - recorded,
        "total_rows": report.n_images,
    }


def _estimate(per_worker: float, cores_per_node: int, efficiency: float = 0.8) -> str:
    """Hours for a CheXmask-sized archive from the measured rate of one 2-core worker."""
    workers = cores_per_node // 2
    lines = [
        f"Paper estimate for {CHEXMASK_IMAGES:,} radiographs. Assumptions: one Dask worker "
        f"per 2 cores, each as fast as the measured 1-worker run here ({per_worker:.1f} "
        f"images/s on 2 cores), {cores_per_node}-core nodes ({workers} workers each), "
        f"parallel efficiency {efficiency:.0%} across workers and nodes (not measurable on "
        "2 cores), inputs at 512x512 like these phantoms (full-size archive radiographs "
        "cost more to decode), and a shared file system that keeps up:"
    ]
    for nodes in (1, 10, 50):
        rate = per_worker * workers * nodes * efficiency
        hours = CHEXMASK_IMAGES / rate / 3600
        lines.append(f"  {nodes:3d} node(s): {rate:8.0f} images/s, {hours:6.2f} h")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic radiographs (2000)")
    parser.add_argument("--size", type=int, default=512, help="their side in pixels (512)")
    parser.add_argument("--runtime", default="auto", help="segment runtime (auto)")
    parser.add_argument("--cores-per-node", type=int, default=32, help="for the estimate (32)")
    args = parser.parse_args(argv)

    import pandas as pd

    from cxrlib.seg.folder import segment_folder
    from cxrlib.seg.runtime import resolve_runtime

    runtime = resolve_runtime(args.runtime)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        images = _phantoms(scratch / "phantoms", args.n, args.size)
        print(f"wrote {args.n} phantoms in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        model = _model(scratch / "model.keras")
        segment_folder(model, images, scratch / "warm", progress=False, runtime=runtime)  # export
        rows = []
        report = segment_folder(model, images, scratch / "inline", progress=False, runtime=runtime)
        rows.append(_row("inline (this process)", report, 0))
        for workers in (1, 2):
            report = segment_folder(
                model, images, scratch / f"local{workers}", progress=False, runtime=runtime,
                scheduler="local", n_workers=workers,
            )  # fmt: skip
            rows.append(_row(f"local Dask, {workers} worker(s)", report, workers))
            print(f"  done {workers} worker(s)", file=sys.stderr, flush=True)
        resume = _kill_and_resume(model, images, scratch / "killed", args.n, runtime)

    table = pd.DataFrame(rows)
    one = table.loc[table["workers"] == 1, "img_per_s"].iloc[0]
    table["efficiency"] = [
        float("nan") if w == 0 else r / (w * one)
        for w, r in zip(table["workers"], table["img_per_s"], strict=True)
    ]
    table["vs_inline"] = table["img_per_s"] / table["img_per_s"].iloc[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cxrlib segment, {args.n} phantoms at {args.size}x{args.size}, default-recipe ResUNet "
        f"(random weights), runtime {runtime}; {cpu_description()}, {cores} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("resume after SIGKILL of a 2-worker run:")
    for key, value in resume.items():
        print(f"  {key}: {value}")
    print(_estimate(float(one), args.cores_per_node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
