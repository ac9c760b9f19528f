"""Tuberculosis diagnosis: features, classifiers, evaluation, the pipeline, saliency."""
