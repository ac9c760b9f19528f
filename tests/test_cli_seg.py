"""Tests for the segmentation commands: ``cxrlib train-seg`` and ``cxrlib segment``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib.cli import main
from cxrlib.cli.seg import parse_filters
from cxrlib.data.imageio import write_png


def make_dataset(root: Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Plain images/ + masks/ folder: two dark 'lungs' on a bright, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        prefix = "MC" if i % 2 == 0 else "CHN"
        name = f"{prefix}_{i:04d}_{(i // 2) % 2}"
        mask = np.zeros((size, size), bool)
        for cx in (0.3, 0.7):
            mask |= ((xx - cx - rng.uniform(-0.04, 0.04)) / 0.13) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        image = 0.75 - 0.45 * mask + 0.05 * rng.standard_normal((size, size))
        write_png(root / "images" / f"{name}.png", np.clip(image, 0, 1))
        write_png(root / "masks" / f"{name}.png", mask)
    return root


TINY_ARGS = [
    "--model",
    "unet",
    "--img-size",
    "32",
    "--filters",
    "4,8",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--precision",
    "float32",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_dataset(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXRLIB_CACHE_DIR", str(root / "cache"))
        code = main(["-q", "train-seg", str(data), "--out", str(root / "run"), *TINY_ARGS])
    return {"code": code, "data": data, "run": root / "run", "root": root}


def test_train_seg_writes_the_run(trained_run, capsys):
    assert trained_run["code"] == 0
    run = trained_run["run"]
    for name in ("model.keras", "metrics.json", "split.csv", "history.json", "config.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "unet" and config["filters"] == [4, 8] and config["epochs"] == 1


def test_train_seg_again_reuses(trained_run, capsys, monkeypatch):
    monkeypatch.setenv("CXRLIB_CACHE_DIR", str(trained_run["root"] / "cache"))
    before = (trained_run["run"] / "model.keras").stat().st_mtime_ns
    code = main(
        ["-q", "train-seg", str(trained_run["data"]), "--out", str(trained_run["run"]), *TINY_ARGS]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "reused" in out and "test Dice" in out and "montgomery" in out
    assert (trained_run["run"] / "model.keras").stat().st_mtime_ns == before


def test_segment_command(trained_run, tmp_path, capsys):
    images = trained_run["data"] / "images"
    extra = tmp_path / "images"
    extra.mkdir()
    for path in sorted(images.glob("*.png"))[:3]:
        (extra / path.name).write_bytes(path.read_bytes())
    (extra / "readme.txt").write_text("hi")
    out_dir = tmp_path / "out"
    code = main(
        ["-q", "segment", str(trained_run["run"] / "model.keras"), str(extra), str(out_dir)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "segmented 3 image(s)" in out
    assert "readme.txt: not an image file" in out
    table = pd.read_csv(out_dir / "lungs.csv")
    assert len(table) == 3 and (out_dir / "overlays").is_dir()
    assert table["quality"].between(0, 1).all() and table["flag"].dtype == bool
    strict = main(
        ["-q", "segment", str(trained_run["run"] / "model.keras"), str(extra),
         str(tmp_path / "strict"), "--flag-below", "1"]
    )  # fmt: skip
    assert strict == 0 and "flagged 3 of 3 mask(s) for review" in capsys.readouterr().out


def test_missing_data_dir_is_a_one_line_error(tmp_path, capsys):
    code = main(["train-seg", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("cxrlib train-seg: error:") and "missing" in err
    assert len(err.splitlines()) == 1


def test_img_size_not_divisible_is_a_one_line_error(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=3)
    code = main(["train-seg", str(data), "--out", str(tmp_path / "run"), "--img-size", "100"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "img_size=100 is not divisible by 16" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_bad_model_file_is_a_one_line_error(tmp_path, capsys):
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    (tmp_path / "images").mkdir()
    code = main(["segment", str(fake), str(tmp_path / "images"), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "model.keras: not a readable Keras model file" in err
    assert len(err.splitlines()) == 1


def test_bad_filters_are_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train-seg", str(tmp_path), "--out", str(tmp_path / "r"), "--filters", "a,b"])
    assert info.value.code == 2
    assert "--filters" in capsys.readouterr().err
    assert parse_filters("16, 32,64") == (16, 32, 64)


def test_train_seg_defaults_are_the_cpu_recipe():
    from cxrlib.cli import build_parser
    from cxrlib.cli.seg import _config_from_args
    from cxrlib.seg.train_config import cpu_recipe, gpu_recipe

    parser = build_parser()
    args = parser.parse_args(["train-seg", "data", "--out", "run"])
    assert _config_from_args(args) == cpu_recipe("resunet")
    args = parser.parse_args(["train-seg", "d", "--out", "r", "--model", "unet", "--epochs", "2"])
    assert _config_from_args(args) == cpu_recipe("unet", epochs=2)
    args = parser.parse_args(["train-seg", "d", "--out", "r", "--filters", "original"])
    assert _config_from_args(args).filters is None
    args = parser.parse_args(["train-seg", "d", "--out", "r", "--no-augment", "--seed", "3"])
    assert _config_from_args(args) == cpu_recipe("resunet", augment=False, seed=3)
    args = parser.parse_args(["train-seg", "d", "--out", "r", "--recipe", "gpu", "--epochs", "5"])
    assert _config_from_args(args) == gpu_recipe("resunet", epochs=5)


def test_segment_help_gives_the_library_flag_threshold(capsys):
    from cxrlib.cli.seg import DEFAULT_FLAG_BELOW
    from cxrlib.seg.quality import FLAG_BELOW

    assert DEFAULT_FLAG_BELOW == FLAG_BELOW
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert f"({FLAG_BELOW})" in " ".join(capsys.readouterr().out.split())


def test_help_mentions_the_cpu_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["train-seg", "--help"])
    text = capsys.readouterr().out
    assert "auto" in text and "128" in text and "--recipe" in text
