"""Lung segmentation.

Models (:mod:`~cxrlib.seg.models`), losses (:mod:`~cxrlib.seg.losses`), augmentation
(:mod:`~cxrlib.seg.transforms`, :mod:`~cxrlib.seg.augment`), training
(:mod:`~cxrlib.seg.train_config`, :mod:`~cxrlib.seg.train`, :mod:`~cxrlib.seg.results`),
inference (:mod:`~cxrlib.seg.inference`, :mod:`~cxrlib.seg.folder`), post-processing
(:mod:`~cxrlib.seg.postprocess`) and metrics (:mod:`~cxrlib.seg.metrics`).
"""
