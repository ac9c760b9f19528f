"""Feature matrices of a TB run: several extractors side by side, unavailable ones recorded.

:func:`extract_combined` concatenates the columns of the run's extractors (what
:class:`~cxrlib.tb.predictor.TBPredictor` and :func:`~cxrlib.tb.train.train_tb` use);
:func:`extract_feature_sets` computes each extractor on its own for a comparison and records
an extractor that cannot run here (:class:`FeatureUnavailable`) instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrlib.tb.features import extract_features
from cxrlib.tb.features.cnn import WeightsUnavailableError
from cxrlib.tb.inputs import as_seg_model

__all__ = [
    "FeatureUnavailable",
    "extract_combined",
    "extract_feature_sets",
    "feature_unavailable",
]


@dataclass(frozen=True)
class FeatureUnavailable:
    """An extractor that could not run here (e.g. ImageNet weights not on disk).

    Attributes
    ----------
    name : str
    status : str
        Short reason for a table, e.g. ``"weights not available: put FILE in DIR"``.
    message : str
        The full error message.
    """

    name: str
    status: str
    message: str


def _extractor_options(
    name: str, options: Mapping[str, Any] | None, seg_model: Any, n_jobs: int | None
) -> dict[str, Any]:
    values = dict(options or {})
    if name == "encoder":
        if seg_model is None:
            raise ValueError("the 'encoder' features need the segmentation model (seg_model=)")
        values["model"] = as_seg_model(seg_model)
    if name == "handcrafted" and n_jobs is not None:
        values.setdefault("n_jobs", n_jobs)
    return values


def extract_combined(
    names: Sequence[str],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seg_model: Any = None,
    n_jobs: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Concatenated features of several extractors: ``float32 (N, D)`` and ``D`` names.

    Parameters
    ----------
    names : sequence of str
        Extractor names, their columns concatenated in this order.
    images : numpy.ndarray
        ``float32 (N, H, W)`` radiographs in ``[0, 1]``.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks.
    options : mapping, optional
        Options per extractor name.
    seg_model : keras.Model or path, optional
        Needed by ``"encoder"``.
    n_jobs : int, optional
        Worker processes of the hand-crafted extractor.
    progress : bool, default False

    Raises
    ------
    cxrlib.tb.features.cnn.WeightsUnavailableError
        An ImageNet extractor whose weights are not on disk.
    """
    blocks, all_names = [], []
    for name in names:
        opts = _extractor_options(name, (options or {}).get(name), seg_model, n_jobs)
        X, feature_names = extract_features(name, images, masks, progress=progress, **opts)
        blocks.append(np.asarray(X, np.float32))
        all_names += list(feature_names)
    return np.concatenate(blocks, axis=1), all_names


def feature_unavailable(name: str, error: Exception) -> FeatureUnavailable:
    """The :class:`FeatureUnavailable` record of an extractor that raised ``error``."""
    if isinstance(error, WeightsUnavailableError):
        status = f"weights not available: put {error.weights_file} in {error.searched[0]}"
    else:
        status = f"not available: {str(error).splitlines()[0] if str(error) else error}"
    return FeatureUnavailable(name, status, str(error))


def extract_feature_sets(
    names: Sequence[str],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    seg_model: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    known: Mapping[str, tuple[np.ndarray, list[str]]] | None = None,
    n_jobs: int | None = None,
    progress: bool = False,
) -> dict[str, tuple[np.ndarray, list[str]] | FeatureUnavailable]:
    """Features of each extractor, for a comparison; unavailable ones are recorded, not raised.

    Parameters
    ----------
    names : sequence of str
        Extractor names (see :func:`cxrlib.tb.features.available_extractors`).
    images : numpy.ndarray
        ``float32 (N, H, W)`` radiographs in ``[0, 1]``.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks.
    seg_model : keras.Model or path, optional
        Needed by ``"encoder"``.
    options : mapping, optional
        Options per extractor name.
    known : mapping, optional
        Feature sets already computed (``name -> (X, names)``), used as they are.
    n_jobs : int, optional
        Worker processes of the hand-crafted extractor.
    progress : bool, default False

    Returns
    -------
    dict
        ``name -> (X float32 (N, D), feature names)`` or :class:`FeatureUnavailable`
        (e.g. ImageNet weights absent: ``status`` says which file to put where).
    """
    out: dict[str, tuple[np.ndarray, list[str]] | FeatureUnavailable] = {}
    for name in names:
        if known and name in known:
            X, feature_names = known[name]
            if len(X) != len(images):
                raise ValueError(
                    f"known features {name!r} have {len(X)} rows for {len(images)} images"
                )
            out[name] = (np.asarray(X, np.float32), list(feature_names))
            continue
        try:
            out[name] = extract_combined(
                [name],
                images,
                masks,
                options=options,
                seg_model=seg_model,
                n_jobs=n_jobs,
                progress=progress,
            )
        except WeightsUnavailableError as error:
            out[name] = feature_unavailable(name, error)
    return out
