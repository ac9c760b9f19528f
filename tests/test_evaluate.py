"""Tests for cxrlib.tb.metrics and cxrlib.tb.crossval: reports, ROC with CIs, operating points,
cross-validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score

from cxrlib.tb.classifiers import ClassifierError
from cxrlib.tb.crossval import cross_validate, cv_table
from cxrlib.tb.metrics import (
    auc_with_ci,
    binary_metrics,
    classification_report_table,
    confusion_matrix_table,
    operating_points,
    per_site_metrics,
    roc_with_ci,
)
from cxrlib.tb.transfer import cross_site

# 4 normal, 6 TB; at 0.5: TN 3, FP 1 (index 2), TP 4, FN 2 (indices 6 and 9)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.4, 0.9, 0.55, 0.2])


FIXED_C = {"C": 1.0}  # skips the inner search for C: faster, same leakage properties


def blobs(n: int = 80, seed: int = 0, shift: float = 1.5):
    """Two sites x two classes; the class shifts the first two features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    sites = np.where(np.arange(n) % 4 < 2, "montgomery", "shenzhen")
    X = rng.normal(size=(n, 5)) * 3.0 + 10.0
    X[:, 0] += 3.0 * shift * y
    X[:, 1] -= 3.0 * shift * y
    X[sites == "shenzhen", 2] += 5.0  # a site effect
    return X, y, sites


# --------------------------------------------------------------------- threshold metrics


def test_binary_metrics_and_confusion_matrix():
    m = binary_metrics(Y, P)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 1, 2, 4)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(0.8) and m["npv"] == pytest.approx(0.6)
    table = confusion_matrix_table(Y, P)
    assert table.loc["true normal", "predicted tb"] == 1
    assert table.loc["true tb", "predicted normal"] == 2
    assert table.to_numpy().tolist() == [[3, 1], [2, 4]]
    # p == threshold counts as TB
    assert binary_metrics([0, 1], [0.5, 0.5])["tp"] == 1
    assert np.isnan(binary_metrics([0, 0], [0.1, 0.9])["sensitivity"])


def test_classification_report_table_values():
    table = classification_report_table(Y, P, threshold=0.5)
    assert list(table.index) == ["normal", "tb", "accuracy", "macro avg", "weighted avg"]
    assert list(table.columns) == ["precision", "recall", "f1-score", "support"]
    expected = {
        "normal": (0.6, 0.75, 2 * 0.6 * 0.75 / 1.35, 4),
        "tb": (0.8, 4 / 6, 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6), 6),
        "macro avg": (0.7, (0.75 + 4 / 6) / 2, None, 10),
        "weighted avg": (0.72, 0.7, None, 10),
    }
    for row, (precision, recall, f1, support) in expected.items():
        assert table.loc[row, "precision"] == pytest.approx(precision)
        assert table.loc[row, "recall"] == pytest.approx(recall)
        if f1 is not None:
            assert table.loc[row, "f1-score"] == pytest.approx(f1)
        assert table.loc[row, "support"] == support
    f1_normal, f1_tb = expected["normal"][2], expected["tb"][2]
    assert table.loc["macro avg", "f1-score"] == pytest.approx((f1_normal + f1_tb) / 2)
    assert table.loc["weighted avg", "f1-score"] == pytest.approx((4 * f1_normal + 6 * f1_tb) / 10)
    assert table.loc["accuracy", "f1-score"] == pytest.approx(0.7)
    assert np.isnan(table.loc["accuracy", "precision"])
    assert table["support"].dtype == np.int64
    # a higher threshold moves index 8 (p = 0.55) to normal
    higher = classification_report_table(Y, P, threshold=0.6)
    assert higher.loc["tb", "recall"] == pytest.approx(0.5)


def test_input_errors():
    with pytest.raises(ValueError, match="p has 3 values but y has 10"):
        binary_metrics(Y, P[:3])
    with pytest.raises(ClassifierError, match="must be 0 \\(normal\\) or 1"):
        binary_metrics(Y + 1, P)
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(Y, np.where(Y == 1, np.nan, 0.1))
    with pytest.raises(ValueError, match="needs both classes"):
        roc_with_ci(np.zeros(4), np.arange(4.0))


# ----------------------------------------------------------------------------- ROC / AUC


def test_roc_auc_known_case():
    fpr, tpr, auc, (low, high) = roc_with_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=500)
    assert auc == pytest.approx(0.75)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr.shape == tpr.shape
    assert 0.0 <= low <= auc <= high <= 1.0
    _, _, perfect, interval = roc_with_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=200)
    assert perfect == 1.0 and interval == (1.0, 1.0)


def brute_force_ci(y, p, n_boot, seed):
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        aucs.append(roc_auc_score(y[idx], p[idx]))
    return np.percentile(aucs, [2.5, 97.5])


