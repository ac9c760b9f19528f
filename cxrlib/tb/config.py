"""The configuration of a TB run: :class:`TBConfig` (everything that enters the run's key).

The defaults are the best pipeline measured offline on the real development set (640
radiographs, 5-fold x 2, ``benchmarks/bench_tb_pipelines.py``): hand-crafted features with
left/right asymmetry at 512 x 512 and the mean of an L2 logistic regression and gradient
boosting (AUC 0.939 uncalibrated, against 0.914 for the logistic regression on the features
without asymmetry, the earlier default), on lung masks predicted by a ResUNet trained with
the CPU recipe.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrlib.runs import json_default
from cxrlib.seg.train_config import cpu_recipe
from cxrlib.tb.calibration import check_calibration
from cxrlib.tb.classifiers import CLASSIFIERS
from cxrlib.tb.features import available_extractors

__all__ = ["TBConfig"]


def _as_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    try:
        names = tuple(str(v).strip().lower() for v in value)
    except TypeError:
        raise ValueError(f"TBConfig.{what} must be a list of names, got {value!r}") from None
    names = tuple(n for n in names if n)
    if not names:
        raise ValueError(f"TBConfig.{what} must name at least one feature extractor")
    if len(set(names)) != len(names):
        raise ValueError(f"TBConfig.{what} repeats a name: {list(names)}")
    return names


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"TBConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TBConfig:
    """Everything that changes a TB run (part of the run's key).

    Attributes
    ----------
    features : tuple of str
        Feature extractors (:func:`cxrlib.tb.features.available_extractors`), their
        columns concatenated in this order. Default ``("handcrafted",)``.
    classifier : str
        :func:`cxrlib.tb.classifiers.make_classifier` name: ``"ensemble"`` (default:
        logistic regression and gradient boosting averaged), ``"logreg"``, ``"svm"``,
        ``"gboost"`` or ``"mlp"``.
    image_size : int
        Side the radiographs (and the predicted masks) are resized to for the
        features; hand-crafted features depend on it (default 512).
    feature_options : dict
        Options per extractor, e.g. ``{"handcrafted": {"groups": ["intensity"]}}``.
    seg_architecture : {"resunet", "unet"}
        Architecture of the segmentation model trained when none is given.
    seg_image_size : int
        Its input side (default 128, the CPU recipe's).
    seg_epochs : int
        Its maximum epochs (default 15: validation Dice about 0.95 on the real
        development set, half the time of the full CPU recipe).
    seg_overrides : dict
        Other :class:`cxrlib.seg.train_config.TrainConfig` fields for that training.
    seed : int
        Seeds the folds, the classifier and the segmentation training.
    n_splits, n_repeats : int
        Cross-validation folds and repeats (default 5 x 2).
    threshold : float
        TB when the probability is at least this (default 0.5) in the summary,
        report and confusion matrix; the named operating points (``"who"``,
        ``"youden"``) choose their own thresholds inside the folds.
    mask_threshold : float
        Lung-probability threshold of the predicted masks (default 0.5).
    calibration : {"sigmoid", "isotonic", "none"}
        How the classifier's probability is calibrated on inner folds of every
        training set (:class:`cxrlib.tb.calibration.InnerCalibrated`). Default
        ``"sigmoid"`` (Platt). Measured on the real development set (640 radiographs,
        5-fold x 2, the same folds): the logistic regression is nearly calibrated
        already (pooled Brier 0.115 uncalibrated, 0.115 sigmoid, 0.116 isotonic;
        Montgomery 0.164 / 0.163 / 0.166; Shenzhen 0.104 / 0.105 / 0.106, all within
        each other's intervals), the gradient boosting gains a little from the sigmoid
        (0.118 -> 0.117; Montgomery 0.162 -> 0.158), and isotonic regression, a step
        function fitted on a few hundred radiographs, ties probabilities and cost AUC
        (0.915 -> 0.909). The inner folds are needed anyway for the thresholds.
    inner_splits : int
        Folds of that inner cross-validation (default 5); its out-of-fold
        probabilities also choose the thresholds of the named operating points.
    """

    features: tuple[str, ...] = ("handcrafted",)
    classifier: str = "ensemble"
    image_size: int = 512
    feature_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seg_architecture: str = "resunet"
    seg_image_size: int = 128
    seg_epochs: int = 15
    seg_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_splits: int = 5
    n_repeats: int = 2
    threshold: float = 0.5
    mask_threshold: float = 0.5
    calibration: str = "sigmoid"
    inner_splits: int = 5

    def __post_init__(self) -> None:
        features = _as_names(self.features, "features")
        unknown = [n for n in features if n not in available_extractors()]
        if unknown:
            raise ValueError(
                f"TBConfig.features: unknown extractor(s) {unknown}; choose from "
                f"{available_extractors()}"
            )
        object.__setattr__(self, "features", features)
        classifier = str(self.classifier).strip().lower()
        if classifier not in CLASSIFIERS:
            raise ValueError(
                f"TBConfig.classifier must be one of {list(CLASSIFIERS)}, got {self.classifier!r}"
            )
        object.__setattr__(self, "classifier", classifier)
        _check_int("image_size", self.image_size, 32)
        _check_int("seg_image_size", self.seg_image_size, 16)
        _check_int("seg_epochs", self.seg_epochs, 1)
        _check_int("seed", self.seed, 0)
        _check_int("n_splits", self.n_splits, 2)
        _check_int("n_repeats", self.n_repeats, 1)
        _check_int("inner_splits", self.inner_splits, 2)
        try:
            object.__setattr__(self, "calibration", check_calibration(self.calibration))
        except ValueError as error:
            raise ValueError(f"TBConfig.{error}") from None
        for name in ("threshold", "mask_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"TBConfig.{name} must be in (0, 1), got {value!r}")
        if not isinstance(self.feature_options, Mapping):
            raise ValueError("TBConfig.feature_options must be a dict of extractor -> options")
        extra = sorted(set(self.feature_options) - set(features))
        if extra:
            raise ValueError(
                f"TBConfig.feature_options has options for {extra}, which are not in "
                f"features {list(features)}"
            )
        if "model" in self.feature_options.get("encoder", {}):
            raise ValueError(
                "TBConfig.feature_options['encoder'] must not set 'model': the encoder is "
                "the run's segmentation model"
            )
        if not isinstance(self.seg_overrides, Mapping):
            raise ValueError("TBConfig.seg_overrides must be a dict of TrainConfig fields")
        object.__setattr__(self, "feature_options", _plain_dict(self.feature_options))
        object.__setattr__(self, "seg_overrides", _plain_dict(self.seg_overrides))
        self.seg_config()  # validates the segmentation settings now, not after hours

    def seg_config(self) -> Any:
        """The :class:`~cxrlib.seg.train_config.TrainConfig` of this run's segmentation model.

        :func:`cxrlib.seg.train_config.cpu_recipe` of ``seg_architecture`` with ``img_size``,
        ``epochs`` and ``seed`` from this config and ``seg_overrides`` on top.
        """
        values = {"img_size": self.seg_image_size, "epochs": self.seg_epochs, "seed": self.seed}
        values.update(self.seg_overrides)
        return cpu_recipe(self.seg_architecture, **values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=json_default))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TBConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TBConfig field(s): {unknown}; known: {sorted(names)}")
        data = dict(values)
        if "features" in data:
            data["features"] = tuple(data["features"])
        return cls(**data)


def _plain_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip of a mapping (tuples become lists), as stored in tb_config.json."""
    return json.loads(json.dumps(dict(values), default=json_default))
