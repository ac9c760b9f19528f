"""Tests of TB runs end to end: config, load-or-train runs, classify, errors, comparisons.

The segmentation model is a stand-in (a 1x1 convolution that calls dark pixels lung,
saved as a real ``.keras`` file), so the tests exercise the whole pipeline in seconds;
cxrlib.seg has its own tests. The comparisons are the chapter's (cxrlib.book.tb_experiments).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from standins import save_standin_model

from cxrlib.book.tb_experiments import (
    compare_masks,
    compare_pipelines,
    format_comparison,
    interval_relation,
    reports_by_extractor,
)
from cxrlib.data.imageio import write_png
from cxrlib.stats import binomial_ci
from cxrlib.synthetic import write_dataset
from cxrlib.tb.classify import classify
from cxrlib.tb.config import TBConfig
from cxrlib.tb.feature_sets import FeatureUnavailable, extract_feature_sets
from cxrlib.tb.inputs import find_seg_model, prepare_inputs, seg_model_equalize
from cxrlib.tb.predictor import load_predictor
from cxrlib.tb.result import load_run
from cxrlib.tb.rundir import TBRunError, mask_text, mask_value
from cxrlib.tb.train import train_tb

SIZE = 64  # feature size of the tests
FAST = {"image_size": SIZE, "n_splits": 2, "n_repeats": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """32 phantoms at 64 px, half Montgomery, half TB at each site."""
    out = tmp_path_factory.mktemp("tb") / "phantoms"
    write_dataset(
        out, n=32, size=SIZE, seed=0, layout="plain", site_fraction=0.5, progress=False, n_jobs=1
    )
    return out


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    return save_standin_model(tmp_path_factory.mktemp("seg") / "standin.keras")


@pytest.fixture(scope="module")
def run(data, seg_model, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tb"
    config = TBConfig(**FAST)
    result = train_tb(data, run_dir, config, seg_model=seg_model, progress=False, n_jobs=1)
    return result


# ------------------------------------------------------------------------------- config


def test_config_defaults_are_the_best_offline_pipeline():
    config = TBConfig()
    assert config.features == ("handcrafted",)
    assert config.classifier == "ensemble"
    assert config.image_size == 512
    assert (config.n_splits, config.n_repeats) == (5, 2)
    seg = config.seg_config()
    assert seg.img_size == 128 and seg.epochs == 15 and seg.model == "resunet"


def test_config_parses_names_and_round_trips():
    config = TBConfig(
        features="Handcrafted, encoder",
        classifier="SVM",
        feature_options={"handcrafted": {"groups": ("intensity", "shape")}},
        seg_overrides={"filters": (16, 16, 32), "precision": "float32"},
    )
    assert config.features == ("handcrafted", "encoder")
    assert config.classifier == "svm"
    assert config.seg_config().filters == (16, 16, 32)
    again = TBConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ("sift",)}, "unknown extractor"),
        ({"features": ()}, "at least one"),
        ({"features": ("handcrafted", "handcrafted")}, "repeats"),
        ({"classifier": "knn"}, "classifier must be one of"),
        ({"image_size": 16}, "image_size"),
        ({"n_splits": 1}, "n_splits"),
        ({"threshold": 1.5}, "threshold"),
        ({"feature_options": {"vgg16": {}}}, "not in features"),
        ({"features": ("encoder",), "feature_options": {"encoder": {"model": "x"}}}, "must not"),
        ({"seg_overrides": {"img_size": 100}}, "divisible"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TBConfig(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown TBConfig field"):
        TBConfig.from_dict({"classifer": "svm"})


# ------------------------------------------------------------------------ seg model lookup


def test_find_seg_model(tmp_path, seg_model):
    assert find_seg_model() is None
    assert find_seg_model(seg_model) == seg_model.resolve()
    run_dir = tmp_path / "seg_run"
    run_dir.mkdir()
    shutil.copy(seg_model, run_dir / "model.keras")
    assert find_seg_model(run_dir) == (run_dir / "model.keras").resolve()
    with pytest.raises(FileNotFoundError, match="not found"):
        find_seg_model(tmp_path / "missing.keras")
    runs_root = tmp_path / "runs"
    assert find_seg_model(runs_root=runs_root) is None
    book_model = runs_root / "03b_resunet_training" / "model.keras"
    book_model.parent.mkdir(parents=True)
    shutil.copy(seg_model, book_model)
    assert find_seg_model(runs_root=runs_root) == book_model.resolve()
    # an explicit model wins over the book's
    assert find_seg_model(seg_model, runs_root=runs_root) == seg_model.resolve()


# ---------------------------------------------------------------------------- inputs


def test_prepare_inputs_skips_unreadable_files(data, seg_model, tmp_path):
    paths = sorted(str(p) for p in (data / "images").glob("*.png"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    inputs = prepare_inputs([paths[0], str(broken), *paths[1:]], seg_model, 48)
    assert inputs.images.shape == (3, 48, 48) and inputs.images.dtype == np.float32
    assert inputs.masks.shape == (3, 48, 48) and inputs.masks.dtype == np.bool_
    assert inputs.masks.any(axis=(1, 2)).all()
    assert inputs.kept.tolist() == [0, 2, 3]
    assert [p for p, _ in inputs.skipped] == [str(broken)]
    assert "unreadable" in inputs.skipped[0][1]


def test_prepare_inputs_skips_images_without_lungs(seg_model, tmp_path):
    bright = tmp_path / "white.png"
    write_png(bright, np.ones((40, 40), np.float32))
    inputs = prepare_inputs([bright], seg_model, 32)
    assert len(inputs.kept) == 0
    assert inputs.skipped == [(str(bright), "the segmentation model found no lungs")]


# ------------------------------------------------------------------------------- train


def test_train_tb_writes_a_complete_run(run, data):
    run_dir = run.run_dir
    for name in (
        "cxrlib_run.json",
        "tb_model.joblib",
        "tb_config.json",
        "cv_metrics.json",
        "oof_predictions.csv",
        "features.npz",
        "seg_model.keras",
    ):
        assert (run_dir / name).is_file(), name
    marker = json.loads((run_dir / "cxrlib_run.json").read_text())
    assert marker["run_type"] == "cxrlib-tb-run" and marker["status"] == "done"
    stored = json.loads((run_dir / "tb_config.json").read_text())
    assert stored["n_features"] == run.X.shape[1] == len(stored["feature_names"])
    assert stored["seg_model"] == "seg_model.keras"
    assert stored["n_images"] == len(run.table) == 32
    assert run.trained and run.X.dtype == np.float32 and np.isfinite(run.X).all()


def test_out_of_fold_predictions_and_metrics_agree(run):
    oof = pd.read_csv(run.run_dir / "oof_predictions.csv")
    assert len(oof) == 32
    assert oof["probability"].between(0, 1).all()
    assert set(oof["fold_r0"]) == {0, 1}
    metrics = json.loads((run.run_dir / "cv_metrics.json").read_text())
    auc = roc_auc_score(oof["label"], oof["proba_r0"])
    assert metrics["summary"]["auc"] == pytest.approx(auc)
    assert metrics["summary"]["auc_low"] <= auc <= metrics["summary"]["auc_high"]
    assert set(metrics["per_site"]) == {"montgomery", "shenzhen", "all"}
    assert len(metrics["operating_points"]) == 2
    report = run.classification_report()
    assert report.loc["accuracy", "support"] == 32
    assert int(run.confusion_matrix().to_numpy().sum()) == 32


def test_second_call_reuses_the_run(run, data, seg_model):
    again = train_tb(
        data, run.run_dir, TBConfig(**FAST), seg_model=seg_model, progress=False, n_jobs=1
    )
    assert not again.trained
    np.testing.assert_allclose(again.cv.proba, run.cv.proba)
    np.testing.assert_array_equal(again.X, run.X)
    assert again.table["id"].tolist() == run.table["id"].tolist()
    assert again.summary(n_boot=200)["auc"] == pytest.approx(run.summary(n_boot=200)["auc"])


def test_another_config_needs_overwrite(run, data, seg_model, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(run.run_dir, run_dir)
    other = TBConfig(**{**FAST, "classifier": "gboost"})
    with pytest.raises(TBRunError, match="another TB run.*classifier"):
        train_tb(data, run_dir, other, seg_model=seg_model, progress=False, n_jobs=1)
    result = train_tb(
        data, run_dir, other, seg_model=seg_model, overwrite=True, progress=False, n_jobs=1
    )
    assert result.trained and result.config.classifier == "gboost"
    assert load_run(run_dir).config.classifier == "gboost"


def test_cross_site_trains_on_one_site_and_tests_on_the_other(run):
    table = run.cross_site(n_boot=200)
    pairs = set(zip(table["train_site"], table["test_site"], strict=True))
    assert pairs == {("montgomery", "shenzhen"), ("shenzhen", "montgomery")}
    assert (table["n_train"] + table["n_test"] == 32).all()
    assert table["auc"].between(0, 1).all()
    assert (table["threshold"] == 0.5).all() and len(table) == 2
    transfer = run.transfer(n_boot=200)
    assert len(transfer) == 6
    assert sorted(set(transfer["operating_point"])) == ["0.5", "who", "youden"]
    fixed = transfer[transfer["operating_point"] == "0.5"].reset_index(drop=True)
    np.testing.assert_allclose(fixed["sensitivity"], table["sensitivity"])
    who = transfer[transfer["operating_point"] == "who"]
    assert (who["train_sensitivity"] >= 0.9).all()


def test_train_tb_trains_its_own_segmentation_model(data, seg_model, tmp_path, monkeypatch):
    calls = []

    def fake_train(table, config, run_dir, **kwargs):
        calls.append((table, config, Path(run_dir)))
        save_standin_model(Path(run_dir) / "model.keras")
        return SimpleNamespace(model_path=Path(run_dir) / "model.keras")

    monkeypatch.setattr("cxrlib.tb.train.train_segmentation", fake_train)
    config = TBConfig(**FAST, seg_epochs=3)
    result = train_tb(data, tmp_path / "run", config, progress=False, n_jobs=1)
    (table, seg_config, seg_dir) = calls[0]
    assert seg_dir == tmp_path / "run" / "segmentation"
    assert seg_config == config.seg_config() and seg_config.epochs == 3
    assert table["mask_path"].notna().sum() > 0 and table["label"].notna().all()
    stored = json.loads((tmp_path / "run" / "tb_config.json").read_text())
    assert stored["seg_model"] == "segmentation/model.keras"
    assert result.seg_model_path == tmp_path / "run" / "segmentation" / "model.keras"


# ----------------------------------------------------------------------------- errors


def _unlabelled_copy(data: Path, target: Path, n: int = 4) -> Path:
    target.mkdir(parents=True)
    for i, path in enumerate(sorted((data / "images").glob("*.png"))[:n]):
        shutil.copy(path, target / f"patient {i}.png")
    return target


def test_train_tb_needs_labels(data, seg_model, tmp_path):
    folder = _unlabelled_copy(data, tmp_path / "unlabelled")
    with pytest.raises(ValueError, match="none with a label"):
        train_tb(folder, tmp_path / "run", TBConfig(**FAST), seg_model=seg_model)


def test_train_tb_needs_both_classes(data, seg_model, tmp_path):
    folder = tmp_path / "normals"
    folder.mkdir()
    for path in (data / "images").glob("*_0.png"):
        shutil.copy(path, folder / path.name)
    with pytest.raises(ValueError, match="needs both normal and TB radiographs"):
        train_tb(folder, tmp_path / "run", TBConfig(**FAST), seg_model=seg_model)


def test_train_tb_refuses_a_segmentation_run_dir(data, seg_model, tmp_path):
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    (seg_dir / "key.json").write_text('{"what": "cxrlib.seg.train.train_segmentation"}')
    with pytest.raises(TBRunError, match="segmentation run"):
        train_tb(data, seg_dir, TBConfig(**FAST), seg_model=seg_model, progress=False)


def test_train_tb_refuses_a_missing_seg_model(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        train_tb(data, tmp_path / "run", TBConfig(**FAST), seg_model=tmp_path / "x.keras")


# ---------------------------------------------------------------------------- classify


def test_classify_an_unlabelled_folder_of_any_names(run, data, tmp_path):
    folder = _unlabelled_copy(data, tmp_path / "incoming", n=3)
    (folder / "nested").mkdir()
    shutil.copy(sorted((data / "images").glob("*.png"))[5], folder / "nested" / "X RAY.PNG")
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "predictions.csv"
    report = classify(run.run_dir, folder, out, progress=False, n_jobs=1)
    written = pd.read_csv(out)
    assert list(written.columns) == [
        "file",
        "probability",
        "prediction",
        "operating_point",
        "threshold",
    ]
    assert sorted(written["file"]) == sorted(
        ["patient 0.png", "patient 1.png", "patient 2.png", "nested/X RAY.PNG"]
    )
    assert written["probability"].between(0, 1).all()
    threshold = load_predictor(run.run_dir).operating_points["who"]  # the default point
    assert (written["operating_point"] == "who").all()
    np.testing.assert_allclose(written["threshold"], threshold)
    assert (written["prediction"] == (written["probability"] >= threshold).astype(int)).all()
    skipped = dict(report.skipped)
    assert "broken.png" in skipped and "notes.txt" in skipped
    assert "classified 4 radiograph(s)" in report.summary()


def test_classify_matches_the_final_model_on_the_training_images(run, data, tmp_path):
    out = tmp_path / "train.csv"
    classify(run.run_dir, data / "images", out, progress=False, n_jobs=1, runtime="keras")
    written = pd.read_csv(out)
    assert len(written) == 32
    predictor = load_predictor(run.run_dir)
    expected = predictor.classifier.predict_proba(run.X)[:, 1]
    by_file = dict(zip(written["file"], written["probability"], strict=True))
    names = [Path(p).name for p in run.table["image_path"]]
    np.testing.assert_allclose([by_file[n] for n in names], expected, rtol=1e-5, atol=1e-6)


def test_classify_through_openvino_agrees_with_keras(run, data, tmp_path):
    """The default runtime (OpenVINO) gives the masks, hence the calls, Keras gives."""
    by_runtime = {}
    for runtime in ("keras", "openvino"):
        out = tmp_path / f"{runtime}.csv"
        report = classify(run.run_dir, data / "images", out, progress=False, runtime=runtime)
        assert report.runtime == runtime and report.scheduler == "inline"
        assert f"masks by {runtime}, inline" in report.summary()
        by_runtime[runtime] = pd.read_csv(out)
    keras_table, fast = by_runtime["keras"], by_runtime["openvino"]
    assert list(fast["file"]) == list(keras_table["file"]) and len(fast) == 32
    np.testing.assert_allclose(fast["probability"], keras_table["probability"], atol=0.02)
    assert (fast["prediction"] == keras_table["prediction"]).mean() >= 0.9


def test_classify_on_a_local_dask_cluster_gives_the_inline_table(run, data, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import cxrlib.tb.classify as classify_module

    monkeypatch.setattr(classify_module, "CHUNK", 8)  # four shards for two workers
    inline = classify(
        run.run_dir, data / "images", tmp_path / "inline.csv", progress=False,
        runtime="openvino", scheduler="inline",
    )  # fmt: skip
    (data / "images" / "broken.png").write_bytes(b"\x89PNG truncated")
    try:
        report = classify(
            run.run_dir, data / "images", tmp_path / "dask.csv", progress=False,
            runtime="openvino", scheduler="local", n_workers=2,
        )  # fmt: skip
    finally:
        (data / "images" / "broken.png").unlink()
    assert report.scheduler == "local"
    remote = pd.read_csv(tmp_path / "dask.csv")
    expected = pd.read_csv(tmp_path / "inline.csv")
    assert list(remote["file"]) == list(expected["file"])  # file order, not finishing order
    np.testing.assert_allclose(remote["probability"], expected["probability"], atol=1e-5)
    assert (remote["prediction"] == expected["prediction"]).all()
    assert [name for name, _ in report.skipped] == ["broken.png"]
    assert len(inline.table) == len(report.table) == 32


def test_classify_names_an_unreachable_scheduler_and_writes_nothing(run, data, tmp_path):
    pytest.importorskip("distributed")
    from cxrlib.seg.cluster import ClusterError

    out = tmp_path / "p.csv"
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        classify(
            run.run_dir, data / "images", out, progress=False, runtime="openvino",
            scheduler="tcp://127.0.0.1:9",
        )  # fmt: skip
    assert not out.exists()


def test_classify_needs_radiographs(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no radiographs"):
        classify(run.run_dir, empty, tmp_path / "p.csv", progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        classify(run.run_dir, tmp_path / "missing", tmp_path / "p.csv", progress=False)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("segmentation", "is a segmentation run, not a TB run \\(made by cxrlib train-seg\\)"),
        ("segment", "made by cxrlib segment"),
        ("other", "not a TB run"),
        ("unfinished", "unfinished TB run"),
    ],
)
def test_classify_refuses_other_run_dirs(run, data, tmp_path, setup, message):
    run_dir = tmp_path / "run"
    if setup == "segmentation":
        run_dir.mkdir()
        (run_dir / "key.json").write_text('{"what": "cxrlib.seg.train.train_segmentation"}')
        (run_dir / "model.keras").write_bytes(b"")
    elif setup == "segment":
        run_dir.mkdir()
        (run_dir / "lungs.csv").write_text("file\n")
    elif setup == "other":
        run_dir.mkdir()
        (run_dir / "something.txt").write_text("x")
    elif setup == "unfinished":
        shutil.copytree(run.run_dir, run_dir)
        marker = json.loads((run_dir / "cxrlib_run.json").read_text())
        (run_dir / "cxrlib_run.json").write_text(json.dumps({**marker, "status": "training"}))
    out = tmp_path / "p.csv"
    with pytest.raises(TBRunError, match=message):
        classify(run_dir, data / "images", out, progress=False)
    assert not out.exists()


def test_classify_detects_a_feature_dimension_mismatch(run, data, tmp_path):
    run_dir = tmp_path / "edited"
    shutil.copytree(run.run_dir, run_dir)
    stored = json.loads((run_dir / "tb_config.json").read_text())
    stored["config"]["feature_options"] = {"handcrafted": {"groups": ["intensity"]}}
    (run_dir / "tb_config.json").write_text(json.dumps(stored))
    expected = run.X.shape[1]
    with pytest.raises(TBRunError, match=f"expects {expected} features .* but got \\d+"):
        classify(run_dir, data / "images", tmp_path / "p.csv", progress=False, n_jobs=1)


# -------------------------------------------------------------------------- comparison


def test_compare_pipelines_ranks_and_lists_unavailable_extractors():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    strata = np.tile(["a", "b"], 30)
    informative = rng.normal(size=(60, 4)) + 2.0 * y[:, None]
    noise = rng.normal(size=(60, 4))
    missing = FeatureUnavailable("vgg16", "weights not available: put F in D", "msg")
    table, results = compare_pipelines(
        {"noise": noise, "good": (informative, ["f"] * 4), "vgg16": missing},
        y,
        strata,
        ["logreg", "svm"],
        n_splits=3,
        n_repeats=1,
        n_boot=200,
        return_results=True,
    )
    assert table["extractor"].tolist() == ["good", "good", "noise", "noise", "vgg16"]
    assert table.loc[1, "auc"] > 0.8 > table.loc[2, "auc"]
    assert table.loc[4, "status"] == "weights not available: put F in D"
    assert table.loc[4, "classifier"] == "any"  # one row for an extractor that cannot run
    assert np.isnan(table.loc[4, "auc"]) and (table.loc[:3, "status"] == "ok").all()
    assert table.loc[0, "n"] == 60 and table.loc[0, "n_features"] == 4
    assert set(results) == {(e, c) for e in ("good", "noise") for c in ("logreg", "svm")}
    best = table.loc[0]
    summary = results[(best["extractor"], best["classifier"])].summary()
    assert best["auc"] == pytest.approx(summary["auc"])
    assert format_comparison(table).index[-1] == "vgg16 (any classifier)"
    reports = reports_by_extractor(results, "logreg")
    assert reports.index.get_level_values("extractor").unique().tolist() == ["noise", "good"]
    good = reports.loc["good"]
    assert good.loc["accuracy", "support"] == 60
    assert good.loc["accuracy", "f1-score"] > reports.loc[("noise", "accuracy"), "f1-score"]
    calls = results[("good", "logreg")].mean_proba >= 0.5
    assert good.loc["accuracy", "f1-score"] == pytest.approx(np.mean(calls == y))
    with pytest.raises(ValueError, match="no pipeline used the classifier 'mlp'"):
        reports_by_extractor(results, "mlp")


def test_extract_feature_sets_records_missing_imagenet_weights(run, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inputs = run.load_inputs()
    known = {"handcrafted": (run.X, run.feature_names)}
    sets = extract_feature_sets(
        ["handcrafted", "encoder", "vgg16"],
        inputs.images,
        inputs.masks,
        seg_model=run.seg_model_path,
        options={"vgg16": {"weights_dir": tmp_path / "weights"}},
        known=known,
    )
    assert sets["handcrafted"][0] is not None and sets["handcrafted"][0].shape == run.X.shape
    X_enc, names = sets["encoder"]
    assert X_enc.shape[0] == len(run.table) and len(names) == X_enc.shape[1]
    missing = sets["vgg16"]
    assert isinstance(missing, FeatureUnavailable)
    assert missing.status.startswith("weights not available: put ")
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in missing.status
    assert str(tmp_path / "weights") in missing.status


def test_predictor_scores_match_the_classifier(run):
    predictor = run.predictor()
    inputs = run.load_inputs()
    scores = predictor.score(inputs.images[:4], inputs.masks[:4], n_jobs=1)
    expected = predictor.classifier.predict_proba(run.X[:4])[:, 1]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert predictor.image_size == SIZE


def test_roc_curves_of_all_and_each_site(run):
    curves = run.roc_curves(n_boot=200)
    assert list(curves) == ["all", "montgomery", "shenzhen"]
    fpr, tpr, auc, (low, high) = curves["all"]
    assert fpr[0] == 0 and tpr[-1] == 1 and low <= auc <= high
    mc = run.sites == "montgomery"
    assert curves["montgomery"][2] == pytest.approx(roc_auc_score(run.y[mc], run.probability[mc]))


def test_compare_masks_scores_predicted_against_ground_truth(run):
    table, dice = compare_masks(run, n_boot=200, n_jobs=1)
    assert len(dice) == 32 and dice["dice"].between(0, 1).all()
    assert dice["dice"].mean() < 0.99  # the stand-in model is not the ground truth
    names = table["extractor"].tolist()
    assert sorted(names) == ["handcrafted, ground-truth masks", "handcrafted, predicted masks"]
    predicted = table.set_index("extractor").loc["handcrafted, predicted masks"]
    assert predicted["auc"] == pytest.approx(run.summary(n_boot=200)["auc"])
    assert (table["n"] == 32).all() and (table["status"] == "ok").all()


def test_format_comparison_and_binomial_interval():
    table = pd.DataFrame(
        {
            "extractor": ["handcrafted", "vgg16"],
            "classifier": ["logreg", "logreg"],
            "n": pd.array([640, pd.NA], dtype="Int64"),
            "n_features": pd.array([456, pd.NA], dtype="Int64"),
            "auc": [0.9211, np.nan],
            "auc_low": [0.8967, np.nan],
            "auc_high": [0.9412, np.nan],
            "accuracy": [0.86, np.nan],
            "sensitivity": [0.83, np.nan],
            "specificity": [0.89, np.nan],
            "status": ["ok", "weights not available: put F in D"],
        }
    )
    shown = format_comparison(table)
    assert shown.loc["handcrafted + logreg", "AUC (95% CI)"] == "0.921 [0.897, 0.941]"
    assert shown.loc["vgg16 + logreg", "AUC (95% CI)"] == "-"
    assert shown.loc["vgg16 + logreg", "status"].startswith("weights not available")
    # the chapter's interval of a published accuracy (0.90 of 160 test images): Wilson
    low, high = binomial_ci(round(0.9 * 160), 160)
    assert low == pytest.approx(0.8434, abs=1e-3) and high == pytest.approx(0.9377, abs=1e-3)
    assert binomial_ci(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="successes"):
        binomial_ci(15, 10)


def test_interval_relation():
    assert interval_relation(0.87, 0.85, 0.90) == "inside"
    assert interval_relation(0.95, 0.85, 0.90) == "above"
    assert interval_relation(0.80, 0.85, 0.90) == "below"
    assert interval_relation(0.80, float("nan"), 0.90) == "undefined"


def test_the_segmentation_models_equalization_is_kept(data, seg_model, tmp_path):
    seg_dir = tmp_path / "seg_run"
    seg_dir.mkdir()
    shutil.copy(seg_model, seg_dir / "model.keras")
    assert seg_model_equalize(seg_dir / "model.keras") is None
    (seg_dir / "config.json").write_text(json.dumps({"equalize": "hist", "img_size": 32}))
    assert seg_model_equalize(seg_dir / "model.keras") == "hist"
    paths = sorted(str(p) for p in (data / "images").glob("*.png"))[:4]
    plain = prepare_inputs(paths, seg_dir / "model.keras", SIZE)
    equalized = prepare_inputs(paths, seg_dir / "model.keras", SIZE, seg_equalize="hist")
    np.testing.assert_array_equal(plain.images, equalized.images)  # features see raw images
    assert not np.array_equal(plain.masks, equalized.masks)  # the model saw equalized ones
    run = train_tb(
        data, tmp_path / "run", TBConfig(**FAST), seg_model=seg_dir, progress=False, n_jobs=1
    )
    stored = json.loads((run.run_dir / "tb_config.json").read_text())
    assert stored["seg_equalize"] == "hist"
    assert load_predictor(run.run_dir).seg_equalize == "hist"


def test_a_reloaded_run_knows_its_ground_truth_masks(run):
    reloaded = load_run(run.run_dir)
    assert reloaded.table["mask_path"].tolist() == run.table["mask_path"].tolist()
    assert reloaded.inputs is None
    inputs = reloaded.load_inputs()
    np.testing.assert_array_equal(inputs.masks, run.inputs.masks)
    _, dice = compare_masks(reloaded, n_boot=100, n_jobs=1)
    _, dice_trained = compare_masks(run, n_boot=100, n_jobs=1)
    np.testing.assert_allclose(dice["dice"], dice_trained["dice"])


def test_mask_paths_round_trip_through_the_csv():
    for value in (None, "/a/b.png", ("/a/left.png", "/a/right.png")):
        assert mask_value(mask_text(value)) == value
