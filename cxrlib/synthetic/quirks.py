"""The clutter of the real dataset zips, added to phantom folders (``quirks=True``).

Readers must skip ``Thumbs.db``, ``.DS_Store`` and macOS ``__MACOSX/._*`` files as they do
in the real downloads; these are minimal but well-formed copies of such files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.imageio import atomic_write_bytes

__all__ = ["quirk_files", "write_quirks"]

_THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
_DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2040)


def _apple_double() -> bytes:
    """A minimal AppleDouble file, as macOS zips store in ``__MACOSX/._name``.

    Header (magic, version, 16-byte filler, one entry), then 32 bytes of Finder info.
    """
    header = (0x00051607).to_bytes(4, "big") + (0x00020000).to_bytes(4, "big") + bytes(16)
    entry = (9).to_bytes(4, "big") + (38).to_bytes(4, "big") + (32).to_bytes(4, "big")
    return header + (1).to_bytes(2, "big") + entry + bytes(32)


def quirk_files(image_files: list[str], rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """The clutter :func:`write_quirks` writes: ``(relative path, content)`` pairs.

    ``Thumbs.db`` in every image folder, ``.DS_Store`` at each top folder, and
    ``__MACOSX/._<name>`` AppleDouble files for up to five images drawn with ``rng``.
    """
    files: list[tuple[str, bytes]] = []
    folders = sorted({str(Path(rel).parent.as_posix()) for rel in image_files})
    files.extend((f"{folder}/Thumbs.db", _THUMBS_DB) for folder in folders)
    tops = sorted({rel.split("/", 1)[0] for rel in image_files})
    files.extend((f"{top}/.DS_Store", _DS_STORE) for top in tops)
    picks = sorted(rng.choice(len(image_files), size=min(5, len(image_files)), replace=False))
    for k in picks:
        rel_path = Path(image_files[int(k)])
        rel = f"__MACOSX/{rel_path.parent.as_posix()}/._{rel_path.name}"
        files.append((rel, _apple_double()))
    return files


def write_quirks(root: Path, image_files: list[str], rng: np.random.Generator) -> list[str]:
    """Add the clutter of the real zips (:func:`quirk_files`); return the relative paths written."""
    written: list[str] = []
    for rel, data in quirk_files(image_files, rng):
        atomic_write_bytes(root / rel, data)
        written.append(rel)
    return written
