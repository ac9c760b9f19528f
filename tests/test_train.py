"""Tests for cxrlib.seg.train, train_config and results: config, load-or-train, resume, files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from cxrlib.data.imageio import write_png
from cxrlib.precision import precision_scope, resolve_precision
from cxrlib.seg import checkpoints, results, train, train_config
from cxrlib.seg.train import RunDirError, train_segmentation
from cxrlib.seg.train_config import TrainConfig

SITES = {"MC": "montgomery", "CHN": "shenzhen"}


def make_dataset(root: Path, n: int = 12, size: int = 48, seed: int = 0) -> Path:
    """Plain images/ + masks/ folder: two dark 'lungs' on a bright, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        prefix = "MC" if i % 2 == 0 else "CHN"
        name = f"{prefix}_{i:04d}_{(i // 2) % 2}"
        mask = np.zeros((size, size), bool)
        for cx in (0.3, 0.7):
            cx += rng.uniform(-0.04, 0.04)
            mask |= ((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        image = 0.75 - 0.45 * mask + 0.05 * rng.standard_normal((size, size))
        write_png(root / "images" / f"{name}.png", np.clip(image, 0, 1))
        write_png(root / "masks" / f"{name}.png", mask)
    return root


TINY = {
    "model": "resunet",
    "img_size": 32,
    "filters": (16, 16, 32),  # first levels >= 16 channels: see test_models / oneDNN note
    "epochs": 2,
    "batch_size": 4,
    "precision": "float32",
    "patience": 2,
}


# ------------------------------------------------------------------ config


def test_defaults_and_the_cpu_recipe():
    config = TrainConfig()
    assert (config.model, config.img_size) == ("resunet", 128)
    assert config.precision == resolve_precision("auto")
    assert config.resolved_filters == (16, 32, 64, 128, 256)
    assert TrainConfig(model="unet").resolved_filters == (32, 64, 128, 256, 512)
    recipe = train_config.cpu_recipe()
    assert recipe.precision == resolve_precision("auto") and recipe.img_size == 128
    assert recipe.resolved_filters == (16, 16, 32, 64, 128)
    assert (recipe.lr_schedule, recipe.epochs, recipe.patience) == ("cosine", 30, 10)
    assert train_config.cpu_recipe("unet", epochs=3).resolved_filters == (16, 32, 64, 128, 256)
    assert train_config.cpu_recipe("unet", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="model"):
        train_config.cpu_recipe("vgg")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"img_size": 100}, "img_size"),
        ({"img_size": 0}, "img_size"),
        ({"model": "vgg"}, "model"),
        ({"precision": "float16"}, "precision"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"loss": "focal"}, "loss"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "test_fraction"),
        ({"filters": (8,)}, "filters"),
        ({"filters": (16, -2)}, "filters"),
        ({"threshold": 1.0}, "threshold"),
        ({"equalize": "yes"}, "equalize"),
        ({"augment": "no"}, "augment"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"min_learning_rate": 0.1}, "min_learning_rate"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_img_size_divisibility_follows_the_depth():
    with pytest.raises(ValueError, match="not divisible by 16"):
        TrainConfig(img_size=136)
    assert TrainConfig(img_size=36, filters=(16, 32, 64)).img_size == 36  # depth 3: by 4


def test_config_round_trips_through_dict():
    config = TrainConfig(**TINY)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**config.to_dict(), "colour": 1})


def test_callbacks_keep_the_training_state_in_the_run_folder(tmp_path):
    timer = checkpoints.epoch_timer()
    callbacks = train._callbacks(tmp_path, TrainConfig(**TINY), timer)
    kinds = {type(c).__name__: c for c in callbacks}
    for name in (
        "BackupCallback",
        "BestWeights",
        "ReduceLROnPlateau",
        "EarlyStopping",
        "DivergenceGuard",
        "HistoryLog",
    ):
        assert name in kinds, name
    assert Path(kinds["BackupCallback"].backup_dir) == tmp_path / "backup"
    assert kinds["BestWeights"].path == tmp_path / "best.weights.h5"
    assert kinds["HistoryLog"].path == tmp_path / "history.csv"
    # the history row is written before the guard can stop the run, the backup last
    names = [type(c).__name__ for c in callbacks]
    assert names.index("HistoryLog") < names.index("DivergenceGuard") < names.index("BestWeights")
    assert names[-1] == "BackupCallback"


def test_cosine_schedule_replaces_reduce_on_plateau(tmp_path):
    config = TrainConfig(**{**TINY, "lr_schedule": "cosine", "epochs": 10})
    kinds = [type(c).__name__ for c in train._callbacks(tmp_path, config, None)]
    assert "ReduceLROnPlateau" not in kinds and "BackupCallback" in kinds
    optimizer = train._optimizer(config, steps_per_epoch=5)
    schedule = optimizer._learning_rate  # the schedule object
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(1e-5, rel=1e-3)
    assert float(schedule(25)) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)


