"""The manifest of a phantom folder (``phantoms.json``), written by ``write_dataset``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .dicom import GENERATOR

__all__ = ["MANIFEST_NAME", "SynthManifest"]

#: Name of the manifest written at the root of a phantom folder.
MANIFEST_NAME = "phantoms.json"

#: The manifest fields that say what a phantom folder holds (not where it is). Two folders
#: with the same values hold byte-identical files.
IDENTITY_FIELDS: tuple[str, ...] = (
    "layout",
    "n_images",
    "size",
    "seed",
    "dicom",
    "quirks",
    "native_aspect",
    "by_site",
    "images_without_mask",
    "generator",
)


@dataclass
class SynthManifest:
    """What :func:`~cxrlib.synthetic.write_dataset` wrote (also saved as ``phantoms.json``).

    Attributes
    ----------
    out_dir
        The dataset folder.
    layout
        One of :data:`~cxrlib.synthetic.LAYOUTS`.
    n_images, n_masks
        Number of radiographs and of mask files written (a Montgomery layout
        writes two mask files per image, left and right).
    images_without_mask
        Stems of the images that have no mask.
    by_site
        ``{site: {"normal": n, "tb": n}}``.
    seed, size
        Generation parameters.
    dicom, quirks, native_aspect
        Whether images are DICOM, whether clutter/missing masks were added, and
        whether Montgomery films keep their portrait/landscape frame.
    files
        Every file written, relative to ``out_dir`` (sorted, POSIX separators).
    action
        What the call that returned this manifest did: ``"written"`` (a new folder),
        ``"reused"`` (the folder already held these phantoms; nothing was rewritten),
        ``"replaced"`` (phantoms with other settings were replaced, ``overwrite=True``),
        ``"recovered"`` (the files of an interrupted earlier write were replaced) or
        ``"repaired"`` (files of the same phantoms were missing and were rewritten).
        Not saved in ``phantoms.json``.
    """

    out_dir: str
    layout: str
    n_images: int
    n_masks: int
    images_without_mask: list[str]
    by_site: dict[str, dict[str, int]]
    seed: int
    size: int
    dicom: bool = False
    quirks: bool = True
    native_aspect: bool = False
    files: list[str] = field(default_factory=list)
    generator: str = GENERATOR
    action: str = field(default="written", compare=False)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dictionary (what ``phantoms.json`` holds)."""
        data = asdict(self)
        data.pop("action")
        return data

    def identity(self) -> dict[str, Any]:
        """The fields that say what the folder holds (:data:`IDENTITY_FIELDS`)."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> SynthManifest:
        """Build a manifest from :meth:`to_dict` output."""
        known = {f for f in cls.__dataclass_fields__} - {"action"}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SynthManifest:
        """Read a ``phantoms.json`` file (or the one inside a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable phantom manifest ({error})") from error
        if not isinstance(data, dict) or data.get("generator") != GENERATOR:
            raise ValueError(f"{path}: not a phantom manifest written by {GENERATOR}")
        try:
            return cls.from_dict(data)
        except TypeError as error:  # a field is missing
            raise ValueError(f"{path}: not a complete phantom manifest ({error})") from error
