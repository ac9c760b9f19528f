"""Tests for cxrlib.tb.classifiers: the factory, the pipelines' checks and the Keras MLP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from cxrlib.errors import CxrlibError
from cxrlib.tb.classifiers import (
    CLASSIFIERS,
    ClassifierError,
    KerasMLPClassifier,
    available_classifiers,
    make_classifier,
)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small problems: one BLAS thread is fastest (and much faster on a busy machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


FAST_MLP = {
    "hidden_units": (16,),
    "max_epochs": 60,
    "patience": 10,
    "dropout": 0.1,
    "learning_rate": 0.01,
}


def blobs(n: int = 60, d: int = 6, seed: int = 0, shift: float = 2.0):
    """Two Gaussian classes that differ in the first two features (and in scale)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) * 10.0 + 100.0
    X[:, 0] += shift * 10.0 * y
    X[:, 1] -= shift * 10.0 * y
    return X, y


def params(name: str) -> dict:
    return dict(FAST_MLP) if name == "mlp" else {}


@pytest.fixture(scope="module")
def fitted():
    """Each classifier fitted once (seed 3) on the same training blobs."""
    X, y = blobs()
    return {name: make_classifier(name, seed=3, **params(name)).fit(X, y) for name in CLASSIFIERS}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_each_classifier_learns_and_has_the_pipeline_steps(fitted, name):
    X, _ = blobs()
    X_test, y_test = blobs(seed=1)
    model = fitted[name]
    assert [s for s, _ in model.steps] == ["check", "scale", "model"]
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(y_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.9
    assert set(np.unique(model.predict(X_test))) <= {0, 1}
    # the scaler is fitted on the training data it was given, nothing else
    np.testing.assert_allclose(model.named_steps["scale"].mean_, X.mean(axis=0))


def test_available_classifiers():
    assert available_classifiers() == list(CLASSIFIERS)
    assert {"mlp", "logreg", "svm", "gboost", "ensemble"} == set(CLASSIFIERS)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_deterministic_by_seed(fitted, name):
    X, y = blobs()
    X_test, _ = blobs(seed=1, shift=0.5)
    again = make_classifier(name, seed=3, **params(name)).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X_test), fitted[name].predict_proba(X_test))


def test_mlp_seed_changes_the_model(fitted):
    X, y = blobs()
    X_test, _ = blobs(seed=1, shift=0.5)
    other = make_classifier("mlp", seed=4, **FAST_MLP).fit(X, y).predict_proba(X_test)
    assert not np.allclose(other, fitted["mlp"].predict_proba(X_test))


def test_mlp_early_stopping_params_and_global_rng():
    X, y = blobs()
    np.random.seed(7)  # noqa: NPY002 (checks that fit leaves the global state alone)
    expected = np.random.rand()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    model = KerasMLPClassifier(hidden_units=(8, 4), max_epochs=500, patience=3, seed=0)
    model.fit(X / 100, y)
    assert np.random.rand() == expected  # noqa: NPY002
    assert 1 <= model.epochs_ < 500  # early stopping on the inner validation split
    assert model.n_features_in_ == X.shape[1]
    assert [lay.name for lay in model.model_.layers][1:3] == ["dense0", "drop0"]
    assert clone(model).get_params()["hidden_units"] == (8, 4)
    with pytest.raises(ClassifierError, match="dropout must be in"):
        KerasMLPClassifier(dropout=1.5).fit(X, y)
    with pytest.raises(ClassifierError, match="not fitted yet"):
        KerasMLPClassifier().predict_proba(X)


def test_dimension_mismatch_names_both_dims(fitted):
    X, _ = blobs()
    with pytest.raises(ClassifierError, match="fitted on 6 features but got 4 features"):
        fitted["logreg"].predict_proba(X[:, :4])
    with pytest.raises(ClassifierError, match="'mlp' was fitted on 6 features but got 7"):
        fitted["mlp"].predict(np.hstack([X, X[:, :1]]))


def test_one_class_labels_are_refused():
    X, y = blobs()
    for name in ("logreg", "mlp"):
        with pytest.raises(ClassifierError, match="needs both classes.*only class 1"):
            make_classifier(name).fit(X, np.ones_like(y))


def test_nan_features_are_refused_with_rows_and_columns():
    X, y = blobs()
    X = X.copy()
    X[4, 2] = np.nan
    X[7, 2] = np.inf
    with pytest.raises(ClassifierError, match=r"2 row\(s\) \(rows 4, 7\).*columns 2\)"):
        make_classifier("svm").fit(X, y)
    clean, _ = blobs()
    model = make_classifier("logreg").fit(clean, y)
    with pytest.raises(ClassifierError, match="NaN or infinite"):
        model.predict_proba(X)


def test_label_errors():
    X, y = blobs()
    with pytest.raises(ClassifierError, match=r"must be 0 \(normal\) or 1 \(TB\), got \[2.0\]"):
        make_classifier("logreg").fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(ClassifierError, match="missing for 1 sample"):
        labels = pd.array(list(y[:-1]) + [None], dtype="Int64")
        make_classifier("logreg").fit(X, labels)
    with pytest.raises(ClassifierError, match="59 labels for 60 feature rows"):
        make_classifier("logreg").fit(X, y[:-1])
    booleans = make_classifier("logreg").fit(X, y.astype(bool))
    assert booleans.predict_proba(X).shape == (60, 2)


def test_factory_errors():
    with pytest.raises(ClassifierError, match="unknown classifier 'forest'.*'mlp'"):
        make_classifier("forest")
    with pytest.raises(ClassifierError, match="svm.*bad parameter"):
        make_classifier("svm", colour="red")
    with pytest.raises(ClassifierError, match="C must be a positive number or 'auto'"):
        make_classifier("logreg", C="best")
    assert isinstance(ClassifierError("x"), CxrlibError)
    fixed = make_classifier("logreg", C=0.5)
    assert fixed.named_steps["model"].C == 0.5