def test_precision_scope_restores_the_policy():
    before = keras.config.dtype_policy().name
    with precision_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


# ------------------------------------------------------------------ end to end


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run, interrupted after its first epoch and then resumed."""
    root = tmp_path_factory.mktemp("seg")
    data = make_dataset(root / "data")
    run_dir = root / "run"
    config = TrainConfig(**TINY)
    seen: dict[str, list[str]] = {}
    real_sequence = train._make_training_sequence
    real_callbacks = train._callbacks

    def recording_sequence(images, masks, ids, held_out, cfg):
        seen.setdefault("train_ids", []).extend(ids)
        seen["held_out"] = list(held_out)
        return real_sequence(images, masks, ids, held_out, cfg)

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise _Interrupt("simulated interruption")

    def interrupting_callbacks(*args, **kwargs):
        return [*real_callbacks(*args, **kwargs), StopAfterFirstEpoch()]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_make_training_sequence", recording_sequence)
        patch.setattr(train, "_callbacks", interrupting_callbacks)
        with pytest.raises(_Interrupt):
            train_segmentation(data, config, run_dir, progress=False, cache_dir=None, n_jobs=1)
        interrupted = {
            "backup": (run_dir / "backup").is_dir(),
            "status": json.loads((run_dir / "key.json").read_text())["status"],
            "model": (run_dir / "model.keras").exists(),
        }
        patch.setattr(train, "_callbacks", real_callbacks)
        result = train_segmentation(data, config, run_dir, progress=False, cache_dir=None, n_jobs=1)
    return {"data": data, "run_dir": run_dir, "result": result, "seen": seen, **interrupted}


def test_interrupted_run_resumes_from_backup(trained):
    assert trained["backup"] and trained["status"] == "training" and not trained["model"]
    result = trained["result"]
    assert result.trained and result.resumed
    assert list(result.history["epoch"]) == [0, 1]  # epoch 0 from before the interruption
    assert not (trained["run_dir"] / "backup").exists()  # deleted after success
    assert result.timings["resumed_after_epoch"] == 1 and result.timings["epochs_this_call"] == 1
    raw = pd.read_csv(trained["run_dir"] / "history.csv")
    assert list(raw["epoch"]) == [0, 1]  # rewritten whole each epoch: no repeated rows


def test_run_writes_every_file(trained):
    run_dir = trained["run_dir"]
    for name in (
        "model.keras",
        "config.json",
        "key.json",
        "split.csv",
        "history.csv",
        "history.json",
        "metrics.json",
        "per_image.csv",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*part")) and not list(run_dir.glob(".model.*"))
    # the checkpoint, the backup and the lock go when the run is done
    assert not any((run_dir / n).exists() for n in ("best.weights.h5", "backup", "cxrlib.lock"))
    assert not list(run_dir.glob(".*"))
    assert json.loads((run_dir / "key.json").read_text())["status"] == "done"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["img_size"] == 32 and config["resolved_filters"] == [16, 16, 32]
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    assert {"loss", "val_loss", "val_dice", "learning_rate"} <= set(history[0])


def test_metrics_have_val_and_test_per_site_with_cis(trained):
    metrics = json.loads((trained["run_dir"] / "metrics.json").read_text())
    scores = metrics["scores"]
    for split in ("val", "test"):
        for resolution in ("model", "original"):
            for post in ("raw", "postprocessed"):
                sites = scores[split][resolution][post]
                assert set(sites) == {"montgomery", "shenzhen", "all"}
                for values in sites.values():
                    assert (
                        0 <= values["dice_low"] <= values["dice_mean"] <= values["dice_high"] <= 1
                    )
                    assert values["n"] >= 1
    assert scores["test"]["original"]["raw"]["all"]["n"] == 4
    timings = metrics["timings"]
    assert timings["train_images"] == 4 and timings["train_images_per_s"] > 0
    per_image = pd.read_csv(trained["run_dir"] / "per_image.csv")
    assert set(per_image["resolution"]) == {"model", "original"}


def test_original_resolution_scores_use_the_original_masks(trained):
    per_image = pd.read_csv(trained["run_dir"] / "per_image.csv")
    raw = per_image[per_image["postprocess"] == "raw"].set_index(["split", "id", "resolution"])
    model_scores = raw.xs("model", level="resolution")["hd95"]
    original_scores = raw.xs("original", level="resolution")["hd95"]
    # HD95 is in pixels of each resolution (48 vs 32): they differ, both finite or nan
    assert not np.allclose(model_scores.to_numpy(), original_scores.to_numpy(), equal_nan=True)


def test_split_is_made_before_augmentation_and_training_sees_only_train_ids(trained):
    split = pd.read_csv(trained["run_dir"] / "split.csv", dtype={"id": str})
    assert list(split.columns) == ["id", "site", "label", "split"]
    groups = {
        name: set(split.loc[split["split"] == name, "id"]) for name in ("train", "val", "test")
    }
    assert all(groups.values())
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"])
    assert not groups["val"] & groups["test"]
    seen = trained["seen"]
    assert set(seen["train_ids"]) == groups["train"]
    assert set(seen["held_out"]) == groups["val"] | groups["test"]
    assert set(split["site"]) == {"montgomery", "shenzhen"}


def test_same_config_reuses_the_model_without_training(trained, monkeypatch):
    model_path = trained["run_dir"] / "model.keras"
    before = model_path.stat().st_mtime_ns

    def no_fit(*args, **kwargs):
        raise AssertionError("must not train again")

    monkeypatch.setattr(train, "_fit", no_fit)
    again = train_segmentation(
        trained["data"], TrainConfig(**TINY), trained["run_dir"], progress=False, cache_dir=None
    )
    assert not again.trained
    assert model_path.stat().st_mtime_ns == before
    assert again.metrics == trained["result"].metrics
    assert again.epochs_run == 2
    assert again.load_model().output_shape == (None, 32, 32, 1)


def test_changed_config_raises_without_overwrite(trained):
    changed = TrainConfig(**{**TINY, "seed": 1})
    with pytest.raises(RunDirError, match="seed: 0 -> 1"):
        train_segmentation(trained["data"], changed, trained["run_dir"], progress=False)


def test_changed_data_changes_the_key(trained, tmp_path):
    config = TrainConfig(**TINY)
    table_key = train._run_key(config, train._split(_table(trained["data"]), config))["key"]
    assert table_key == trained["result"].key
    image = next((trained["data"] / "images").glob("*.png"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        new_key = train._run_key(config, train._split(_table(trained["data"]), config))["key"]
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert new_key != table_key


def _table(data: Path) -> pd.DataFrame:
    from cxrlib.data.datasets import scan_dataset

    return scan_dataset(data).table


def test_changed_config_retrains_with_overwrite(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained["run_dir"], run_dir)
    (run_dir / "notes.txt").write_text("mine")
    other = TrainConfig(
        model="unet", img_size=32, filters=(4, 8), epochs=1, batch_size=4, precision="float32"
    )
    result = train_segmentation(
        trained["data"], other, run_dir, progress=False, cache_dir=None, n_jobs=1, overwrite=True
    )
    assert result.trained and result.key != trained["result"].key
    assert json.loads((run_dir / "config.json").read_text())["model"] == "unet"
    assert list(result.history["epoch"]) == [0]  # the old history is gone
    assert (run_dir / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_too_few_masks_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=32)
    with pytest.raises(ValueError, match="too few images with lung masks"):
        train_segmentation(data, TrainConfig(**TINY), tmp_path / "run", progress=False)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        train_segmentation(tmp_path / "nope", TrainConfig(**TINY), tmp_path / "run")


def test_original_resolution_scoring_on_real_masks(real_dir):
    """A perfect soft map at 64 x 64, up-sampled to 512, scores Dice > 0.98 on real masks."""
    from cxrlib.data.imageio import read_mask
    from cxrlib.preprocess import resize_image

    masks = sorted((real_dir / "Lung Segmentation" / "masks").glob("*.png"))[::60][:6]
    assert masks, "no real masks found"
    truths = [read_mask(path) for path in masks]
    probs = np.stack([resize_image(t.astype(np.float32), (64, 64)) for t in truths])[..., None]
    split = pd.DataFrame(
        {
            "id": [p.stem for p in masks],
            "site": ["shenzhen" if p.name.startswith("CHN") else "montgomery" for p in masks],
            "mask_path": [str(p) for p in masks],
        }
    )
    scores = results.score_predictions(probs, split, probs > 0.5)
    model = scores[(scores["resolution"] == "model") & (scores["postprocess"] == "raw")]
    original = scores[(scores["resolution"] == "original") & (scores["postprocess"] == "raw")]
    assert np.allclose(model["dice"], 1.0)
    assert len(original) == len(masks)
    assert original["dice"].min() > 0.98
    assert (original["hd95"] < 5).all()  # pixels at 512 x 512


def test_original_resolution_scoring_merges_mask_parts(tmp_path):
    """A mask listed as two files (left and right lung) is scored as their union."""
    right, left = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    right[10:50, 6:28], left[12:48, 38:58] = True, True
    write_png(tmp_path / "right.png", right)
    write_png(tmp_path / "left.png", left)
    truth = right | left
    probs = truth.reshape(32, 2, 32, 2).mean(axis=(1, 3)).astype(np.float32)[None, ..., None]
    split = pd.DataFrame(
        {
            "id": ["a"],
            "site": ["montgomery"],
            "mask_path": [[str(tmp_path / "right.png"), str(tmp_path / "left.png")]],
        }
    )
    scores = results.score_predictions(probs, split, probs > 0.5)
    original = scores[scores["resolution"] == "original"].set_index("postprocess")
    assert original.loc["raw", "dice"] > 0.98 and original.loc["postprocessed", "dice"] > 0.98
    with pytest.raises(ValueError, match="same length"):
        results.score_predictions(probs, pd.concat([split, split]), probs > 0.5)