def test_bootstrap_ci_agrees_with_brute_force():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 60)
    p = np.round(rng.normal(size=120) + 0.8 * y, 1)  # rounded: many ties
    auc, (low, high) = auc_with_ci(y, p, n_boot=2000, seed=1)
    assert auc == pytest.approx(roc_auc_score(y, p))
    ref_low, ref_high = brute_force_ci(y, p, 1000, seed=2)
    assert abs(low - ref_low) < 0.02 and abs(high - ref_high) < 0.02
    assert high - low > 0.1  # a real interval, not a point
    assert auc_with_ci(y, p, n_boot=300, seed=1) == auc_with_ci(y, p, n_boot=300, seed=1)


def test_auc_with_ci_averages_repeats():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    scores = rng.normal(size=(3, 60)) + y
    auc, (low, high) = auc_with_ci(y, scores, n_boot=300)
    assert auc == pytest.approx(np.mean([roc_auc_score(y, s) for s in scores]))
    assert low < auc < high


# -------------------------------------------------------------------- operating points


def hand_made():
    neg = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.6, 0.7, 0.8]
    pos = [0.3, 0.4, 0.45, 0.5, 0.55, 0.65, 0.75, 0.85, 0.9, 0.95]
    return np.repeat([0, 1], 10), np.array(neg + pos)


def test_operating_points_hand_made():
    y, p = hand_made()
    table = operating_points(y, p)
    assert list(table.columns) == ["threshold", "sensitivity", "specificity", "meets_target"]
    row = table.loc["sensitivity at specificity >= 0.7"]
    # threshold 0.4: FP are 0.6, 0.7, 0.8 (specificity 0.7), only the TB case at 0.3 missed
    assert (row["threshold"], row["sensitivity"], row["specificity"]) == (0.4, 0.9, 0.7)
    assert bool(row["meets_target"])
    row = table.loc["specificity at sensitivity >= 0.9"]
    assert (row["threshold"], row["sensitivity"], row["specificity"]) == (0.4, 0.9, 0.7)
    strict = operating_points(y, p, min_sensitivity=1.0).loc["specificity at sensitivity >= 1"]
    # all TB found only from 0.3 down: 5 normals (0.3 ... 0.8) are called TB
    assert (strict["threshold"], strict["specificity"]) == (0.3, 0.5)
    assert not bool(strict["meets_target"])


def test_operating_points_match_brute_force():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = rng.normal(size=200) + y
    table = operating_points(y, p, min_specificity=0.8, min_sensitivity=0.85)
    best_sens, best_spec = 0.0, 0.0
    for t in np.unique(p):
        pred = p >= t
        sens, spec = pred[y == 1].mean(), (~pred[y == 0]).mean()
        if spec >= 0.8:
            best_sens = max(best_sens, sens)
        if sens >= 0.85:
            best_spec = max(best_spec, spec)
    assert table.iloc[0]["sensitivity"] == pytest.approx(best_sens)
    assert table.iloc[1]["specificity"] == pytest.approx(best_spec)
    t0 = table.iloc[0]["threshold"]
    assert binary_metrics(y, p, t0)["sensitivity"] == pytest.approx(best_sens)


# ------------------------------------------------------------------------ per site


def test_per_site_metrics():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    p = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.4, 0.6])
    sites = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    table = per_site_metrics(y, p, sites, n_boot=200)
    assert list(table.index) == ["a", "b", "c", "all"]
    assert table.loc["a", "auc"] == 1.0 and table.loc["b", "auc"] == 0.0
    # one case per class: every resample is that pair, the interval is the point
    assert table.loc["b", ["auc_low", "auc_high"]].tolist() == [0.0, 0.0]
    assert table.loc["a", "auc_low"] <= 1.0 == table.loc["a", "auc_high"]
    assert np.isnan(table.loc["c", "auc"])  # one class only
    assert table.loc["all", "n"] == 8 and table.loc["all", "n_tb"] == 3
    assert table.loc["all", "auc"] == pytest.approx(roc_auc_score(y, p))
    assert table.loc["c", "specificity"] == 0.5
    with pytest.raises(ValueError, match="sites has 3 values"):
        per_site_metrics(y, p, sites[:3])


# -------------------------------------------------------------------- cross-validation


@pytest.fixture(scope="module")
def cv_data():
    return blobs()


@pytest.fixture(scope="module")
def cv_result(cv_data):
    X, y, sites = cv_data
    return cross_validate(X, y, sites, "logreg", n_splits=4, n_repeats=2, seed=0, params=FIXED_C)


def test_cross_validate_structure(cv_result, cv_data):
    X, y, sites = cv_data
    r = cv_result
    assert r.proba.shape == (2, len(y)) and r.folds.shape == (2, len(y))
    assert np.isfinite(r.proba).all() and ((r.proba >= 0) & (r.proba <= 1)).all()
    assert set(np.unique(r.folds)) == {0, 1, 2, 3}
    for repeat in range(2):
        for fold in range(4):
            test = r.folds[repeat] == fold
            # stratified by site and label: 20 rows per (site, label), 5 per fold
            counts = pd.crosstab(sites[test], y[test]).to_numpy()
            assert counts.tolist() == [[5, 5], [5, 5]]
    assert not np.array_equal(r.folds[0], r.folds[1])  # repeats reshuffle
    assert r.mean_proba.shape == (len(y),)
    assert r.auc_per_repeat().min() > 0.9
    summary = r.summary(n_boot=200)
    assert summary["auc"] == pytest.approx(r.auc_per_repeat().mean())
    assert summary["auc_low"] <= summary["auc"] <= summary["auc_high"]
    assert {"accuracy", "sensitivity", "specificity", "n"} <= set(summary)


