"""Tests for cxrlib.book.crosssite: each site's model trains on that site only, the table
is right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib.book import crosssite
from cxrlib.seg.train_config import TrainConfig

SITES = ("montgomery", "shenzhen")
TINY = TrainConfig(
    model="unet",
    img_size=32,
    filters=(4, 8, 16),
    epochs=1,
    batch_size=4,
    precision="float32",
    patience=1,
)


@pytest.fixture(scope="module")
def table(phantom_table) -> pd.DataFrame:
    return phantom_table.copy()


@pytest.fixture(scope="module")
def experiment(table, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    run_dir = tmp_path_factory.mktemp("cross")
    result = crosssite.cross_site_experiment(
        table, TINY, run_dir, sites=SITES, cache_dir=False, progress=False
    )
    return result, run_dir


def _masked(table: pd.DataFrame, site: str) -> pd.DataFrame:
    return table[(table["site"] == site) & table["mask_path"].notna()]


def test_each_site_model_is_trained_on_its_site_only(experiment, table):
    _, run_dir = experiment
    for site in SITES:
        split = pd.read_csv(crosssite.site_run_dir(run_dir, "unet", site) / "split.csv", dtype=str)
        assert set(split["site"]) == {site}
        assert set(split["id"]) == set(_masked(table, site)["id"].astype(str))
        assert (split["split"] == "train").sum() >= 1


def test_table_has_one_row_per_train_and_test_site(experiment, table):
    result, _ = experiment
    assert list(result.columns) == list(crosssite.CROSS_SITE_COLUMNS)
    pairs = set(zip(result["train_site"], result["test_site"], strict=True))
    assert pairs == {(a, b) for a in SITES for b in SITES}
    assert set(result["model"]) == {"unet"}
    for row in result.itertuples():
        assert 0.0 <= row.dice_low <= row.dice_mean <= row.dice_high <= 1.0
        assert 0.0 <= row.iou_low <= row.iou_mean <= row.iou_high <= 1.0
        if row.train_site != row.test_site:
            # every masked radiograph of the other site is scored
            assert row.n_test == len(_masked(table, row.test_site))


def test_n_train_and_in_site_n_test_match_the_run_split(experiment):
    result, run_dir = experiment
    for site in SITES:
        split = pd.read_csv(crosssite.site_run_dir(run_dir, "unet", site) / "split.csv", dtype=str)
        row = result[(result["train_site"] == site) & (result["test_site"] == site)].iloc[0]
        assert row.n_train == (split["split"] == "train").sum()
        assert row.n_test == (split["split"] == "test").sum()


def test_cross_site_scores_use_the_other_sites_radiographs(experiment, table):
    _, run_dir = experiment
    per_image = pd.read_csv(run_dir / "cross_site_per_image.csv", dtype={"id": str})
    written = pd.read_csv(run_dir / "cross_site.csv")
    assert len(written) == 4
    across = per_image[per_image["train_site"] != per_image["site"]]
    for site in SITES:
        scored = set(across.loc[across["site"] == site, "id"])
        assert scored == set(_masked(table, site)["id"].astype(str))


def test_rerun_reuses_the_trained_models(experiment, table, monkeypatch):
    result, run_dir = experiment
    import keras

    def no_fit(*args, **kwargs):
        raise AssertionError("a model was trained again")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    again = crosssite.cross_site_experiment(table, TINY, run_dir, cache_dir=False)
    pd.testing.assert_frame_equal(again, result)


def test_unknown_or_repeated_sites_are_clear_errors(table, tmp_path):
    with pytest.raises(ValueError, match="mars"):
        crosssite.cross_site_experiment(table, TINY, tmp_path, sites=("montgomery", "mars"))
    with pytest.raises(ValueError, match="two different sites"):
        crosssite.cross_site_experiment(table, TINY, tmp_path, sites=("shenzhen", "shenzhen"))
    with pytest.raises(ValueError, match="resolution"):
        crosssite.cross_site_experiment(table, TINY, tmp_path, resolution="full")
    with pytest.raises(ValueError, match="TrainConfig"):
        crosssite.cross_site_experiment(table, {"model": "unet"}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_transfer_table_and_site_drop(experiment):
    result, _ = experiment
    transfer = crosssite.transfer_table(result, "unet")
    row = result[(result["train_site"] == "montgomery") & (result["test_site"] == "shenzhen")]
    assert transfer.loc["montgomery_to_shenzhen", "dice_mean"] == row["dice_mean"].iloc[0]
    assert transfer["n_test"].dtype.kind == "i"
    own = result[(result["train_site"] == "shenzhen") & (result["test_site"] == "shenzhen")]
    drops = crosssite.site_drop(result, "unet")
    assert sorted(drops.index) == ["montgomery", "shenzhen"]
    expected = own["dice_mean"].iloc[0] - row["dice_mean"].iloc[0]
    assert drops.loc["shenzhen", "drop"] == pytest.approx(expected)
    assert np.allclose(drops["own"] - drops["other"], drops["drop"])
    with pytest.raises(ValueError, match="resunet"):
        crosssite.transfer_table(result, "resunet")
    with pytest.raises(ValueError, match="resunet"):
        crosssite.site_drop(result, "resunet")


def test_configs_from_runs_copies_the_runs_configs():
    class Run:  # the only attribute configs_from_runs reads
        def __init__(self, config):
            self.config = config

    resunet = TrainConfig(model="resunet", img_size=32, filters=(16, 16, 32), epochs=5)
    runs = {"U-Net": Run(TINY), "ResUNet": Run(resunet)}
    assert crosssite.configs_from_runs(runs, ["resunet", "unet"]) == [resunet, TINY]
    (shorter,) = crosssite.configs_from_runs(runs, ["resunet"], epochs=2)
    assert shorter.epochs == 2 and shorter.filters == resunet.filters
    with pytest.raises(ValueError, match="no run of model"):
        crosssite.configs_from_runs({"U-Net": Run(TINY)}, ["resunet"])


def test_score_on_table_refuses_rows_without_a_mask_and_names_them():
    import pandas as pd

    from cxrlib.seg.results import score_on_table
    from cxrlib.seg.train_config import cpu_recipe

    rows = pd.DataFrame(
        {
            "id": ["a", "b"],
            "site": ["x", "x"],
            "image_path": ["a.png", "b.png"],
            "mask_path": ["a_mask.png", None],
        }
    )
    with pytest.raises(ValueError, match=r"1 have none, e\.g\. \['b'\]"):
        score_on_table(object(), cpu_recipe(), rows)
