"""Tests of calibrated TB probabilities and operating points chosen inside the folds.

cxrlib.tb.calibration (InnerCalibrated, Brier and reliability tables), cxrlib.tb.operating
(threshold rules, rates with Wilson intervals), the nested thresholds of
cxrlib.tb.crossval.cross_validate, transfer between sites (cxrlib.tb.transfer), and the
operating points of ``cxrlib classify``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from standins import save_standin_model

from cxrlib.cli import main
from cxrlib.stats import binomial_ci
from cxrlib.synthetic import write_dataset
from cxrlib.tb.calibration import InnerCalibrated, brier_table, reliability_table
from cxrlib.tb.classifiers import make_classifier
from cxrlib.tb.classify import classify
from cxrlib.tb.config import TBConfig
from cxrlib.tb.crossval import cross_validate
from cxrlib.tb.operating import (
    choose_threshold,
    choose_thresholds,
    parse_operating_point,
    rates_table,
)
from cxrlib.tb.predictor import load_predictor
from cxrlib.tb.result import load_run
from cxrlib.tb.rundir import TBRunError
from cxrlib.tb.train import train_tb
from cxrlib.tb.transfer import cross_site, standardize_per_site

FIXED_C = {"C": 1.0}  # no inner search for C: fast, the same leakage properties


def gaussian(n: int, shift: float, seed: int, prevalence: float = 0.5):
    """One informative feature: N(0, 1) for normal, N(shift, 1) for TB; two sites."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    X = rng.normal(size=(n, 2))
    X[:, 0] += shift * y
    sites = np.where(rng.random(n) < 0.5, "montgomery", "shenzhen")
    return X, y, sites


class Overconfident(ClassifierMixin, BaseEstimator):
    """A logistic regression whose probabilities are pushed away from the truth."""

    def __init__(self, stretch: float = 4.0, shift: float = 2.0) -> None:
        self.stretch = stretch
        self.shift = shift

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=1.0).fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        z = self.model_.decision_function(X)
        p = expit(self.stretch * z + self.shift)
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


# ------------------------------------------------------------------------ calibration


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_inner_calibration_is_scikit_learns_procedure(method):
    """The same folds give the probabilities of CalibratedClassifierCV(ensemble=False)."""
    X, y, _ = gaussian(160, 1.5, seed=0)
    base = LogisticRegression(C=1.0)
    folds = StratifiedKFold(5, shuffle=True, random_state=3)
    reference = CalibratedClassifierCV(base, method=method, cv=folds, ensemble=False).fit(X, y)
    ours = InnerCalibrated(base, method=method, inner_splits=5, seed=3).fit(X, y)
    np.testing.assert_allclose(
        ours.predict_proba(X)[:, 1], reference.predict_proba(X)[:, 1], atol=1e-4
    )
    assert ours.oof_proba_.shape == (160,) and ours.oof_uncalibrated_.shape == (160,)


def test_calibration_lowers_the_brier_score_of_a_miscalibrated_classifier():
    X, y, sites = gaussian(300, 1.5, seed=1)
    result = cross_validate(
        X, y, sites, Overconfident(), n_splits=5, n_repeats=1, calibration="sigmoid", inner_splits=5
    )
    table = result.brier(n_boot=200)
    for site in ("montgomery", "shenzhen", "all"):
        assert table.loc[site, "brier"] < table.loc[site, "uncalibrated_brier"] - 0.03, site
    assert (
        table.loc["all", "brier_low"] <= table.loc["all", "brier"] <= table.loc["all", "brier_high"]
    )
    # the ranking within a fold is kept: sigmoid calibration is monotone
    fold = result.folds[0] == 0
    order = np.argsort(result.uncalibrated[0, fold])
    assert np.all(np.diff(result.proba[0, fold][order]) >= -1e-12)
    # no inner cross-validation: nothing calibrated, nothing kept
    plain = cross_validate(X, y, sites, Overconfident(), n_splits=5, n_repeats=1)
    assert plain.uncalibrated is None and plain.thresholds is None
    assert "uncalibrated_brier" not in plain.brier(n_boot=50)
    with pytest.raises(ValueError, match="needs an inner cross-validation"):
        cross_validate(X, y, sites, Overconfident(), calibration="sigmoid")


