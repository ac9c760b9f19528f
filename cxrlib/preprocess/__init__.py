"""Resize, letterbox and equalize radiographs, and load a dataset table into arrays.

* :mod:`cxrlib.preprocess.transforms` -- numpy-in / numpy-out functions for one image
  or mask (:func:`resize_image`, :func:`resize_mask`, :func:`letterbox`,
  :func:`letterbox_mask`, :func:`unletterbox`, :func:`equalize`,
  :func:`preprocess_image`, :func:`preprocess_mask`);
* :mod:`cxrlib.preprocess.loader` -- :func:`load_arrays`, which applies that chain to
  every row of a dataset table on all CPU cores, cached on disk;
* :mod:`cxrlib.preprocess.cache` -- the on-disk array cache.

The public names of both modules are re-exported here.
"""

from __future__ import annotations

from cxrlib.preprocess.loader import CACHE_FORMAT_VERSION, LoadedArrays, clear_cache, load_arrays
from cxrlib.preprocess.transforms import (
    LetterboxBox,
    equalize,
    letterbox,
    letterbox_box,
    letterbox_mask,
    preprocess_image,
    preprocess_mask,
    resize_image,
    resize_mask,
    unletterbox,
)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LetterboxBox",
    "LoadedArrays",
    "resize_image",
    "resize_mask",
    "letterbox_box",
    "letterbox",
    "letterbox_mask",
    "unletterbox",
    "equalize",
    "preprocess_image",
    "preprocess_mask",
    "load_arrays",
    "clear_cache",
]
