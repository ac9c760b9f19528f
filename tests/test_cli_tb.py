"""Tests for ``cxrlib train-tb`` and ``cxrlib classify`` (through cxrlib.cli.main)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import save_standin_model

from cxrlib.cli import build_parser, main
from cxrlib.synthetic import write_dataset
from cxrlib.tb.config import TBConfig

FAST = ["--image-size", "64", "--splits", "2", "--repeats", "1", "--inner-splits", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_tb") / "phantoms"
    write_dataset(
        out, n=40, size=64, seed=1, layout="plain", site_fraction=0.5, progress=False, n_jobs=1
    )
    return out


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    return save_standin_model(tmp_path_factory.mktemp("seg") / "standin.keras")


@pytest.fixture(scope="module")
def run_dir(data, seg_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tb"
    status = main(
        ["-q", "train-tb", str(data), "--out", str(out), "--seg-model", str(seg_model)] + FAST
    )
    assert status == 0
    return out


def test_defaults_are_the_best_offline_pipeline():
    args = build_parser().parse_args(["train-tb", "DATA", "--out", "RUN"])
    config = TBConfig()
    assert args.features == config.features
    assert args.classifier == config.classifier
    assert args.image_size == config.image_size
    assert args.seg_epochs == config.seg_epochs
    assert (args.splits, args.repeats, args.seed) == (config.n_splits, config.n_repeats, 0)
    assert (args.calibration, args.inner_splits) == (config.calibration, config.inner_splits)
    assert args.seg_model is None
    classify_args = build_parser().parse_args(["classify", "RUN", "IMAGES", "--out", "p.csv"])
    assert classify_args.operating_point == "who"


def test_train_tb_prints_the_cross_validated_auc(data, seg_model, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["-q", "train-tb", str(data), "--out", str(out), "--seg-model", str(seg_model)]
    argv += ["--features", "handcrafted", "--classifier", "svm", *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "TB run trained" in printed
    assert "handcrafted + svm: 40 radiographs" in printed
    metrics = json.loads((out / "cv_metrics.json").read_text())["summary"]
    assert f"CV AUC {metrics['auc']:.3f} [95% CI {metrics['auc_low']:.3f}" in printed
    assert "montgomery" in printed and "shenzhen" in printed and "WHO target" in printed
    assert "Brier score (calibration sigmoid" in printed
    assert "thresholds saved for cxrlib classify: who " in printed
    assert main(argv) == 0
    assert "reused (same configuration and data)" in capsys.readouterr().out


def test_classify_writes_one_row_per_radiograph(run_dir, data, tmp_path, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    images = sorted((data / "images").glob("*.png"))[:5]
    for i, path in enumerate(images):
        shutil.copy(path, folder / f"scan-{i}.png")
    (folder / "corrupt.png").write_bytes(b"garbage")
    out = tmp_path / "predictions.csv"
    assert main(["-q", "classify", str(run_dir), str(folder), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "file",
        "probability",
        "prediction",
        "operating_point",
        "threshold",
    ]
    assert (table["operating_point"] == "who").all()
    assert sorted(table["file"]) == [f"scan-{i}.png" for i in range(5)]
    assert table["probability"].between(0, 1).all()
    assert set(table["prediction"]) <= {0, 1}
    printed = capsys.readouterr().out
    assert "classified 5 radiograph(s)" in printed
    assert "corrupt.png: unreadable image" in printed
    assert "masks by openvino, inline" in printed  # the default runtime and scheduler
    argv = ["-q", "classify", str(run_dir), str(folder), "--out", str(out)]
    assert main([*argv, "--runtime", "keras", "--scheduler", "inline"]) == 0
    assert "masks by keras, inline" in capsys.readouterr().out
    np.testing.assert_allclose(pd.read_csv(out)["probability"], table["probability"], atol=0.02)


def test_classify_refuses_a_segmentation_run(run_dir, data, tmp_path, capsys):
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    (seg_dir / "key.json").write_text('{"what": "cxrlib.seg.train.train_segmentation"}')
    status = main(
        ["classify", str(seg_dir), str(data / "images"), "--out", str(tmp_path / "p.csv")]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert (
        "RUN_DIR" in err and "is a segmentation run, not a TB run (made by cxrlib train-seg)" in err
    )
    assert "Traceback" not in err


def test_classify_refuses_a_folder_without_radiographs(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    status = main(["classify", str(run_dir), str(empty), "--out", str(tmp_path / "p.csv")])
    assert status == 2
    assert "no radiographs to classify" in capsys.readouterr().err


def test_train_tb_reports_unlabelled_data(seg_model, data, tmp_path, capsys):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, path in enumerate(sorted((data / "images").glob("*.png"))[:3]):
        shutil.copy(path, folder / f"img{i}.png")
    argv = ["train-tb", str(folder), "--out", str(tmp_path / "r"), "--seg-model", str(seg_model)]
    assert main(argv) == 2
    assert "none with a label" in capsys.readouterr().err


def test_train_tb_rejects_an_unknown_feature_extractor(data, tmp_path, capsys):
    argv = ["train-tb", str(data), "--out", str(tmp_path / "r"), "--features", "handcrafted,sift"]
    assert main(argv) == 2
    assert "unknown extractor(s) ['sift']" in capsys.readouterr().err