def test_brier_table_known_values():
    y = np.array([0, 1, 0, 1])
    table = brier_table(y, np.full(4, 0.5), ["a", "a", "b", "b"], n_boot=100)
    assert list(table.index) == ["a", "b", "all"]
    assert table["brier"].tolist() == pytest.approx([0.25, 0.25, 0.25])
    assert table.loc["all", "brier_reference"] == pytest.approx(0.25)
    repeats = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])  # mean over repeats
    assert brier_table(y, repeats, n_boot=100).loc["all", "brier"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="probabilities in"):
        brier_table(y, np.full(4, 1.5))


def test_reliability_table_of_calibrated_probabilities():
    rng = np.random.default_rng(0)
    p = rng.random(4000)
    y = (rng.random(4000) < p).astype(int)  # calibrated by construction
    sites = np.where(np.arange(4000) % 2, "a", "b")
    table = reliability_table(y, p, sites, n_bins=5)
    assert table.groupby("site")["count"].sum().to_dict() == {"a": 2000, "all": 4000, "b": 2000}
    assert list(dict.fromkeys(table["site"])) == ["a", "b", "all"]
    pooled = table[table["site"] == "all"]
    assert np.abs(pooled["observed"] - pooled["mean_predicted"]).max() < 0.04
    assert (
        (pooled["observed_low"] <= pooled["observed"])
        & (pooled["observed"] <= pooled["observed_high"])
    ).all()
    low, high = binomial_ci(int(y[p < 0.2].sum()), int((p < 0.2).sum()))
    assert pooled.iloc[0][["observed_low", "observed_high"]].tolist() == pytest.approx([low, high])
    # an overconfident probability is visibly off the diagonal
    bad = reliability_table(y, np.clip(2 * p - 0.5, 0, 1), n_bins=5)
    assert np.abs(bad["observed"] - bad["mean_predicted"]).max() > 0.1
    quantile = reliability_table(y, p, n_bins=4, strategy="quantile")
    assert quantile["count"].tolist() == [1000, 1000, 1000, 1000]


# ------------------------------------------------------------------ operating points


def test_choose_threshold_on_known_scores():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.35, 0.5, 0.55, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    who = choose_threshold(y, p, "who")
    # 9 of 10 TB reach 0.5: the specificity there is 4/5 (0.6 is called TB)
    assert who["sensitivity"] == pytest.approx(0.9) and who["specificity"] == pytest.approx(0.8)
    assert who["threshold"] == pytest.approx((0.5 + 0.4) / 2)  # midpoint below 0.5
    assert who["meets_target"] and not who["degenerate"]
    youden = choose_threshold(y, p, "youden")
    # J = 0.7 at 0.5 (9/10, 4/5) and at 0.65 (7/10, 5/5): the tie goes to sensitivity
    assert youden["sensitivity"] - (1 - youden["specificity"]) == pytest.approx(0.7)
    assert youden["sensitivity"] == pytest.approx(0.9)
    assert set(choose_thresholds(y, p)) == {"who", "youden"}
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_threshold(y, p, "best")


def test_choose_threshold_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        p = np.round(rng.random(40) * 0.6 + 0.3 * y, 2)
        best = max(
            (np.mean(p[y == 0] < t), np.mean(p[y == 1] >= t))
            for t in np.unique(p)
            if np.mean(p[y == 1] >= t) >= 0.9
        )
        who = choose_threshold(y, p, "who")
        assert (who["specificity"], who["sensitivity"]) == pytest.approx(best)
        j = max(np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1 for t in np.unique(p))
        youden = choose_threshold(y, p, "youden")
        assert youden["sensitivity"] + youden["specificity"] - 1 == pytest.approx(j)


