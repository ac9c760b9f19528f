"""Tuberculosis diagnosis from chest radiographs, on predicted lung masks.

Modules, bottom up: ``features`` (extractors) and ``classifiers``; ``metrics`` (AUC with
intervals, reports, WHO operating points) and ``crossval`` (cross-validation, cross-site);
``config`` (:class:`~cxrlib.tb.config.TBConfig`), ``inputs`` (images and predicted lung
masks), ``feature_sets``; ``rundir`` (run folders), ``predictor``, ``result``, ``train``
(:func:`~cxrlib.tb.train.train_tb`), ``classify`` (:func:`~cxrlib.tb.classify.classify`);
``saliency`` (occlusion maps). The chapter's experiments are in
:mod:`cxrlib.book.tb_experiments`.
"""
