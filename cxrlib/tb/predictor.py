"""A finished TB pipeline as one object: :class:`TBPredictor`, read by :func:`load_predictor`.

The predictor holds the run's segmentation model, its feature settings, its fitted
(calibrated) classifier and the thresholds of its named operating points:
:meth:`TBPredictor.prepare` turns image files into images and predicted lung masks,
:meth:`TBPredictor.score` turns those into TB probabilities, and
:meth:`TBPredictor.operating_point` says at which threshold a probability is called TB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from cxrlib.tb.config import TBConfig
from cxrlib.tb.feature_sets import extract_combined
from cxrlib.tb.inputs import TBInputs, as_seg_model, prepare_inputs
from cxrlib.tb.operating import parse_operating_point
from cxrlib.tb.rundir import TBRunError, check_tb_run, read_stored_config

__all__ = ["TBPredictor", "load_predictor"]


class TBPredictor:
    """A finished TB pipeline: segmentation model, feature extractors and classifier.

    Parameters
    ----------
    classifier : sklearn Pipeline
        Fitted; ``predict_proba(X)[:, 1]`` is the TB probability.
    config : TBConfig
    seg_model : keras.Model or path
    n_features : int
        Feature dimension the classifier was fitted on.
    feature_names : list of str, optional
    seg_equalize : {None, "hist", "clahe"}
        Equalization of the segmentation model's inputs (see :func:`prepare_inputs`).
    operating_points : dict, optional
        Rule name (``"who"``, ``"youden"``) -> threshold (float), chosen on the inner
        out-of-fold probabilities of all training radiographs. Empty for runs made
        before calibration (format < 3).
    calibration : str, default "none"
        How :attr:`classifier`'s probability is calibrated.
    runtime : {"keras", "auto", "onnx", "openvino"}, default "keras"
        Inference runtime of the lung masks (:func:`cxrlib.seg.runtime.load_predictor`);
        anything but ``"keras"`` needs ``seg_model`` as a ``.keras`` path. Features that
        read the network itself (``"encoder"``) always use Keras, loaded when first needed.
    threads : int, optional
        Intra-op threads of that runtime (not used by ``"keras"``); default all cores.

    The segmentation model is loaded when first needed (:attr:`mask_model`,
    :attr:`seg_model`); the runtime's name is checked at once.
    """

    def __init__(
        self,
        classifier: Any,
        config: TBConfig,
        seg_model: Any,
        n_features: int,
        feature_names: Sequence[str] | None = None,
        seg_equalize: str | None = None,
        operating_points: dict[str, float] | None = None,
        calibration: str = "none",
        runtime: str = "keras",
        threads: int | None = None,
    ) -> None:
        self.classifier = classifier
        self.config = config
        self.seg_source = seg_model
        self._keras_model: Any = None
        self._mask_model: Any = None
        self._threads = threads
        if runtime != "keras":
            if not isinstance(seg_model, str | os.PathLike):
                raise ValueError(
                    f"runtime {runtime!r} needs the segmentation model as a .keras path, "
                    f"got {type(seg_model).__name__}"
                )
            from cxrlib.seg.runtime import resolve_runtime

            runtime = resolve_runtime(runtime, seg_model)
        #: The concrete runtime of the lung masks (``"auto"`` resolved).
        self.runtime = runtime
        self.n_features = int(n_features)
        self.feature_names = list(feature_names or [])
        self.seg_equalize = seg_equalize
        self.operating_points = {k: float(v) for k, v in (operating_points or {}).items()}
        self.calibration = calibration

    def operating_point(self, point: str | float) -> tuple[str, float]:
        """The name and threshold of an operating point.

        Parameters
        ----------
        point : str or float
            ``"who"``, ``"youden"`` (the run's saved thresholds) or a threshold in
            (0, 1), e.g. ``0.5`` or ``"0.5"``.

        Returns
        -------
        (name, threshold) : (str, float)

        Raises
        ------
        ValueError
            For anything else.
        TBRunError
            For a rule the run has no threshold for (a run made before calibration).
        """
        name, value = parse_operating_point(point)
        if value is not None:
            return name, value
        if name not in self.operating_points:
            raise TBRunError(
                f"this TB run has no saved threshold for the operating point {name!r}: it was "
                "made by an older cxrlib, before calibrated probabilities and nested "
                "thresholds; retrain it with cxrlib train-tb (--overwrite), or pass a fixed "
                "threshold such as --operating-point 0.5"
            )
        return name, self.operating_points[name]

    @property
    def seg_model(self) -> Any:
        """The segmentation network as a Keras model (loaded on first use)."""
        if self._keras_model is None:
            self._keras_model = as_seg_model(self.seg_source)
        return self._keras_model

    @property
    def mask_model(self) -> Any:
        """What predicts the lung masks: :attr:`seg_model`, or the runtime's predictor.

        Loaded on first use, so that a Dask client never loads what only its workers run.
        """
        if self._mask_model is None:
            if self.runtime == "keras":
                self._mask_model = self.seg_model
            else:
                from cxrlib.seg.runtime import load_predictor as load_mask_predictor

                self._mask_model = load_mask_predictor(
                    self.seg_source, self.runtime, threads=self._threads
                )
        return self._mask_model

    @property
    def image_size(self) -> int:
        """Side of the images and masks the features are computed at."""
        return self.config.image_size

    def prepare(self, paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> TBInputs:
        """:func:`prepare_inputs` with this pipeline's model and sizes."""
        return prepare_inputs(
            paths,
            self.mask_model,
            self.config.image_size,
            mask_threshold=self.config.mask_threshold,
            seg_equalize=self.seg_equalize,
            **kwargs,
        )

    def features(
        self, images: np.ndarray, masks: np.ndarray, *, n_jobs: int | None = None
    ) -> np.ndarray:
        """Features ``float32 (N, D)`` of images and masks at :attr:`image_size`.

        Raises
        ------
        TBRunError
            If the dimension differs from the one the classifier was fitted on.
        """
        X, _ = extract_combined(
            self.config.features,
            images,
            masks,
            options=self.config.feature_options,
            seg_model=self.seg_model if "encoder" in self.config.features else None,
            n_jobs=n_jobs,
        )
        fitted = getattr(self.classifier, "n_features_in_", self.n_features)
        for expected in {self.n_features, int(fitted)}:
            if X.shape[1] != expected:
                raise TBRunError(
                    f"the TB model expects {expected} features ({'+'.join(self.config.features)}"
                    f" at {self.config.image_size} px) but got {X.shape[1]}: the feature "
                    "extractor changed since the run was trained (another cxrlib version or "
                    "edited settings); retrain with cxrlib train-tb"
                )
        return X

    def score(self, images: np.ndarray, masks: np.ndarray, *, n_jobs: int | None = None) -> Any:
        """TB probabilities ``float64 (N,)`` of images with given lung masks."""
        X = self.features(images, masks, n_jobs=n_jobs)
        return np.asarray(self.classifier.predict_proba(X))[:, 1].astype(np.float64)


def _load_classifier(path: Path) -> Any:
    try:
        return joblib.load(path)
    except Exception as error:  # unpickling raises many types
        raise TBRunError(f"{path}: cannot load the TB classifier ({error})") from error


def load_predictor(
    run_dir: str | os.PathLike[str], runtime: str = "keras", *, threads: int | None = None
) -> TBPredictor:
    """The :class:`TBPredictor` of a finished TB run folder.

    Parameters
    ----------
    run_dir : path
        A folder made by :func:`cxrlib.tb.train.train_tb`.
    runtime : {"keras", "auto", "onnx", "openvino"}, default "keras"
        Inference runtime of its segmentation model (the lung masks).
    threads : int, optional
        Intra-op threads of that runtime (not ``"keras"``).

    Raises
    ------
    TBRunError
        If ``run_dir`` is not a finished TB run (the message says what it is).
    """
    path = check_tb_run(run_dir)
    stored, config = read_stored_config(path)
    seg_path = path / stored["seg_model"]
    if not seg_path.is_file():
        raise TBRunError(f"the run's segmentation model {seg_path} is missing")
    classifier = _load_classifier(path / "tb_model.joblib")
    return TBPredictor(
        classifier,
        config,
        seg_path,
        stored["n_features"],
        stored.get("feature_names"),
        seg_equalize=stored.get("seg_equalize"),
        operating_points={
            name: point["threshold"] for name, point in stored.get("operating_points", {}).items()
        },
        calibration=config.calibration,
        runtime=runtime,
        threads=threads,
    )