def test_parse_operating_point():
    assert parse_operating_point("WHO") == ("who", None)
    assert parse_operating_point("youden") == ("youden", None)
    assert parse_operating_point("0.5") == ("0.5", 0.5)
    assert parse_operating_point(0.25) == ("0.25", 0.25)
    for bad in ("best", "0", "1", "1.5", "-0.2", "nan", ""):
        with pytest.raises(ValueError, match="'who', 'youden' or a threshold"):
            parse_operating_point(bad)


def test_rates_table_intervals_and_verdicts():
    y = np.array([1] * 100 + [0] * 100)
    calls = np.concatenate([np.arange(100) < 98, np.arange(100) < 10])  # sens 0.98, spec 0.9
    sites = np.array(["a"] * 50 + ["b"] * 50 + ["a"] * 50 + ["b"] * 50)
    table = rates_table(y, calls, sites)
    assert list(table.index) == ["a", "b", "all"]
    row = table.loc["all"]
    assert (row["sensitivity"], row["specificity"]) == pytest.approx((0.98, 0.9))
    assert (row["sensitivity_low"], row["sensitivity_high"]) == pytest.approx(binomial_ci(98, 100))
    assert row["meets_target"] and row["ci_above_target"] and not row["ci_excludes_target"]
    weak = rates_table(y, np.concatenate([np.arange(100) < 60, np.arange(100) < 10]))
    assert weak.loc["all", "ci_excludes_target"] and not weak.loc["all", "meets_target"]
    # two repeats: the rate is their mean, the interval counts each case once
    two = rates_table(y, np.stack([calls, np.concatenate([np.arange(100) < 82, calls[100:]])]))
    assert two.loc["all", "sensitivity"] == pytest.approx(0.9)
    assert two.loc["all", "sensitivity_low"] == pytest.approx(binomial_ci(90, 100)[0])


# ------------------------------------------------------------------ nested thresholds


def test_nested_who_threshold_reaches_the_sensitivity_on_held_out_data():
    """On held-out folds the nested WHO threshold finds about 90 % of TB, 0.5 does not.

    With a separation of 1.5 SD the WHO target cannot be met (specificity about 0.56 at
    sensitivity 0.90): the inner choices say so, and so does the table.
    """
    sensitivity, fixed = [], []
    for seed in range(3):
        X, y, sites = gaussian(400, 1.5, seed=seed)
        result = cross_validate(
            X,
            y,
            sites,
            "logreg",
            params=FIXED_C,
            n_splits=5,
            n_repeats=1,
            seed=seed,
            calibration="sigmoid",
            inner_splits=5,
        )
        table = result.operating_table().set_index(["operating_point", "site"])
        sensitivity.append(table.loc[("who", "all"), "sensitivity"])
        fixed.append(table.loc[("0.5", "all"), "sensitivity"])
        assert table.loc[("who", "all"), "specificity"] < 0.7
        assert not table.loc[("who", "all"), "meets_target"]
        assert table.loc[("who", "all"), "folds_missing_target"] >= 4
        assert set(table.index.get_level_values("site")) == {"montgomery", "shenzhen", "all"}
    assert 0.87 <= np.mean(sensitivity) <= 0.95
    assert np.mean(fixed) < 0.85


def test_a_folds_thresholds_never_depend_on_its_test_labels():
    X, y, sites = gaussian(200, 2.0, seed=4)
    kwargs = {"params": FIXED_C, "n_repeats": 1, "calibration": "sigmoid", "inner_splits": 4}
    before = cross_validate(X, y, sites, "logreg", n_splits=4, **kwargs)
    test = np.flatnonzero(before.folds[0] == 0)
    permuted = y.copy()
    permuted[test] = np.random.default_rng(0).permutation(y[test])[::-1]
    assert not np.array_equal(permuted, y)
    after = cross_validate(X, permuted, sites, "logreg", folds=before.folds, **kwargs)
    np.testing.assert_array_equal(after.folds, before.folds)

    def of_fold(result, fold):
        rows = result.thresholds[result.thresholds["fold"] == fold]
        return rows.set_index("operating_point")["threshold"]

    pd.testing.assert_series_equal(of_fold(after, 0), of_fold(before, 0))
    np.testing.assert_array_equal(after.proba[0, test], before.proba[0, test])
    # the folds that trained on the permuted labels do change
    changed = [not of_fold(after, k).equals(of_fold(before, k)) for k in (1, 2, 3)]
    assert any(changed)
    thresholds = before.sample_thresholds("who")
    assert thresholds.shape == (1, 200) and np.unique(thresholds[0, test]).size == 1


