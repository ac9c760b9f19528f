"""Encode phantoms as DICOM files, with the variety of real radiographs.

:func:`dicom_bytes` writes a 16-bit radiograph (explicit VR little endian, Digital X-Ray
Image Storage) with patient data, deterministic UIDs, MONOCHROME1 or MONOCHROME2 and
rescale/window values; ``_dicom_for`` varies those per phantom as the real sets do.
"""

from __future__ import annotations

import io

import numpy as np

from .phantom import Phantom

__all__ = ["GENERATOR", "dicom_bytes"]

#: The generator name recorded in manifests and mixed into DICOM UIDs.
GENERATOR = "cxrlib.synthetic"
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def dicom_bytes(
    image: np.ndarray,
    *,
    patient_id: str,
    sex: str = "O",
    age: int | None = None,
    seed: int = 0,
    monochrome1: bool = False,
    bits_stored: int = 12,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> bytes:
    """Encode a radiograph as a DICOM file (explicit VR little endian).

    Parameters
    ----------
    image
        ``float (H, W)`` in ``[0, 1]``.
    patient_id
        Patient ID and name; UIDs are derived from it and ``seed`` (deterministic).
    sex, age
        Patient's sex (``"F"``/``"M"``/``"O"``) and age in years.
    monochrome1
        Store inverted values with ``PhotometricInterpretation = MONOCHROME1``.
    bits_stored
        Stored bit depth (8 to 16) in 16-bit words.
    slope, intercept
        Rescale slope and intercept; a window centre/width covering the full
        rescaled range is written too.

    Returns
    -------
    bytes
        The file content; :func:`cxrlib.data.imageio.read_image` gives back ``image``
        (to within the stored precision) when it spans ``[0, 1]``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in [8, 16], got {bits_stored}")
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {array.shape}")
    top = 2**bits_stored - 1
    stored = np.rint(np.clip(array, 0.0, 1.0) * top).astype(np.uint16)
    if monochrome1:
        stored = (top - stored).astype(np.uint16)

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=[GENERATOR, str(seed), patient_id, kind])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DX_STORAGE
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = _DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "DX"
    ds.StudyDate = "20000101"
    ds.PatientName = f"Phantom^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientSex = sex if sex in ("F", "M") else "O"
    if age is not None:
        ds.PatientAge = f"{int(age):03d}Y"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ImageComments = "synthetic phantom (cxrlib.synthetic)"
    ds.Rows, ds.Columns = (int(s) for s in array.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleType = "US"
    lo, hi = intercept, top * slope + intercept
    # Linear window mapping [lo, hi] onto the full output range (DICOM PS3.3 C.11.2.1.2).
    ds.WindowCenter = f"{(lo + hi) / 2 + 0.5:g}"
    ds.WindowWidth = f"{hi - lo + 1:g}"
    ds.PixelData = stored.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dicom_for(phantom: Phantom, stem: str, seed: int, index: int) -> bytes:
    """DICOM with per-image variety: MONOCHROME1 for some, various rescale values."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 1)))
    slope, intercept = [(1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, -100.0)][rng.integers(4)]
    return dicom_bytes(
        phantom.image,
        patient_id=stem,
        sex=phantom.sex,
        age=phantom.age,
        seed=seed,
        monochrome1=bool(rng.random() < 0.3),
        bits_stored=int(rng.choice([12, 12, 14, 16])),
        slope=slope,
        intercept=intercept,
    )
