"""Lung masks as DICOM Segmentation objects (DICOM-SEG), written with highdicom.

A PACS or a DICOM viewer (3D Slicer, OHIF) shows a DICOM-SEG over the radiograph it
references, so masks of DICOM inputs can go back to where the images came from.
:func:`write_dicom_seg` writes one binary segment, "Lung" (SNOMED CT 39607008, both
lungs), marked as made by an automatic algorithm named cxrlib; :func:`read_dicom_seg`
reads the mask back with pydicom only.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cxrlib.atomic import atomic_write_bytes
from cxrlib.errors import CxrlibError

__all__ = ["DicomSegError", "read_dicom_seg", "write_dicom_seg"]


class DicomSegError(CxrlibError, ValueError):
    """A DICOM-SEG could not be made for a source image (the message names it)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxrlib")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


# Patient and study attributes a DICOM-SEG copies from its source (type 2: present, may be
# empty). Archives often omit some; they are added empty to the in-memory copy only.
_COPIED_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def write_dicom_seg(
    source: str | os.PathLike[str], mask: np.ndarray, out_path: str | os.PathLike[str]
) -> Path:
    """Write ``mask`` as a binary DICOM-SEG referencing the DICOM image ``source``.

    Parameters
    ----------
    source : path
        The DICOM radiograph the mask was made from.
    mask : ndarray, bool, shape (Rows, Columns)
        The lung mask at the source's resolution.
    out_path : path
        The ``.dcm`` file to write (atomically).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DicomSegError
        The mask's shape differs from the source's, or highdicom refuses the source
        (for example a missing Study or Patient attribute); the message names the file.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    source = Path(source)
    dataset = pydicom.dcmread(source)
    mask = np.asarray(mask, dtype=bool)
    expected = (int(dataset.Rows), int(dataset.Columns))
    if mask.shape != expected:
        raise DicomSegError(
            f"{source}: the mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
            f"{expected[0]}x{expected[1]}"
        )
    for keyword in _COPIED_TYPE2:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lung",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Lung,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="cxrlib lung segmentation",
            version=_version(),
            family=codes.cid7162.ArtificialIntelligence,
        ),
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=[dataset],
            pixel_array=mask[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="cxrlib",
            manufacturer_model_name="cxrlib segment",
            software_versions=_version(),
            device_serial_number="none",
            omit_empty_frames=False,
        )
    except (AttributeError, TypeError, ValueError) as error:
        raise DicomSegError(f"{source}: cannot make a DICOM-SEG for it: {error}") from error
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return atomic_write_bytes(out_path, buffer.getvalue())


def read_dicom_seg(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the lung mask of a DICOM-SEG written by :func:`write_dicom_seg` (pydicom only).

    Returns
    -------
    ndarray, bool, shape (Rows, Columns)
    """
    import pydicom

    dataset = pydicom.dcmread(path)
    frames = np.asarray(dataset.pixel_array)
    return (frames if frames.ndim == 2 else frames[0]).astype(bool)