def test_cross_site_thresholds_come_from_the_training_site_and_are_not_degenerate():
    """Site B's features are shifted: at 0.5 every B case is called TB, and the thresholds
    chosen on site A's own out-of-fold probabilities are neither all- nor none-TB on A."""
    X, y, _ = gaussian(240, 2.0, seed=5, prevalence=0.35)
    sites = np.where(np.arange(240) < 120, "a", "b")
    X[sites == "b", 0] += 6.0
    result = cross_site(
        X, y, sites, "logreg", "a", "b", params=FIXED_C, calibration="sigmoid", n_boot=200
    )
    table = result.operating_table().set_index("operating_point")
    assert list(table.index) == ["who", "youden", "0.5"]
    assert not table.loc[["who", "youden"], "train_degenerate"].any()
    assert table.loc["who", "train_sensitivity"] >= 0.9
    assert 0 < table.loc["who", "train_specificity"] < 1
    same = make_classifier("logreg", seed=0, **FIXED_C)
    again = InnerCalibrated(same, method="sigmoid", inner_splits=5, seed=0)
    again.fit(X[sites == "a"], y[sites == "a"])
    expected = choose_threshold(y[sites == "a"], again.oof_proba_, "who")["threshold"]
    assert table.loc["who", "threshold"] == pytest.approx(expected)
    assert table.loc["0.5", "specificity"] < 0.1  # the shift: a fixed 0.5 calls B all TB
    assert table.loc["who", "n_train"] == 120 and table.loc["who", "n_test"] == 120
    # standardising each site with its own (unlabelled) statistics undoes the shift
    adapted = (
        cross_site(
            X,
            y,
            sites,
            "logreg",
            "a",
            "b",
            params=FIXED_C,
            calibration="sigmoid",
            site_standardize=True,
            n_boot=200,
        )
        .operating_table()
        .set_index("operating_point")
    )
    assert adapted["site_standardized"].all() and not table["site_standardized"].any()
    assert adapted.loc["who", "sensitivity"] >= 0.8
    assert 0.3 < adapted.loc["who", "specificity"] < 1.0
    assert adapted.loc["0.5", "specificity"] > 0.7


