"""TB classifiers on feature vectors, all behind one factory: :func:`make_classifier`.

Every classifier is a scikit-learn :class:`~sklearn.pipeline.Pipeline` of three
steps:

1. ``check`` (:class:`FeatureCheck`): refuses NaN or infinite features, labels
   that are not 0/1 or hold only one class, and -- at predict time -- features
   of another dimension than at fit time, with messages that name the numbers;
2. ``scale``: a :class:`~sklearn.preprocessing.StandardScaler`, fitted in
   :meth:`fit` only, so inside a cross-validation it sees the training folds
   only (no leakage of test-fold statistics);
3. ``model``: the classifier itself.

Classifiers (``name``):

``"mlp"``
    :class:`KerasMLPClassifier`, the "deep MLP" of the original notebooks: a
    stack of Dense-ReLU-Dropout layers and a sigmoid output, trained with Adam
    on binary cross-entropy, early stopping on a stratified inner validation
    split; seeded (initialisers, dropout, shuffling), so the same seed and data
    give the same model.
``"logreg"``
    L2 logistic regression. ``C="auto"`` (default) picks ``C`` by an inner
    5-fold cross-validation on the training data (ROC AUC), a nested choice
    that cannot see the test fold; a number fixes it.
``"svm"``
    RBF support-vector machine whose decision function is calibrated into
    probabilities by Platt scaling on inner cross-validation
    (:class:`~sklearn.calibration.CalibratedClassifierCV`, ``method="sigmoid"``).
``"gboost"``
    :class:`~sklearn.ensemble.HistGradientBoostingClassifier` with early
    stopping.
``"ensemble"``
    The mean of the ``"logreg"`` and ``"gboost"`` probabilities (a soft
    :class:`~sklearn.ensemble.VotingClassifier`): a linear and a tree model err on
    different radiographs. On the real development set with the hand-crafted and
    asymmetry features it reached a cross-validated AUC of 0.939 against 0.928 and
    0.929 for each alone (``benchmarks/bench_tb_pipelines.py``).

Labels are 0 (normal) and 1 (TB); ``predict_proba(X)[:, 1]`` is the TB
probability.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cxrlib.errors import CxrlibError

__all__ = [
    "CLASSIFIERS",
    "ClassifierError",
    "FeatureCheck",
    "KerasMLPClassifier",
    "available_classifiers",
    "check_labels",
    "make_classifier",
]

#: The classifier names :func:`make_classifier` accepts.
CLASSIFIERS = ("mlp", "logreg", "svm", "gboost", "ensemble")

_MAX_LISTED = 5
_LOGREG_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))


class ClassifierError(CxrlibError, ValueError):
    """Bad input to a classifier: features, labels or parameters."""


def available_classifiers() -> list[str]:
    """Return the names :func:`make_classifier` accepts."""
    return list(CLASSIFIERS)


# ------------------------------------------------------------------------------ checks


def _first(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_MAX_LISTED])
    return shown + (", ..." if len(indices) > _MAX_LISTED else "")


def check_features(X: Any, who: str = "classifier") -> np.ndarray:
    """Return ``X`` as a finite ``float64 (N, D)`` array or raise :class:`ClassifierError`.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Feature matrix.
    who : str
        Name used in the messages (e.g. ``"classifier 'svm'"``).

    Returns
    -------
    numpy.ndarray
        ``float64 (N, D)``.
    """
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ClassifierError(f"{who}: features must be numbers ({error})") from None
    if array.ndim != 2:
        raise ClassifierError(
            f"{who}: features must be a 2-D array (n_samples, n_features), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ClassifierError(f"{who}: features are empty (shape {array.shape})")
    bad = ~np.isfinite(array)
    if bad.any():
        rows, cols = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
        raise ClassifierError(
            f"{who}: features contain NaN or infinite values in {rows.size} row(s) "
            f"(rows {_first(rows)}) and {cols.size} column(s) (columns {_first(cols)}); "
            "impute or drop them before classifying"
        )
    return array


def check_labels(y: Any, n_samples: int | None = None, who: str = "classifier") -> np.ndarray:
    """Return binary labels as ``int64 (N,)`` or raise :class:`ClassifierError`.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0 (normal) and 1 (TB): ints, bools, 0/1 floats or a pandas
        ``Int64`` column without missing values.
    n_samples : int, optional
        Expected length (the number of feature rows).
    who : str
        Name used in the messages.

    Returns
    -------
    numpy.ndarray
        ``int64 (N,)`` with both classes present.
    """
    values = np.asarray(y, dtype=object).ravel() if y is not None else np.zeros(0, object)
    if values.size == 0:
        raise ClassifierError(f"{who}: no labels given")
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
    missing |= np.array([str(v) in ("<NA>", "nan", "NaT") for v in values])
    if missing.any():
        raise ClassifierError(
            f"{who}: labels are missing for {int(missing.sum())} sample(s) "
            f"(rows {_first(np.flatnonzero(missing))}); drop unlabelled images first"
        )
    try:
        numeric = values.astype(np.float64)
    except (TypeError, ValueError):
        raise ClassifierError(
            f"{who}: labels must be 0 (normal) or 1 (TB), got values like {values[:3].tolist()}"
        ) from None
    if not np.isin(numeric, (0.0, 1.0)).all():
        odd = np.unique(numeric[~np.isin(numeric, (0.0, 1.0))])
        raise ClassifierError(
            f"{who}: labels must be 0 (normal) or 1 (TB), got {odd[:_MAX_LISTED].tolist()}"
        )
    labels = numeric.astype(np.int64)
    if n_samples is not None and labels.size != n_samples:
        raise ClassifierError(
            f"{who}: {labels.size} labels for {n_samples} feature rows (lengths must match)"
        )
    present = np.unique(labels)
    if present.size < 2:
        raise ClassifierError(
            f"{who} needs both classes (0 = normal, 1 = TB) in its training labels, got "
            f"only class {int(present[0])} ({labels.size} samples)"
        )
    return labels


class FeatureCheck(TransformerMixin, BaseEstimator):
    """First pipeline step: validates features and labels, passes features through.

    Parameters
    ----------
    classifier : str
        Name of the classifier, for the messages.
    """

    def __init__(self, classifier: str = "classifier") -> None:
        self.classifier = classifier

    def _who(self) -> str:
        return f"classifier {self.classifier!r}"

    def fit(self, X: Any, y: Any = None) -> FeatureCheck:
        """Check ``X`` (finite, 2-D) and ``y`` (0/1, both classes); remember ``D``."""
        array = check_features(X, self._who())
        check_labels(y, array.shape[0], self._who())
        self.n_features_in_ = array.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Check ``X`` (finite, 2-D, as many features as at fit time); return it as float64."""
        if not hasattr(self, "n_features_in_"):
            raise ClassifierError(f"{self._who()} is not fitted yet: call fit(X, y) first")
        array = check_features(X, self._who())
        if array.shape[1] != self.n_features_in_:
            raise ClassifierError(
                f"{self._who()} was fitted on {self.n_features_in_} features but got "
                f"{array.shape[1]} features now; use the same feature extractor (and "
                "settings) for training and prediction"
            )
        return array


