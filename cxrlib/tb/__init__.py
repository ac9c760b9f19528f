"""Tuberculosis diagnosis from chest radiographs, on predicted lung masks.

Modules, bottom up: ``features`` (extractors) and ``classifiers``; ``calibration``
(probabilities calibrated on inner folds, Brier score, reliability tables), ``fitting``
(one calibrated fit), ``operating`` (thresholds for the WHO target and Youden, chosen on
training predictions only; sensitivity/specificity with intervals); ``metrics`` (AUC with
intervals, reports), ``crossval`` (cross-validation with nested thresholds) and
``transfer`` (train on one site, test on the other);
``config`` (:class:`~cxrlib.tb.config.TBConfig`), ``inputs`` (images and predicted lung
masks), ``feature_sets``; ``rundir`` (run folders), ``predictor``, ``result``, ``train``
(:func:`~cxrlib.tb.train.train_tb`), ``classify`` (:func:`~cxrlib.tb.classify.classify`);
``saliency`` (occlusion maps). The chapter's experiments are in
:mod:`cxrlib.book.tb_experiments`.
"""