def test_standardize_per_site_uses_each_sites_own_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * [1.0, 2.0, 0.0] + [0.0, 5.0, 1.0]
    sites = np.repeat(["a", "b"], 30)
    X[sites == "b"] += 10.0
    Z = standardize_per_site(X, sites)
    for site in ("a", "b"):
        np.testing.assert_allclose(Z[sites == site, :2].mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(Z[sites == site, :2].std(axis=0), 1.0)
    assert (Z[:, 2] == 0).all()  # a constant column


# ------------------------------------------------------------------- runs and classify


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tbcal")
    data = root / "phantoms"
    write_dataset(
        data, n=32, size=64, seed=2, layout="plain", site_fraction=0.5, progress=False, n_jobs=1
    )
    model = save_standin_model(root / "standin.keras")
    config = TBConfig(image_size=64, n_splits=2, n_repeats=1, inner_splits=3)
    result = train_tb(data, root / "run", config, seg_model=model, progress=False, n_jobs=1)
    return result, data


def test_the_saved_thresholds_follow_the_rule_on_the_final_models_inner_folds(run):
    result, _ = run
    predictor = load_predictor(result.run_dir)
    assert predictor.calibration == "sigmoid"
    final = predictor.classifier
    assert isinstance(final, InnerCalibrated)
    expected = choose_thresholds(result.y, final.oof_proba_)
    for name in ("who", "youden"):
        assert predictor.operating_points[name] == pytest.approx(expected[name]["threshold"])
        assert predictor.operating_point(name) == (name, predictor.operating_points[name])
    assert predictor.operating_point("0.3") == ("0.3", 0.3)
    stored = json.loads((result.run_dir / "tb_config.json").read_text())
    assert stored["calibration"] == "sigmoid" and set(stored["operating_points"]) == {
        "who",
        "youden",
    }
    metrics = json.loads((result.run_dir / "cv_metrics.json").read_text())
    assert {"brier", "nested_operating_points"} <= set(metrics)


def test_a_reloaded_run_has_the_same_nested_numbers(run):
    result, _ = run
    again = load_run(result.run_dir)
    pd.testing.assert_frame_equal(again.fold_thresholds(), result.fold_thresholds())
    pd.testing.assert_frame_equal(again.nested_operating_points(), result.nested_operating_points())
    np.testing.assert_allclose(again.cv.uncalibrated, result.cv.uncalibrated)
    assert again.final_operating_points == result.final_operating_points
    reliability = again.reliability(n_bins=4)
    assert reliability.groupby("site")["count"].sum()["all"] == len(result.table)


@pytest.mark.parametrize("point", ["who", "youden", "0.5", "0.2"])
def test_classify_writes_the_probability_and_the_call_at_an_operating_point(run, tmp_path, point):
    result, data = run
    out = tmp_path / "p.csv"
    report = classify(result.run_dir, data / "images", out, operating_point=point, n_jobs=1)
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "file",
        "probability",
        "prediction",
        "operating_point",
        "threshold",
    ]
    _, threshold = load_predictor(result.run_dir).operating_point(point)
    assert (table["operating_point"].astype(str) == point).all()
    np.testing.assert_allclose(table["threshold"], threshold)
    assert (table["prediction"] == (table["probability"] >= threshold).astype(int)).all()
    assert report.operating_point == point and report.calibration == "sigmoid"
    assert f"operating point '{point}'" in report.summary()


def _old_run(run_dir: Path, target: Path) -> Path:
    """A copy of a run as cxrlib wrote it before calibration (no thresholds saved)."""
    shutil.copytree(run_dir, target)
    stored = json.loads((target / "tb_config.json").read_text())
    for key in ("operating_points", "calibration"):
        stored.pop(key)
    for key in ("calibration", "inner_splits"):
        stored["config"].pop(key)
    (target / "tb_config.json").write_text(json.dumps(stored))
    (target / "fold_thresholds.csv").unlink()
    return target


def test_an_old_run_needs_a_fixed_threshold(run, tmp_path, capsys):
    result, data = run
    old = _old_run(result.run_dir, tmp_path / "old")
    with pytest.raises(TBRunError, match="older cxrlib.*--operating-point 0.5"):
        classify(old, data / "images", tmp_path / "p.csv", n_jobs=1)
    assert not (tmp_path / "p.csv").exists()
    report = classify(old, data / "images", tmp_path / "p.csv", operating_point=0.5, n_jobs=1)
    assert report.calibration == "none" and len(report.table) == 32
    assert load_run(old).config.calibration == "none"
    with pytest.raises(ValueError, match="no nested thresholds"):
        load_run(old).nested_operating_points()
    argv = ["-q", "classify", str(old), str(data / "images"), "--out", str(tmp_path / "c.csv")]
    assert main(argv) == 2
    assert "older cxrlib" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["best", "1.5", "0"])
def test_cli_rejects_a_bad_operating_point(run, tmp_path, capsys, bad):
    result, data = run
    argv = ["classify", str(result.run_dir), str(data / "images"), "--out", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--operating-point", bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--operating-point" in err and "'who', 'youden' or a threshold" in err
    assert not (tmp_path / "p").exists()


def test_cli_classify_at_youden(run, tmp_path, capsys):
    result, data = run
    out = tmp_path / "y.csv"
    argv = ["-q", "classify", str(result.run_dir), str(data / "images"), "--out", str(out)]
    assert main([*argv, "--operating-point", "youden"]) == 0
    assert (pd.read_csv(out)["operating_point"] == "youden").all()
    assert "operating point 'youden'" in capsys.readouterr().out
