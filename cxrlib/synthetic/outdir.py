"""The output folder of ``write_dataset``: reuse, refuse, replace or recover it.

A phantom folder is complete when it holds ``phantoms.json``
(:data:`~cxrlib.synthetic.manifest.MANIFEST_NAME`). While ``write_dataset`` writes, the
folder also holds the marker :data:`PARTIAL_NAME`, which lists every file the write may
leave behind (those of the new phantoms and those of the phantoms it replaces). The marker
is written before the first file is touched and removed after ``phantoms.json`` is in
place, so a write that was killed half-way leaves a folder that the next call recognises
and cleans, without ``overwrite`` and without hand cleaning.

:func:`prepare_out_dir` decides what to do with the folder:

* new or empty: write;
* half-written (marker present): remove what the marker lists, then write (``"recovered"``);
* complete, same phantoms, every file present, no ``overwrite``: nothing to write
  (``"reused"``): file times stay, so runs keyed on the data keep accepting it;
* complete, same phantoms, files missing: rewrite (``"repaired"``);
* complete, other phantoms: refused without ``overwrite``, else replaced (``"replaced"``);
* anything else non-empty: refused without ``overwrite``, else written into (only the
  phantoms' own files are ever removed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from ..data.imageio import atomic_write_bytes
from .dicom import GENERATOR
from .manifest import IDENTITY_FIELDS, MANIFEST_NAME, SynthManifest

__all__ = ["PARTIAL_NAME", "prepare_out_dir", "finish_out_dir", "describe_differences"]

#: Marker file present while a phantom folder is being written.
PARTIAL_NAME = ".phantoms-partial.json"

_OVERWRITE_HINT = "pass overwrite=True (cxrlib synth --overwrite)"


def describe_differences(old: SynthManifest, new: SynthManifest) -> str:
    """Name the settings in which two phantom folders differ.

    For example ``"n_images: the folder has 8, asked for 3"``; a difference only in the
    site or label split is named as the fractions.
    """
    parts = [
        f"{name}: the folder has {getattr(old, name)!r}, asked for {getattr(new, name)!r}"
        for name in IDENTITY_FIELDS
        if name not in ("by_site", "images_without_mask")
        and getattr(old, name) != getattr(new, name)
    ]
    if not parts and old.identity() != new.identity():
        parts.append("the site or label split (site_fraction, tb_fraction)")
    return "; ".join(parts) or "none"


def _inside(out: Path, rel: str) -> Path | None:
    """``out / rel`` for a relative path that stays inside ``out``; None otherwise."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return out / path


def _remove_files(out: Path, files: Iterable[str]) -> None:
    """Remove ``files`` (relative to ``out``), their leftover temporary files, empty folders."""
    names_by_folder: dict[Path, set[str]] = {}
    for rel in files:
        path = _inside(out, rel)
        if path is None or path.name == PARTIAL_NAME:
            continue  # never touch anything outside the folder
        if path.is_file() or path.is_symlink():
            path.unlink()
        names_by_folder.setdefault(path.parent, set()).add(path.name)
    # an interrupted atomic write leaves ".<name>.<random>.part" next to its target
    leftover = re.compile(r"^\.(?P<name>.+)\.[^.]+\.part$")
    for folder, names in names_by_folder.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = leftover.match(entry.name)
            if match and match["name"] in names and entry.is_file():
                entry.unlink()
    parents = {
        p for folder in names_by_folder for p in (folder, *folder.parents) if out in p.parents
    }
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _marker_files(marker: Path) -> list[str]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _start(out: Path, new_files: Iterable[str], stale_files: Iterable[str]) -> None:
    """Write the marker (listing new and stale files), then remove the stale files."""
    stale = sorted(set(stale_files))
    listed = sorted(set(new_files) | set(stale))
    text = json.dumps({"generator": GENERATOR, "files": listed}, indent=1) + "\n"
    atomic_write_bytes(out / PARTIAL_NAME, text.encode("utf-8"))
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    _remove_files(out, [f for f in stale if f != MANIFEST_NAME])


def finish_out_dir(out: Path) -> None:
    """Remove the marker: call after ``phantoms.json`` is in place."""
    (out / PARTIAL_NAME).unlink(missing_ok=True)


def prepare_out_dir(
    out: Path, manifest: SynthManifest, overwrite: bool
) -> tuple[str, SynthManifest | None]:
    """Get ``out`` ready for the phantoms ``manifest`` describes (see the module docstring).

    Returns
    -------
    action : str
        ``"written"``, ``"reused"``, ``"replaced"``, ``"recovered"`` or ``"repaired"``.
    previous : SynthManifest or None
        The folder's manifest when ``action == "reused"`` (nothing to write).

    Raises
    ------
    FileExistsError
        ``out`` is a file; or, without ``overwrite``, it holds other phantoms or
        other files.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        _start(out, manifest.files, ())
        return "written", None
    previous: SynthManifest | None = None
    if (out / MANIFEST_NAME).is_file():
        try:
            previous = SynthManifest.load(out / MANIFEST_NAME)
        except ValueError:
            previous = None
    marker = out / PARTIAL_NAME
    if marker.is_file():
        # Left by a write that did not finish: its files are worthless, whatever the settings.
        stale = _marker_files(marker) + (previous.files if previous else [])
        _start(out, manifest.files, stale)
        return "recovered", None
    if previous is not None:
        if previous.identity() == manifest.identity() and not overwrite:
            if all((out / rel).is_file() for rel in previous.files if _inside(out, rel)):
                return "reused", previous
            _start(out, manifest.files, previous.files)
            return "repaired", None
        if not overwrite:
            raise FileExistsError(
                f"out_dir {out} already holds phantoms made with other settings "
                f"({describe_differences(previous, manifest)}); choose another folder, "
                f"repeat the settings it was made with, or {_OVERWRITE_HINT} to replace them"
            )
        _start(out, manifest.files, previous.files)
        return "replaced", None
    if not overwrite:
        raise FileExistsError(
            f"out_dir {out} is not empty and is not a phantom folder (no valid "
            f"{MANIFEST_NAME}); choose an empty folder or {_OVERWRITE_HINT} to write into "
            "it anyway"
        )
    _start(out, manifest.files, ())
    return "written", None
