"""Procedural chest X-ray phantoms with exact lung masks: the book's default data.

Each phantom is a synthetic posteroanterior chest radiograph (body outline with
shoulders and arms, lungs with diaphragm domes and costophrenic angles, heart and
mediastinum, spine, ribs and clavicles, vessel markings, exposure and noise, side
markers and sometimes ECG leads) with the lung mask it was drawn from. Two sites
imitate the domain shift of the Montgomery and Shenzhen sets; tuberculosis
phantoms carry infiltrates, cavities, nodules, miliary pattern, fibrosis or
pleural effusion.

    >>> from cxrlib.synthetic import make_phantom
    >>> p = make_phantom(0, site="shenzhen", label=1, size=128)
    >>> p.image.shape, p.image.dtype, p.mask.dtype
    ((128, 128), dtype('float32'), dtype('bool'))

:func:`write_dataset` writes whole datasets in the layouts of the real downloads
(:mod:`~cxrlib.synthetic.writers`, with DICOM encoding in :mod:`~cxrlib.synthetic.dicom`
and the zips' clutter in :mod:`~cxrlib.synthetic.quirks`); it reuses a folder that already
holds the same phantoms and recovers one left half-written
(:mod:`~cxrlib.synthetic.outdir`, manifest in :mod:`~cxrlib.synthetic.manifest`).
:func:`generate_arrays` draws them in memory.
"""

from .dicom import dicom_bytes
from .phantom import MIN_SIZE, Phantom, make_phantom
from .sites import SITE_PROFILES, SITES, SiteProfile
from .writers import (
    LAYOUTS,
    MANIFEST_NAME,
    SynthManifest,
    generate_arrays,
    phantom_seed,
    write_dataset,
)

__all__ = [
    "LAYOUTS",
    "MANIFEST_NAME",
    "MIN_SIZE",
    "SITES",
    "SITE_PROFILES",
    "Phantom",
    "SiteProfile",
    "SynthManifest",
    "dicom_bytes",
    "generate_arrays",
    "make_phantom",
    "phantom_seed",
    "write_dataset",
]
