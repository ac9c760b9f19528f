"""The benchmark scripts run and print their table (tiny settings; no speed is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cxrlib.synthetic import write_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_segment_prints_one_row_per_model(tmp_path):
    write_dataset(tmp_path / "data", n=5, size=64, seed=0, progress=False)
    images = tmp_path / "data" / "Lung Segmentation" / "CXR_png"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_segment.py")]
    command += ["--images", str(images), "--img-size", "32", "--repeats", "1", "--batch-size", "4"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cxrlib segment end to end on ")
    header = lines[1].split()
    for column in ("model", "best_img_s", "first_img_s", "speed_up", "mean_lung_frac"):
        assert column in header
    body = "\n".join(lines[2:])
    assert "original float32" in body and "recipe-width mixed_bfloat16" in body
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 3
    assert all(" 5 " in f" {row} " for row in rows), "every row segments the 5 images"
