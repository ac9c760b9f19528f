"""Feature extractors for TB classification, behind one interface.

>>> X, names = extract_features("handcrafted", images, masks)   # doctest: +SKIP

``images`` are ``float32 (N, H, W, 1)`` radiographs in ``[0, 1]`` and ``masks``
``bool (N, H, W, 1)`` lung masks, as returned by
:func:`cxrlib.preprocess.load_arrays`; ``X`` is ``float32 (N, D)``.

Registered extractors (:func:`available_extractors`):

``handcrafted``
    Lung intensity, texture (GLCM, LBP), gradient, Hessian and shape features
    (:mod:`cxrlib.tb.features.handcrafted`); needs masks; no network weights.
``vgg16``, ``resnet50``, ``inceptionresnetv2`` and their ``*_lung`` variants
    ImageNet CNN features, globally average-pooled or pooled inside the lungs
    (:mod:`cxrlib.tb.features.cnn`); need the Keras ImageNet weight files on disk
    (never downloaded here: :class:`~cxrlib.tb.features.cnn.WeightsUnavailableError`
    says which file to put where).
``encoder``
    The bottleneck of a trained segmentation U-Net/ResUNet
    (:mod:`cxrlib.tb.features.encoder`); pass ``model=`` (a model or a saved file).

New extractors are added with :func:`register_extractor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cxrlib.tb.features import cnn, encoder, handcrafted
from cxrlib.tb.features.base import (
    FeatureError,
    FeatureExtractor,
    FeatureSet,
    check_batch_size,
    check_images,
    check_masks,
)

__all__ = [
    "FeatureError",
    "FeatureExtractor",
    "FeatureSet",
    "available_extractors",
    "check_images",
    "check_masks",
    "extract_features",
    "get_extractor",
    "register_extractor",
]

_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> None:
    """Register an extractor factory under ``name`` (replacing an existing one).

    Parameters
    ----------
    name : str
        Registry name (stored in lower case).
    factory : callable
        Called with the keyword options of :func:`get_extractor`; returns a
        :class:`FeatureExtractor`.
    """
    if not isinstance(name, str) or not name:
        raise FeatureError(f"extractor name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise FeatureError(f"factory for {name!r} must be callable, got {factory!r}")
    _REGISTRY[name.lower()] = factory


def available_extractors() -> list[str]:
    """Names of the registered extractors, sorted."""
    return sorted(_REGISTRY)


def get_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build a registered extractor.

    Parameters
    ----------
    name : str
        One of :func:`available_extractors` (case-insensitive).
    **options
        Passed to the extractor's constructor (e.g. ``n_jobs=2`` for
        ``"handcrafted"``, ``model=...`` for ``"encoder"``,
        ``weights_dir=...`` for the CNNs).

    Returns
    -------
    FeatureExtractor

    Raises
    ------
    FeatureError
        For an unknown name (the message lists the known ones) or options the
        extractor does not take.
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise FeatureError(
            f"unknown feature extractor {name!r}; choose one of {available_extractors()}"
        )
    try:
        return _REGISTRY[key](**options)
    except TypeError as error:
        raise FeatureError(f"feature extractor {key!r}: bad option(s) {options}: {error}") from None


def extract_features(
    name: str | FeatureExtractor,
    images: Any,
    masks: Any = None,
    *,
    batch_size: int = 16,
    progress: bool = False,
    **options: Any,
) -> FeatureSet:
    """Compute features of a batch of radiographs with a named extractor.

    Parameters
    ----------
    name : str or FeatureExtractor
        A registered name (see :func:`available_extractors`) or an extractor.
    images : array_like, shape (N, H, W) or (N, H, W, 1)
        ``float32`` radiographs in ``[0, 1]``.
    masks : array_like, shape (N, H, W) or (N, H, W, 1), optional
        ``bool`` lung masks (required by extractors with ``needs_mask``).
    batch_size : int, default 16
        Images per batch (network inference) or per worker task.
    progress : bool, default False
        Show a tqdm progress bar.
    **options
        Extractor options, see :func:`get_extractor`.

    Returns
    -------
    X : numpy.ndarray
        ``float32 (N, D)``.
    feature_names : list of str
        ``D`` names.
    """
    if isinstance(name, FeatureExtractor):
        if options:
            raise FeatureError(f"options {sorted(options)} only apply to an extractor name")
        extractor = name
    else:
        extractor = get_extractor(name, **options)
    return extractor.extract(
        images, masks, batch_size=check_batch_size(batch_size), progress=progress
    )


def _register_builtins() -> None:
    register_extractor("handcrafted", handcrafted.HandcraftedFeatures)
    for backbone in cnn.BACKBONES:
        register_extractor(backbone, cnn.factory(backbone, pooling="global"))
        register_extractor(f"{backbone}_lung", cnn.factory(backbone, pooling="lung"))
    register_extractor("encoder", encoder.EncoderFeatures)


_register_builtins()
