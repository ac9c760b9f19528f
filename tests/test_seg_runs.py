"""Tests for cxrlib.book.seg_runs, seg_tables and seg_cases: configs, run lookup, tables, cases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib.book import seg_cases, seg_runs, seg_tables
from cxrlib.book.glue import glue_values
from cxrlib.seg.models import RESUNET_PARAMS_256, UNET_PARAMS_256
from cxrlib.seg.train_config import CPU_RECIPE_FILTERS, TrainConfig, cpu_recipe

TINY = TrainConfig(
    model="unet",
    img_size=32,
    filters=(4, 8, 16),
    epochs=2,
    batch_size=4,
    precision="float32",
    patience=2,
)


@pytest.fixture(scope="module")
def table(phantom_table) -> pd.DataFrame:
    return phantom_table.copy()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def trained(table, runs_root):
    """The U-Net run of the segmentation chapter, trained where the book runner puts it."""
    return seg_runs.find_or_train("unet", table, TINY, runs_root, cache_dir=False)


# ------------------------------------------------------------------ config


def test_config_resolves_named_recipes_original_and_explicit_filters():
    common = {"img_size": 128, "epochs": 3, "batch_size": 8}
    recipe = seg_runs.segmentation_config("resunet", recipe="cpu", seed=3, **common)
    assert recipe == cpu_recipe("resunet", seed=3), "a named recipe wins over the values"
    assert recipe.filters == CPU_RECIPE_FILTERS["resunet"]
    gpu = seg_runs.segmentation_config("unet", recipe="gpu")
    assert (gpu.img_size, gpu.filters, gpu.epochs, gpu.batch_size) == (256, None, 50, 16)
    with pytest.raises(ValueError, match="unknown recipe 'laptop'.*cpu"):
        seg_runs.segmentation_config("unet", recipe="laptop")
    with pytest.raises(ValueError, match="img_size"):
        seg_runs.segmentation_config("unet")
    original = seg_runs.segmentation_config("unet", filters=None, **common)
    assert original.filters is None and original.resolved_filters == (32, 64, 128, 256, 512)
    explicit = seg_runs.segmentation_config("UNet", filters=[8, 16], lr_schedule="cosine", **common)
    assert explicit.model == "unet" and explicit.filters == (8, 16)
    assert explicit.lr_schedule == "cosine"
    with pytest.raises(ValueError, match="filters"):
        seg_runs.segmentation_config("unet", filters="recipe", **common)


# ------------------------------------------------------------------ runs


def test_find_or_train_trains_a_missing_run_in_the_chapter_folder(trained, runs_root):
    assert trained.trained
    assert trained.run_dir == runs_root / seg_runs.CHAPTER_RUNS["unet"]
    assert seg_runs.is_finished_run(trained.run_dir)


def test_find_or_train_finds_an_existing_run_without_training(trained, table, runs_root, tmp_path):
    found = seg_runs.find_or_train("unet", table, TINY, tmp_path, runs_root=runs_root)
    assert not found.trained
    assert found.run_dir == trained.run_dir
    assert found.config == trained.config
    assert not any(tmp_path.iterdir()), "nothing may be trained in the caller's folder"


def test_find_or_train_trains_only_the_missing_model(table, runs_root, tmp_path, monkeypatch):
    calls = []

    def fake_train(data, config, run_dir, **kwargs):
        calls.append((config.model, Path(run_dir)))
        return "trained"

    monkeypatch.setattr(seg_runs, "train_segmentation", fake_train)
    config = TrainConfig.from_dict({**TINY.to_dict(), "model": "resunet", "filters": [16, 16, 32]})
    assert seg_runs.find_or_train("resunet", table, config, tmp_path, runs_root=runs_root) == (
        "trained"
    )
    assert calls == [("resunet", tmp_path / seg_runs.CHAPTER_RUNS["resunet"])]


def test_a_run_found_for_other_data_is_refused(trained, table, runs_root, tmp_path):
    other = table.assign(id=table["id"] + "_other")
    with pytest.raises(ValueError, match="other data"):
        seg_runs.find_or_train("unet", other, TINY, tmp_path, runs_root=runs_root)


def test_config_of_another_model_is_refused(table, tmp_path):
    with pytest.raises(ValueError, match="config.model"):
        seg_runs.find_or_train("resunet", table, TINY, tmp_path)


def test_load_run_round_trips_the_result(trained):
    loaded = seg_runs.load_run(trained.run_dir)
    assert loaded.config == trained.config and loaded.key == trained.key
    assert loaded.epochs_run == trained.epochs_run
    pd.testing.assert_frame_equal(loaded.split, trained.split, check_dtype=False)
    assert loaded.metrics == trained.metrics
    assert loaded.summary_table().equals(trained.summary_table())


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(seg_runs.RunNotFoundError, match="does not exist"):
        seg_runs.load_run(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "key.json").write_text('{"status": "training"}')
    with pytest.raises(seg_runs.RunNotFoundError, match="model.keras"):
        seg_runs.load_run(tmp_path / "half")


# ------------------------------------------------------------------ tables


def test_split_counts_per_site_and_split(trained):
    counts = seg_tables.split_counts(trained.split)
    assert list(counts.columns) == ["train", "val", "test", "all"]
    assert counts.loc["all", "all"] == len(trained.split)
    site_counts = trained.split.groupby("site").size()
    for site, count in site_counts.items():
        assert counts.loc[site, "all"] == count


def test_original_parameter_counts():
    assert seg_tables.parameter_counts("unet") == UNET_PARAMS_256
    assert seg_tables.parameter_counts("resunet") == RESUNET_PARAMS_256
    assert seg_tables.parameter_counts("unet", (4, 8, 16)) < 100_000


def test_parameter_score_and_speed_tables(trained):
    results = {"U-Net": trained}
    params = seg_tables.parameter_table(results)
    assert params.loc["U-Net", "original_params"] == UNET_PARAMS_256
    assert params.loc["U-Net", "trained_params"] == trained.load_model().count_params()
    assert params.loc["U-Net", "trained_filters"] == "4-8-16"
    scores = seg_tables.score_table(results)
    summary = trained.summary_table().xs("raw", level="postprocess")
    assert list(scores["site"]) == list(summary.index)
    assert np.allclose(scores["dice_mean"], summary["dice_mean"])
    speed = seg_tables.speed_table(results, {"U-Net": 12.5})
    assert speed.loc["U-Net", "inference_images_per_s"] == 12.5
    assert speed.loc["U-Net", "train_images_per_s"] > 0
    summary = seg_tables.history_summary(trained)
    assert 1 <= summary["best_epoch"] <= summary["epochs"] == trained.epochs_run
    assert summary["best_val_dice"] == pytest.approx(trained.history["val_dice"].max())
    assert summary["best_val_dice_loss"] == pytest.approx(1 - summary["best_val_dice"])


def test_pick_cases_orders_best_then_worst():
    per_image = pd.DataFrame(
        {
            "split": ["test"] * 5 + ["val"],
            "id": list("abcde") + ["f"],
            "site": ["montgomery"] * 6,
            "resolution": ["original"] * 6,
            "postprocess": ["raw"] * 6,
            "dice": [0.5, 0.9, 0.7, 0.95, 0.2, 1.0],
            "iou": [0.3] * 6,
            "hd95": [1.0] * 6,
        }
    )
    cases = seg_cases.pick_cases(per_image, n=2)
    assert cases["id"].tolist() == ["d", "b", "e", "a"]
    assert cases["case"].tolist() == ["best", "best", "worst", "worst"]
    # never the same radiograph twice when the split is small
    small = seg_cases.pick_cases(per_image.iloc[:3], n=5)
    assert small["id"].is_unique and len(small) == 2
    with pytest.raises(ValueError, match="no per-image"):
        seg_cases.pick_cases(per_image, split="train")


def test_random_cases_draw_the_same_test_radiographs_for_a_seed():
    per_image = pd.DataFrame(
        {
            "split": ["test"] * 8 + ["val"] * 4,
            "id": [f"r{i}" for i in range(12)],
            "site": ["shenzhen"] * 12,
            "resolution": ["original"] * 12,
            "postprocess": ["raw"] * 12,
            "dice": np.linspace(0.5, 1.0, 12),
            "iou": [0.3] * 12,
            "hd95": [1.0] * 12,
        }
    )
    drawn = seg_cases.random_cases(per_image, n=3, seed=1)
    assert len(drawn) == 3 and drawn["id"].is_unique
    assert set(drawn["case"]) == {"random"}
    assert set(drawn["id"]) <= {f"r{i}" for i in range(8)}  # the test split only
    # the same seed draws the same radiographs from a table in another order
    shuffled = per_image.sample(frac=1.0, random_state=0)
    again = seg_cases.random_cases(shuffled, n=3, seed=1)
    assert again["id"].tolist() == drawn["id"].tolist()
    draws = {tuple(seg_cases.random_cases(per_image, n=3, seed=s)["id"]) for s in range(6)}
    assert len(draws) > 1
    assert len(seg_cases.random_cases(per_image, n=50)) == 8
    with pytest.raises(ValueError, match="positive integer"):
        seg_cases.random_cases(per_image, n=0)


def test_case_arrays_and_inference_speed(trained, table):
    cases = seg_cases.pick_cases(seg_tables.per_image_table(trained), n=1)
    model = trained.load_model()
    images, truths, preds = seg_cases.case_arrays(model, cases, table, display_size=48)
    assert images.shape == truths.shape == preds.shape == (len(cases), 48, 48)
    assert images.dtype == np.float32 and truths.dtype == preds.dtype == np.bool_
    assert truths.any(axis=(1, 2)).all()
    speed = seg_cases.inference_speed(model, np.zeros((4, 32, 32, 1), np.float32), repeats=1)
    assert speed > 0
    with pytest.raises(ValueError, match="not in the dataset"):
        seg_cases.case_arrays(model, pd.DataFrame({"id": ["nope"]}), table)


def test_find_chapter_runs_returns_both_models(table, runs_root, tmp_path, monkeypatch):
    def fake_train(data, config, run_dir, **kwargs):
        return ("trained", config.model, config.filters, Path(run_dir).name)

    monkeypatch.setattr(seg_runs, "train_segmentation", fake_train)
    common = {"img_size": 32, "epochs": 2, "batch_size": 4}
    # the U-Net run exists in runs_root (the module's trained run); the ResUNet is trained
    results = seg_runs.find_chapter_runs(
        table, tmp_path, runs_root=runs_root, recipe="cpu", **common
    )
    assert list(results) == ["U-Net", "ResUNet"]
    assert not results["U-Net"].trained  # found, not trained again
    assert results["ResUNet"] == (
        "trained",
        "resunet",
        CPU_RECIPE_FILTERS["resunet"],
        "03b_resunet_training",
    )


def test_run_overview_history_and_table_values(trained):
    overview = seg_tables.run_overview({"U-Net": trained})
    assert overview.loc["U-Net", "run"] == seg_runs.CHAPTER_RUNS["unet"]
    assert overview.loc["U-Net", "filters"] == "4-8-16"
    history = glue_values("", seg_tables.history_table({"U-Net": trained}))
    assert history["u_net_epochs"] == trained.epochs_run
    assert type(history["u_net_best_epoch"]) is int
    values = glue_values("run", overview)
    assert values["run_u_net_img_size"] == 32 and type(values["run_u_net_img_size"]) is int
    assert values["run_u_net_trained_now"] is True
    assert values["run_u_net_precision"] == "float32"


def test_paired_difference_of_a_run_with_itself_is_zero(trained):
    same = seg_tables.paired_difference(trained, trained)
    assert list(same.index)[-1] == "all"
    assert same.loc["all", "n"] == (trained.split["split"] == "test").sum()
    assert np.allclose(same[["diff_mean", "diff_low", "diff_high"]], 0.0)
    assert set(same["better"]) == {0}
    with pytest.raises(ValueError, match="metric"):
        seg_tables.paired_difference(trained, trained, metric="accuracy")


def test_paired_difference_better_follows_the_interval(trained, tmp_path):
    import shutil

    better = tmp_path / "better"
    shutil.copytree(trained.run_dir, better)
    per_image = pd.read_csv(better / "per_image.csv")
    per_image["dice"] = np.minimum(per_image["dice"] + 0.05, 1.0)
    per_image.to_csv(better / "per_image.csv", index=False)
    diff = seg_tables.paired_difference(trained, seg_runs.load_run(better))
    assert diff.loc["all", "diff_low"] > 0
    assert diff.loc["all", "better"] == 1
    reverse = seg_tables.paired_difference(seg_runs.load_run(better), trained)
    assert reverse.loc["all", "diff_high"] < 0
    assert reverse.loc["all", "better"] == -1


def test_measure_inference_and_case_panels(trained, table):
    speeds = seg_cases.measure_inference({"U-Net": trained}, table, n=4, repeats=1)
    assert set(speeds) == {"U-Net"} and speeds["U-Net"] > 0
    images, truths, preds, titles = seg_cases.case_panels(
        {"A": trained, "B": trained}, table, n=1, display_size=40
    )
    assert images.shape == (4, 40, 40) and truths.shape == preds.shape == (4, 40, 40)
    assert titles[0].startswith("A · best") and titles[-1].startswith("B · worst")
    images, _, _, titles = seg_cases.case_panels(
        {"A": trained, "B": trained}, table, n=2, display_size=40, pick="random", seed=3
    )
    assert images.shape == (4, 40, 40) and titles[0].startswith("A · random")
    assert titles[:2] == [t.replace("B", "A", 1) for t in titles[2:]]  # same radiographs
    with pytest.raises(ValueError, match="pick must be"):
        seg_cases.case_panels({"A": trained}, table, pick="best")


def test_original_runs_copy_the_budget_and_restore_the_original_filters(
    trained, table, tmp_path, monkeypatch
):
    calls = []

    def fake_train(data, config, run_dir, **kwargs):
        calls.append((config, Path(run_dir)))
        return config

    monkeypatch.setattr(seg_runs, "train_segmentation", fake_train)
    like = {"U-Net": trained}
    out = seg_runs.original_runs(table, like, tmp_path, ["unet"])
    assert list(out) == ["U-Net (original)"]
    config, folder = calls[0]
    assert folder == tmp_path / "unet_original"
    assert config.filters is None and trained.config.filters is not None
    same = {k: v for k, v in config.to_dict().items() if k != "filters"}
    assert same == {k: v for k, v in trained.config.to_dict().items() if k != "filters"}
    shorter = seg_runs.original_runs(table, like, tmp_path, ["unet"], epochs=1)
    assert shorter["U-Net (original)"].epochs == 1
    assert seg_runs.original_runs(table, like, tmp_path, []) == {}
    calls.clear()
    wide = type(trained)(
        **{**vars(trained), "config": dataclasses.replace(trained.config, filters=None)}
    )
    again = seg_runs.original_runs(table, {"U-Net": wide}, tmp_path, ["unet"])
    assert again["U-Net (original)"] is wide and not calls  # already original: no training
    with pytest.raises(ValueError, match="no run of 'resunet'"):
        seg_runs.original_runs(table, like, tmp_path, ["resunet"])
    with pytest.raises(ValueError, match="model must be one of"):
        seg_runs.original_runs(table, like, tmp_path, ["vgg"])


def test_differences_by_model_pairs_runs_of_the_same_architecture(trained):
    table = seg_tables.differences_by_model({"U-Net": trained}, {"again": trained}, n_boot=50)
    assert table.index.names == ["model", "site"]
    assert set(table.index.get_level_values("model")) == {"unet"}
    assert np.allclose(table["diff_mean"], 0.0)
    resunet = type(trained)(**{**vars(trained), "config": cpu_recipe("resunet")})
    with pytest.raises(ValueError, match="no baseline run of 'resunet'"):
        seg_tables.differences_by_model({"U-Net": trained}, {"other": resunet})
    with pytest.raises(ValueError, match="no run to compare"):
        seg_tables.differences_by_model({"U-Net": trained}, {})
