"""Lung segmentation.

Models, losses, augmentation, training, inference, post-processing and metrics.
"""
