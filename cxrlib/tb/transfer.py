"""Transfer between sites: train on the radiographs of one site, test on another.

:func:`cross_site` fits the classifier on one site only, calibrated on that site's inner
folds (:class:`cxrlib.tb.calibration.InnerCalibrated`), and chooses the thresholds of the
named operating points (:mod:`cxrlib.tb.operating`) on that site's own inner out-of-fold
probabilities. The thresholds are then applied, unchanged, to the other site, as a model
bought from one hospital would be used in another: nothing of the test site is seen
before it is scored.

When the sites differ in exposure, every feature of the other site may be shifted, and the
probabilities with it: a threshold that is sound at the training site then calls all (or
none) of the other site's radiographs TB, although the ranking (AUC) survives. With
``site_standardize=True`` each site's features are standardised with that site's own mean
and standard deviation (:func:`standardize_per_site`) before training and testing: the
new site contributes its *unlabelled* radiographs (a batch it has anyway), never a label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from cxrlib.tb.classifiers import ClassifierError, check_features, check_labels
from cxrlib.tb.crossval import site_values
from cxrlib.tb.fitting import fit_classifier, limit_blas_threads
from cxrlib.tb.metrics import (
    WHO_MIN_SENSITIVITY,
    WHO_MIN_SPECIFICITY,
    auc_with_ci,
    binary_metrics,
    require_both_classes,
)
from cxrlib.tb.operating import choose_threshold, parse_operating_point, rates_table

__all__ = ["TRANSFER_COLUMNS", "CrossSiteResult", "cross_site", "standardize_per_site"]

#: Columns of :meth:`CrossSiteResult.operating_table` (and ``TBRunResult.cross_site``).
TRANSFER_COLUMNS = (
    "train_site",
    "test_site",
    "operating_point",
    "site_standardized",
    "threshold",
    "n_train",
    "n_test",
    "auc",
    "auc_low",
    "auc_high",
    "train_sensitivity",
    "train_specificity",
    "train_degenerate",
    "accuracy",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
    "meets_target",
    "ci_excludes_target",
)
_RATE_COLUMNS = TRANSFER_COLUMNS[TRANSFER_COLUMNS.index("sensitivity") :]


@dataclass
class CrossSiteResult:
    """A classifier trained on one site and tested on another.

    Attributes
    ----------
    train_site, test_site : str
    n_train, n_test : int
    y : numpy.ndarray
        ``int64 (n_test,)`` labels of the test site.
    proba : numpy.ndarray
        ``float64 (n_test,)`` TB probabilities on the test site (calibrated on the
        training site when ``calibration`` is not ``"none"``).
    auc : float
    auc_ci : (float, float)
    metrics : dict
        :func:`binary_metrics` on the test site at the fixed ``threshold``.
    thresholds : dict
        Operating point name -> :func:`cxrlib.tb.operating.choose_threshold` output on
        the training site's inner out-of-fold probabilities (``threshold``,
        ``sensitivity``, ``specificity``, ``meets_target``, ``degenerate``; the fixed
        threshold is scored the same way).
    calibration : str
    site_standardized : bool
        Whether the features were standardised per site (:func:`standardize_per_site`).
    """

    train_site: str
    test_site: str
    n_train: int
    n_test: int
    y: np.ndarray
    proba: np.ndarray
    auc: float
    auc_ci: tuple[float, float]
    metrics: dict[str, float]
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: str = "none"
    site_standardized: bool = False

    def summary(self) -> dict[str, Any]:
        """One flat row: sites, sizes, AUC with CI, accuracy, sensitivity, specificity."""
        return {
            "train_site": self.train_site,
            "test_site": self.test_site,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "auc": self.auc,
            "auc_low": self.auc_ci[0],
            "auc_high": self.auc_ci[1],
            **{k: self.metrics[k] for k in ("accuracy", "sensitivity", "specificity")},
        }

    def operating_table(self, ci: float = 0.95) -> pd.DataFrame:
        """The test site's rates at each operating point, thresholds from the training site.

        Returns
        -------
        pandas.DataFrame
            One row per operating point (:data:`TRANSFER_COLUMNS`): the threshold, the
            sensitivity and specificity it had on the training site's own out-of-fold
            probabilities (``train_degenerate``: all or none called TB there), and on
            the test site the AUC with its interval, the accuracy, sensitivity and
            specificity with Wilson intervals and the WHO verdict.
        """
        rows = []
        for name, chosen in self.thresholds.items():
            calls = self.proba >= chosen["threshold"]
            rates = rates_table(self.y, calls, ci=ci).loc["all"]
            rows.append(
                {
                    "train_site": self.train_site,
                    "test_site": self.test_site,
                    "operating_point": name,
                    "site_standardized": self.site_standardized,
                    "threshold": chosen["threshold"],
                    "n_train": self.n_train,
                    "n_test": self.n_test,
                    "auc": self.auc,
                    "auc_low": self.auc_ci[0],
                    "auc_high": self.auc_ci[1],
                    "train_sensitivity": chosen["sensitivity"],
                    "train_specificity": chosen["specificity"],
                    "train_degenerate": chosen["degenerate"],
                    "accuracy": float(np.mean(calls == self.y.astype(bool))),
                    **{k: rates[k] for k in _RATE_COLUMNS},
                }
            )
        return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def standardize_per_site(X: Any, sites: Any) -> np.ndarray:
    """Standardise each feature within each site (no labels used).

    Parameters
    ----------
    X : array_like, shape (N, D)
        Features.
    sites : array_like, shape (N,)
        Site of each row.

    Returns
    -------
    numpy.ndarray
        ``float64 (N, D)``: within every site, each column minus that site's mean,
        divided by that site's standard deviation (columns constant within a site
        become 0).
    """
    X = check_features(X, "standardize_per_site")
    sites = site_values(sites, X.shape[0])
    out = np.empty_like(X)
    for site in set(sites):
        rows = sites == site
        mean, std = X[rows].mean(axis=0), X[rows].std(axis=0)
        out[rows] = (X[rows] - mean) / np.where(std > 0, std, 1.0)
    return out


def _fixed(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """A fixed threshold scored like :func:`choose_threshold` scores a chosen one."""
    m = binary_metrics(y, p, threshold)
    calls = p >= threshold
    return {
        "threshold": float(threshold),
        "sensitivity": m["sensitivity"],
        "specificity": m["specificity"],
        "meets_target": bool(
            m["sensitivity"] >= WHO_MIN_SENSITIVITY - 1e-12
            and m["specificity"] >= WHO_MIN_SPECIFICITY - 1e-12
        ),
        "degenerate": bool(calls.all() or not calls.any()),
    }


def cross_site(
    X: Any,
    y: Any,
    sites: Any,
    classifier: str | BaseEstimator,
    train_site: str,
    test_site: str,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    calibration: str = "none",
    inner_splits: int = 5,
    points: Sequence[str | float] = ("who", "youden", 0.5),
    site_standardize: bool = False,
    n_boot: int = 2000,
    ci: float = 0.95,
    blas_threads: int | None = 1,
) -> CrossSiteResult:
    """Train on the images of one site, test on those of another.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,)
        Labels 0/1.
    sites : array_like, shape (N,)
        Site of each image.
    classifier : str or sklearn estimator
        As in :func:`cxrlib.tb.crossval.cross_validate`.
    train_site, test_site : str
        Two different values of ``sites``.
    seed, params
        As in :func:`cxrlib.tb.crossval.cross_validate`.
    threshold : float, default 0.5
        The fixed threshold of :attr:`CrossSiteResult.metrics`.
    calibration : {"none", "sigmoid", "isotonic"}, default "none"
        Calibration on the training site's inner folds.
    inner_splits : int, default 5
        Folds of the inner cross-validation of the training site, whose out-of-fold
        probabilities calibrate the classifier and choose the thresholds.
    points : sequence, default ("who", "youden", 0.5)
        Operating points (:func:`cxrlib.tb.operating.parse_operating_point`).
    site_standardize : bool, default False
        Standardise the features of the two sites each with its own statistics first
        (:func:`standardize_per_site`; the test site's labels are never used).
    n_boot, ci
        See :func:`cxrlib.tb.metrics.auc_with_ci`.
    blas_threads : int or None, default 1
        See :func:`cxrlib.tb.crossval.cross_validate`.

    Returns
    -------
    CrossSiteResult

    Raises
    ------
    ValueError
        For an unknown or identical site, or a site without both classes.
    """
    X = check_features(X, "cross_site")
    y = check_labels(y, X.shape[0], "cross_site")
    sites = site_values(sites, X.shape[0])
    known = sorted(set(sites))
    for name, site in (("train_site", train_site), ("test_site", test_site)):
        if str(site) not in known:
            raise ValueError(f"{name} {site!r} is not one of the sites {known}")
    if str(train_site) == str(test_site):
        raise ValueError(f"train_site and test_site are both {train_site!r}; pick two sites")
    if inner_splits is None:
        raise ValueError("cross_site needs inner_splits: its thresholds are chosen on them")
    train, test = sites == str(train_site), sites == str(test_site)
    require_both_classes(y[test], f"cross_site: test site {test_site!r}")
    if site_standardize:
        X = standardize_per_site(X, sites)
    with limit_blas_threads(blas_threads):
        try:
            model = fit_classifier(
                classifier,
                X[train],
                y[train],
                seed=seed,
                params=params,
                calibration=calibration,
                inner_splits=inner_splits,
            )
        except ClassifierError as error:
            raise ClassifierError(f"cross_site: training site {train_site!r}: {error}") from None
        except ValueError as error:
            raise ValueError(f"cross_site: training site {train_site!r}: {error}") from None
        proba = np.asarray(model.predict_proba(X[test]))[:, 1].astype(np.float64)
    own = model.oof_proba_  # the training site's inner out-of-fold probabilities
    chosen = {}
    for point in points:
        name, value = parse_operating_point(point)
        chosen[name] = (
            choose_threshold(y[train], own, name) if value is None else _fixed(y[train], own, value)
        )
    auc, interval = auc_with_ci(y[test], proba, n_boot=n_boot, seed=seed, ci=ci)
    return CrossSiteResult(
        train_site=str(train_site),
        test_site=str(test_site),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        y=y[test],
        proba=proba,
        auc=auc,
        auc_ci=interval,
        metrics=binary_metrics(y[test], proba, threshold),
        thresholds=chosen,
        calibration=str(calibration),
        site_standardized=bool(site_standardize),
    )