# ------------------------------------------------------------------------------- MLP


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Keras' global random state; restore NumPy's and Python's afterwards.

    ``keras.utils.set_random_seed`` seeds Python, NumPy and the backend; the
    batch shuffling of ``Model.fit`` draws from the backend's global seed, so
    this is what makes a fit reproducible. The NumPy and Python generators the
    caller may rely on are put back as they were.
    """
    import random

    import keras

    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is restored)
    python_state = random.getstate()
    keras.utils.set_random_seed(int(seed))
    try:
        yield
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)


class KerasMLPClassifier(ClassifierMixin, BaseEstimator):
    """A Keras multilayer perceptron with the scikit-learn classifier interface.

    Dense(``units``, ReLU, L2) -> Dropout(``dropout``) for each entry of
    ``hidden_units``, then Dense(1, sigmoid). Trained with Adam on binary
    cross-entropy; ``validation_fraction`` of the training samples (stratified)
    are held out for early stopping on the validation loss (the best epoch's
    weights are kept). Initialisers, dropout and shuffling are seeded from
    ``seed`` (:meth:`fit` calls ``keras.utils.set_random_seed(seed)`` and then
    restores NumPy's and Python's global generators), so a fit is reproducible
    on the same machine.

    Parameters
    ----------
    hidden_units : sequence of int, default (256, 128)
        Units of the hidden layers.
    dropout : float, default 0.5
        Dropout rate after each hidden layer.
    l2 : float, default 1e-4
        L2 penalty of the hidden kernels.
    learning_rate : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 32
    max_epochs : int, default 300
    patience : int, default 30
        Epochs without improvement of the validation loss before stopping.
    validation_fraction : float, default 0.15
        Fraction held out for early stopping; 0 trains ``max_epochs`` epochs.
    seed : int, default 0

    Attributes
    ----------
    classes_ : numpy.ndarray
        ``[0, 1]``.
    n_features_in_ : int
    model_ : keras.Model
    epochs_ : int
        Epochs trained.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.5,
        l2: float = 1e-4,
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 300,
        patience: int = 30,
        validation_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.l2 = l2
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed

    def _check_params(self) -> None:
        units = tuple(self.hidden_units)
        if not units or not all(isinstance(u, int | np.integer) and u > 0 for u in units):
            raise ClassifierError(f"hidden_units must be positive ints, got {self.hidden_units!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ClassifierError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= float(self.validation_fraction) < 0.5:
            raise ClassifierError(
                f"validation_fraction must be in [0, 0.5), got {self.validation_fraction!r}"
            )
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ClassifierError(f"{name} must be a positive int, got {value!r}")

    def _build(self, n_features: int) -> Any:
        import keras
        from keras import layers

        inputs = keras.Input(shape=(n_features,), name="features")
        x = inputs
        for i, units in enumerate(self.hidden_units):
            x = layers.Dense(
                int(units),
                activation="relu",
                kernel_initializer=keras.initializers.HeNormal(seed=self.seed + i),
                kernel_regularizer=keras.regularizers.L2(self.l2) if self.l2 else None,
                name=f"dense{i}",
            )(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, seed=self.seed + 1000 + i, name=f"drop{i}")(x)
        outputs = layers.Dense(
            1,
            activation="sigmoid",
            kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed + 999),
            dtype="float32",
            name="tb",
        )(x)
        model = keras.Model(inputs, outputs, name="tb_mlp")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss="binary_crossentropy",
            jit_compile=False,  # XLA: slower to start for a small MLP, and not reproducible
        )
        return model

    def _split(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation row indices (stratified); no validation if impossible."""
        n_val = int(round(self.validation_fraction * len(y)))
        counts = np.bincount(y, minlength=2)
        if n_val < 2 or counts.min() < 2 or len(y) - n_val < 2:
            return np.arange(len(y)), np.zeros(0, np.intp)
        from sklearn.model_selection import train_test_split

        return train_test_split(
            np.arange(len(y)), test_size=n_val, stratify=y, random_state=self.seed
        )

    def fit(self, X: Any, y: Any) -> KerasMLPClassifier:
        """Train the network.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Features (scale them first; :func:`make_classifier` does).
        y : array_like, shape (N,)
            Labels 0/1, both present.

        Returns
        -------
        KerasMLPClassifier
            ``self``.
        """
        import keras

        self._check_params()
        X = check_features(X, "classifier 'mlp'").astype(np.float32)
        y = check_labels(y, X.shape[0], "classifier 'mlp'")
        train, val = self._split(X, y)
        callbacks, validation = [], None
        if val.size:
            validation = (X[val], y[val].astype(np.float32))
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=int(self.patience), restore_best_weights=True
                )
            )
        with _seeded(self.seed):
            self.model_ = self._build(X.shape[1])
            history = self.model_.fit(
                X[train],
                y[train].astype(np.float32),
                batch_size=int(self.batch_size),
                validation_data=validation,
                epochs=int(self.max_epochs),
                shuffle=True,
                callbacks=callbacks,
                verbose=0,
            )
        self.epochs_ = len(history.history["loss"])
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``float64 (N, 2)``: ``[:, 0]`` normal, ``[:, 1]`` TB."""
        if not hasattr(self, "model_"):
            raise ClassifierError("classifier 'mlp' is not fitted yet: call fit(X, y) first")
        X = check_features(X, "classifier 'mlp'").astype(np.float32)
        if X.shape[1] != self.n_features_in_:
            raise ClassifierError(
                f"classifier 'mlp' was fitted on {self.n_features_in_} features but got "
                f"{X.shape[1]} features now"
            )
        import keras

        # Calling the model directly (not Model.predict) avoids re-tracing a predict
        # function for every new number of rows.
        chunks = [
            keras.ops.convert_to_numpy(self.model_(X[i : i + 1024], training=False))
            for i in range(0, len(X), 1024)
        ]
        p = np.concatenate(chunks, axis=0).astype(np.float64)[:, 0]
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels ``int64 (N,)`` (TB when its probability is at least 0.5)."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


# ----------------------------------------------------------------------------- factory


def _logreg(seed: int, C: float | str = "auto", **params: Any) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    params.setdefault("max_iter", 5000)
    if isinstance(C, str):
        if C != "auto":
            raise ClassifierError(f"logreg: C must be a positive number or 'auto', got {C!r}")
        return GridSearchCV(
            LogisticRegression(**params),
            {"C": list(_LOGREG_CS)},
            cv=StratifiedKFold(5, shuffle=True, random_state=seed),
            scoring="roc_auc",
        )
    return LogisticRegression(C=C, **params)


def _svm(seed: int, **params: Any) -> BaseEstimator:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    params.setdefault("C", 1.0)
    params.setdefault("gamma", "scale")
    return CalibratedClassifierCV(
        SVC(kernel=params.pop("kernel", "rbf"), random_state=seed, **params),
        method="sigmoid",
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        ensemble=False,
    )


def _gboost(seed: int, **params: Any) -> BaseEstimator:
    from sklearn.ensemble import HistGradientBoostingClassifier

    defaults = {
        "learning_rate": 0.05,
        "max_iter": 300,
        "max_leaf_nodes": 15,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "validation_fraction": 0.15,
        "n_iter_no_change": 20,
    }
    return HistGradientBoostingClassifier(random_state=seed, **{**defaults, **params})


def _mlp(seed: int, **params: Any) -> BaseEstimator:
    return KerasMLPClassifier(seed=seed, **params)


def _ensemble(seed: int, **params: Any) -> BaseEstimator:
    from sklearn.ensemble import VotingClassifier

    if params:
        raise TypeError(f"the ensemble takes no parameters, got {sorted(params)}")
    members = [("logreg", _logreg(seed)), ("gboost", _gboost(seed))]
    return VotingClassifier(members, voting="soft")


_FACTORIES = {
    "mlp": _mlp,
    "logreg": _logreg,
    "svm": _svm,
    "gboost": _gboost,
    "ensemble": _ensemble,
}


def make_classifier(name: str, *, seed: int = 0, **params: Any) -> Pipeline:
    """Build a TB classifier: feature checks, a standard scaler and the model.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIERS`: ``"mlp"``, ``"logreg"``, ``"svm"``, ``"gboost"``,
        ``"ensemble"``.
    seed : int, default 0
        Seed of every random choice (initialisation, inner splits).
    **params
        Parameters of the model: :class:`KerasMLPClassifier` for ``"mlp"``;
        :class:`~sklearn.linear_model.LogisticRegression` for ``"logreg"``
        (``C="auto"`` by default: chosen by inner cross-validation);
        :class:`~sklearn.svm.SVC` for ``"svm"`` (default ``C=1``,
        ``gamma="scale"``, RBF kernel);
        :class:`~sklearn.ensemble.HistGradientBoostingClassifier` for
        ``"gboost"``; none for ``"ensemble"`` (both with their defaults).

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted, steps ``check``, ``scale``, ``model``; ``fit(X, y)``,
        ``predict_proba(X)[:, 1]`` (TB probability), ``predict(X)``.

    Raises
    ------
    ClassifierError
        For an unknown name or bad parameters.
    """
    key = str(name).lower()
    if key not in _FACTORIES:
        raise ClassifierError(f"unknown classifier {name!r}; choose one of {list(CLASSIFIERS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ClassifierError(f"seed must be an int, got {seed!r}")
    try:
        model = _FACTORIES[key](int(seed), **params)
    except TypeError as error:
        raise ClassifierError(f"classifier {key!r}: bad parameter(s) {params}: {error}") from None
    return Pipeline([("check", FeatureCheck(key)), ("scale", StandardScaler()), ("model", model)])