def test_cross_validate_is_deterministic(cv_result, cv_data):
    X, y, sites = cv_data
    again = cross_validate(X, y, sites, "logreg", n_splits=4, n_repeats=2, seed=0, params=FIXED_C)
    np.testing.assert_array_equal(again.proba, cv_result.proba)
    other = cross_validate(X, y, sites, "logreg", n_splits=4, n_repeats=2, seed=1, params=FIXED_C)
    assert not np.array_equal(other.folds, cv_result.folds)


def test_test_fold_never_influences_its_own_predictions(cv_data):
    """Scaling, the inner search for C, everything is fitted on the training folds only.

    Shift one sample far away: the models that predict its fold never saw it, so
    the predictions of its fold-mates must not change at all, while models of the
    other folds (which trained on it) do change.
    """
    X, y, sites = cv_data
    moved = X.copy()
    moved[0] += 1000.0
    before = cross_validate(X, y, sites, "logreg", n_splits=4, n_repeats=1, seed=0)
    after = cross_validate(moved, y, sites, "logreg", n_splits=4, n_repeats=1, seed=0)
    mates = before.folds[0] == before.folds[0, 0]
    mates[0] = False
    np.testing.assert_array_equal(after.proba[0, mates], before.proba[0, mates])
    assert not np.allclose(after.proba[0, ~mates], before.proba[0, ~mates])


class _Spy(ClassifierMixin, BaseEstimator):
    """Records the ids (column 0) of the rows each clone is fitted on."""

    seen: list[set] = []

    def fit(self, X, y):
        _Spy.seen.append(set(X[:, 0].astype(int)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 1], X[:, 1]])


def test_fits_see_only_training_folds(cv_data):
    _, y, sites = cv_data
    X = np.column_stack([np.arange(len(y)), np.linspace(0, 1, len(y))])
    _Spy.seen = []
    result = cross_validate(X, y, sites, _Spy(), n_splits=4, n_repeats=2, seed=0)
    assert len(_Spy.seen) == 8
    for index, seen in enumerate(_Spy.seen):
        repeat, fold = divmod(index, 4)
        test = set(np.flatnonzero(result.folds[repeat] == fold))
        assert not seen & test
        assert seen | test == set(range(len(y)))
    np.testing.assert_allclose(result.proba[0], X[:, 1])
    assert result.classifier == "_Spy"


def test_cross_validate_errors(cv_data):
    X, y, sites = cv_data
    with pytest.raises(ValueError, match="n_splits must be an int >= 2"):
        cross_validate(X, y, sites, "logreg", n_splits=1)
    with pytest.raises(ValueError, match="strata has 3 values"):
        cross_validate(X, y, sites[:3], "logreg")
    with pytest.raises(ClassifierError, match="needs both classes"):
        cross_validate(X, np.zeros_like(y), sites, "logreg")
    with pytest.raises(ValueError, match="needs at least 50 samples of each class"):
        cross_validate(X, y, sites, "logreg", n_splits=50)
    with pytest.raises(ValueError, match="blas_threads must be"):
        cross_validate(X, y, sites, "logreg", blas_threads=0)


def test_cv_table_sorts_by_auc(cv_result, cv_data):
    X, y, sites = cv_data
    noise = np.random.default_rng(0).normal(size=(len(y), 3))
    weak = cross_validate(noise, y, sites, "logreg", n_splits=4, n_repeats=1, seed=0)
    table = cv_table({"noise": weak, "blobs": cv_result}, n_boot=100)
    assert list(table.index) == ["blobs", "noise"]
    assert table.loc["blobs", "auc"] > table.loc["noise", "auc"]
    assert table.index.name == "pipeline"


def test_cross_site(cv_data):
    X, y, sites = cv_data
    result = cross_site(X, y, sites, "logreg", "montgomery", "shenzhen", n_boot=200)
    assert (result.n_train, result.n_test) == (40, 40)
    np.testing.assert_array_equal(result.y, y[sites == "shenzhen"])
    assert result.proba.shape == (40,)
    assert result.auc == pytest.approx(roc_auc_score(result.y, result.proba))
    assert result.auc > 0.8
    row = result.summary()
    assert row["train_site"] == "montgomery" and row["auc_low"] <= row["auc"]
    with pytest.raises(ValueError, match="'mars' is not one of the sites"):
        cross_site(X, y, sites, "logreg", "mars", "shenzhen")
    with pytest.raises(ValueError, match="both 'shenzhen'"):
        cross_site(X, y, sites, "logreg", "shenzhen", "shenzhen")
