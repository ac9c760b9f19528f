"""The files of a dataset folder: walk, classify, check headers and pair them by name.

The machinery behind :func:`cxrlib.data.datasets.scan_dataset` (which documents the
layouts it recognises): :func:`_walk` lists the files, :func:`_classify` sorts each into
an image, a mask, a clinical reading or a :class:`SkippedFile` (a file without an image
suffix counts as an image when it starts with the DICOM preamble), :func:`_check_files`
reads image sizes from the headers or decodes every image and mask, and the pairing
functions attach masks and readings to their radiograph **by name** (never by order),
recording every file left out.
"""

from __future__ import annotations

import filecmp
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxrlib.data.imageio import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    ImageReadError,
    image_size,
    is_image_file,
    max_pixels_limit,
    read_image,
    read_mask,
)
from cxrlib.data.naming import ParsedName, parse_generic_name, parse_name
from cxrlib.data.readings import ReadingError, read_reading_file

__all__ = ["DuplicateFile", "SkippedFile"]

_MASK_FOLDERS = frozenset({"masks", "mask", "manualmask", "leftmask", "rightmask"})
_SIDE_FOLDERS = {"leftmask": "left", "rightmask": "right"}
_READING_FOLDER = "clinicalreadings"
_MONTGOMERY_FOLDERS = frozenset({"montgomeryset", "manualmask", "leftmask", "rightmask"})
_CLUTTER_NAMES = {
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    ".ds_store": "macOS folder settings",
}
_LABEL_NAMES = {0: "normal", 1: "tb"}
_STRICT_PATTERNS = "MCUCXR_####_y or CHNCXR_####_y"


@dataclass(frozen=True)
class SkippedFile:
    """A file the scan did not use, and why.

    Attributes
    ----------
    path
        Absolute path of the file.
    reason
        Human-readable reason, e.g. ``"clutter: macOS folder settings (.DS_Store)"``.
    kind
        Short category of the reason (``"clutter"``, ``"not an image"``,
        ``"unreadable image"``, ``"unknown name"``, ``"mask size"``, ...), used to
        summarise.
    """

    path: str
    reason: str
    kind: str = "other"


@dataclass(frozen=True)
class DuplicateFile:
    """A second copy of a radiograph (same id), not used.

    Attributes
    ----------
    path
        Absolute path of the copy that was not used.
    id
        The radiograph's id.
    kept
        Absolute path of the copy in the table.
    identical
        True when both files hold the same bytes.
    """

    path: str
    id: str
    kept: str
    identical: bool


# --------------------------------------------------------------------------- files


@dataclass
class _File:
    """One file under the root, with what its folders say about it."""

    path: Path
    dirs: tuple[str, ...]  # folder names between root and the file, lower case
    layout: str
    size: tuple[int, int] | None = None

    @property
    def depth(self) -> int:
        return len(self.dirs)

    @property
    def strict(self) -> bool:
        return self.layout != "plain"


@dataclass
class _Named:
    """A file with a parsed name (image, mask or reading)."""

    file: _File
    name: ParsedName
    side: str | None = None  # "left"/"right" for Montgomery side masks
    group: Path | None = None  # folder above leftMask/rightMask

    @property
    def path(self) -> str:
        return str(self.file.path)


@dataclass
class _Scan:
    """Mutable state of one scan."""

    root: Path
    skipped: list[SkippedFile] = field(default_factory=list)
    images: list[_Named] = field(default_factory=list)
    masks: list[_Named] = field(default_factory=list)
    texts: list[_Named] = field(default_factory=list)
    files_seen: int = 0
    masks_without_image: list[str] = field(default_factory=list)
    incomplete_masks: list[str] = field(default_factory=list)  # ids, first-seen order
    empty_masks: list[str] = field(default_factory=list)  # decoded masks without lung pixels

    def skip(self, path: Path | str, kind: str, reason: str) -> None:
        self.skipped.append(SkippedFile(str(path), reason, kind))


def _walk(root: Path, scan: _Scan) -> tuple[list[Path], dict[Path, frozenset[str]]]:
    """List files under ``root`` (sorted, symlinks followed once) and each folder's subfolders."""
    files: list[Path] = []
    children: dict[Path, frozenset[str]] = {}
    seen: set[str] = set()

    def on_error(error: OSError) -> None:
        scan.skip(error.filename or root, "unreadable folder", f"folder cannot be read ({error})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to the same folder
            scan.skip(dirpath, "linked folder", f"folder already scanned as {real} (symlink)")
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        folder = Path(dirpath)
        children[folder] = frozenset(name.lower() for name in dirnames)
        files.extend(folder / name for name in sorted(filenames))
    return files, children


def _layout_for(dirs: tuple[str, ...], near: frozenset[str]) -> str:
    """Name the layout a file belongs to from its folders and its folder's siblings."""
    if _MONTGOMERY_FOLDERS.intersection(dirs):
        return "montgomery"
    if "chinaset_allfiles" in dirs:
        return "shenzhen"
    if "lung segmentation" in dirs:
        return "compilation"
    if "cxr_png" in dirs or "cxr_png" in near or _READING_FOLDER in dirs:
        if "manualmask" in near:
            return "montgomery"
        if _READING_FOLDER in near or _READING_FOLDER in dirs:
            return "shenzhen"
        return "compilation"
    return "plain"


def _clutter_reason(dirs: tuple[str, ...], name: str) -> str | None:
    if "__macosx" in dirs:
        return "clutter: macOS archive metadata (under __MACOSX/)"
    if name.lower() in _CLUTTER_NAMES:
        return f"clutter: {_CLUTTER_NAMES[name.lower()]} ({name})"
    if name.startswith("._"):
        return f"clutter: AppleDouble resource file ({name})"
    return None


def _classify(scan: _Scan, path: Path, children: dict[Path, frozenset[str]]) -> None:
    """Sort one file into images, masks, readings or skipped."""
    rel_dirs = path.parent.relative_to(scan.root).parts
    dirs = tuple(name.lower() for name in rel_dirs)
    clutter = _clutter_reason(dirs, path.name)
    if clutter is not None:
        scan.skip(path, "clutter", clutter)
        return
    near = children.get(path.parent.parent, frozenset()) if dirs else frozenset()
    file = _File(path=path, dirs=dirs, layout=_layout_for(dirs, near))
    if path.suffix.lower() == ".txt" and _READING_FOLDER in dirs:
        name = parse_name(path) or parse_generic_name(path)
        scan.texts.append(_Named(file, name))
        return
    if not is_image_file(path, sniff=True):
        suffix = path.suffix or "no suffix"
        scan.skip(path, "not an image", f"not an image or clinical reading ({suffix})")
        return
    known_suffix = path.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES
    # A DICOM file named "1.2.840.5" or "IM0001": its whole name is the stem.
    name_of = path if known_suffix else path.with_name(path.name + ".dcm")
    strict_name = parse_name(name_of)
    is_mask = bool(_MASK_FOLDERS.intersection(dirs)) or name_of.stem.lower().endswith("_mask")
    role = "mask" if is_mask else "image"
    if strict_name is None and file.strict:
        scan.skip(
            path,
            "unknown name",
            f"unknown name {path.name!r} for a {role} in the {file.layout} layout "
            f"(expected {_STRICT_PATTERNS})",
        )
        return
    name = strict_name or parse_generic_name(name_of)
    if not is_mask:
        scan.images.append(_Named(file, name))
        return
    if file.layout == "plain" and strict_name is not None and strict_name.site == "shenzhen":
        file.layout = "shenzhen-masks"
    side_index = max((i for i, d in enumerate(dirs) if d in _SIDE_FOLDERS), default=None)
    if side_index is None:
        scan.masks.append(_Named(file, name))
    else:
        group = scan.root.joinpath(*rel_dirs[:side_index])
        scan.masks.append(_Named(file, name, _SIDE_FOLDERS[dirs[side_index]], group))


# --------------------------------------------------------------------------- headers, pixels

#: Threads that decode images when a scan decodes pixels (Pillow and zlib release the GIL).
_DECODE_THREADS = min(8, os.cpu_count() or 1)


def _decoded_size(path: Path, role: str, limit: int) -> tuple[tuple[int, int], bool]:
    """Decode a file as the pipeline reads it: ``((width, height), mask is empty)``."""
    image_size(path, max_pixels=limit)  # the header checks too (size limit, truncated PNG)
    if role == "mask":
        mask = read_mask(path, max_pixels=limit)
        return (mask.shape[1], mask.shape[0]), not bool(mask.any())
    image = read_image(path, max_pixels=limit)
    return (image.shape[1], image.shape[0]), False


def _check_one(
    role: str, path: Path, decode: bool, limit: int
) -> tuple[tuple[int, int], bool] | str:
    """The size (and emptiness) of one file, or the reason it cannot be read."""
    try:
        if decode:
            return _decoded_size(path, role, limit)
        return image_size(path, max_pixels=limit), False
    except ImageReadError as error:
        return error.reason
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        return str(error) or type(error).__name__


def _check_files(scan: _Scan, progress: bool, decode: bool = False) -> None:
    """Read the size of every image and mask; drop the unreadable ones into skipped.

    With ``decode`` every file is decoded (in threads) as :func:`read_image` and
    :func:`read_mask` read it, and masks without a lung pixel are listed in
    ``scan.empty_masks``; otherwise only the headers are read.
    """
    items = [("image", item) for item in scan.images] + [("mask", item) for item in scan.masks]
    desc = "decoding images" if decode else "checking images"
    limit = max_pixels_limit() or 0  # once: a bad $CXRLIB_MAX_PIXELS stops the scan

    def check(entry: tuple[str, _Named]) -> tuple[tuple[int, int], bool] | str:
        return _check_one(entry[0], entry[1].file.path, decode, limit)

    with ThreadPoolExecutor(_DECODE_THREADS if decode else 1) as pool:
        results = list(
            tqdm(
                pool.map(check, items),
                desc=desc,
                total=len(items),
                unit="file",
                disable=not progress,
            )
        )
    bad: set[int] = set()
    for (role, item), result in zip(items, results, strict=True):
        if isinstance(result, str):
            scan.skip(item.path, f"unreadable {role}", f"unreadable {role}: {result}")
            bad.add(id(item))
            continue
        item.file.size, empty = result
        if empty:
            scan.empty_masks.append(item.path)
    scan.images = [item for item in scan.images if id(item) not in bad]
    scan.masks = [item for item in scan.masks if id(item) not in bad]


# --------------------------------------------------------------------------- pairing


def _dedupe_images(images: list[_Named]) -> tuple[dict[str, _Named], list[DuplicateFile]]:
    """Keep one copy per id: not from a ``test/`` folder, then shallowest, then by path."""
    by_id: dict[str, list[_Named]] = defaultdict(list)
    for item in images:
        by_id[item.name.id].append(item)
    kept: dict[str, _Named] = {}
    duplicates: list[DuplicateFile] = []
    for image_id, copies in by_id.items():
        copies.sort(key=lambda c: (c.file.dirs[-1:] == ("test",), c.file.depth, c.path.lower()))
        kept[image_id] = copies[0]
        for copy in copies[1:]:
            identical = filecmp.cmp(copies[0].path, copy.path, shallow=False)
            duplicates.append(DuplicateFile(copy.path, image_id, copies[0].path, identical))
    return kept, duplicates


@dataclass
class _MaskUnit:
    """One usable mask of an image: a single file, or a Montgomery (left, right) pair."""

    parts: list[_Named]

    @property
    def value(self) -> str | tuple[str, str]:
        if len(self.parts) == 1:
            return self.parts[0].path
        left = next(p for p in self.parts if p.side == "left")
        right = next(p for p in self.parts if p.side == "right")
        return (left.path, right.path)

    @property
    def describe(self) -> str:
        return " + ".join(p.path for p in self.parts)


def _match_masks(scan: _Scan, images: dict[str, _Named]) -> dict[str, list[_Named]]:
    """Attach each mask to the image with its id; record the others."""
    by_key = {item.name.key: item for item in images.values()}
    matched: dict[str, list[_Named]] = defaultdict(list)
    for mask in scan.masks:
        if mask.name.id in images:
            matched[mask.name.id].append(mask)
            continue
        image = by_key.get(mask.name.key)
        if image is not None and image.name.label != mask.name.label:
            scan.skip(
                mask.path,
                "label conflict",
                f"label conflict: mask name says {_describe_label(mask.name.label)} but image "
                f"{image.name.id} says {_describe_label(image.name.label)}",
            )
            continue
        scan.masks_without_image.append(mask.path)
    return matched


def _describe_label(label: int | None) -> str:
    return "unknown" if label is None else f"{_LABEL_NAMES[label]} ({label})"


def _mask_units(scan: _Scan, image: _Named, masks: list[_Named]) -> list[_MaskUnit]:
    """Group an image's masks into units; record incomplete left/right pairs."""
    units = [_MaskUnit([m]) for m in masks if m.side is None]
    groups: dict[Path | None, dict[str, _Named]] = defaultdict(dict)
    for mask in (m for m in masks if m.side is not None):
        sides = groups[mask.group]
        side = mask.side or ""
        if side in sides:
            scan.skip(
                mask.path,
                "second mask",
                f"second {side} lung mask for {image.name.id} (kept {sides[side].path})",
            )
            continue
        sides[side] = mask
    for sides in groups.values():
        if "left" in sides and "right" in sides:
            units.append(_MaskUnit([sides["left"], sides["right"]]))
            continue
        (present,) = sides.values()
        missing = "right" if present.side == "left" else "left"
        scan.skip(
            present.path,
            "incomplete mask",
            f"{present.side} lung mask without its {missing} lung mask (no {missing}Mask/"
            f"{present.file.path.name}): {image.name.id} is treated as without this mask",
        )
        if image.name.id not in scan.incomplete_masks:
            scan.incomplete_masks.append(image.name.id)
    return units


def _size_ok(scan: _Scan, image: _Named, unit: _MaskUnit) -> bool:
    """Return False (and skip the unit's files) when a mask's size differs from the image."""
    size = image.file.size
    wrong = [p for p in unit.parts if size and p.file.size and p.file.size != size]
    if not wrong or size is None:
        return True
    for part in unit.parts:
        if part in wrong:
            (mw, mh), (iw, ih) = part.file.size, size
            reason = f"mask size {mw}x{mh} differs from image size {iw}x{ih} ({image.name.id})"
        else:
            reason = f"its {wrong[0].side} partner has the wrong size ({wrong[0].path})"
        scan.skip(part.path, "mask size", reason)
    return False


def _unit_rank(image: _Named, unit: _MaskUnit) -> tuple:
    first = unit.parts[0]
    renamed = any(p.file.path.stem != image.file.path.stem for p in unit.parts)
    return (first.file.layout != image.file.layout, renamed, first.file.depth, first.path.lower())


def _choose_mask(scan: _Scan, image: _Named, masks: list[_Named]) -> _MaskUnit | None:
    """Pick one mask (unit) for an image; every other candidate goes to skipped."""
    units = [u for u in _mask_units(scan, image, masks) if _size_ok(scan, image, u)]
    if not units:
        return None
    units.sort(key=lambda u: _unit_rank(image, u))
    for extra in units[1:]:
        for part in extra.parts:
            scan.skip(
                part.path,
                "second mask",
                f"second mask for {image.name.id} (kept {units[0].describe})",
            )
    return units[0]


def _match_readings(scan: _Scan, images: dict[str, _Named]) -> dict[str, Any]:
    """Parse the reading of each image; readings without an image go to skipped."""
    readings: dict[str, Any] = {}
    kept_path: dict[str, str] = {}
    for text in sorted(scan.texts, key=lambda t: (t.file.depth, t.path.lower())):
        image_id = text.name.id
        if image_id not in images:
            scan.skip(
                text.path,
                "reading without image",
                f"clinical reading without an image (no radiograph {image_id})",
            )
            continue
        if image_id in readings:
            scan.skip(
                text.path,
                "second reading",
                f"second clinical reading for {image_id} (kept {kept_path[image_id]})",
            )
            continue
        try:
            readings[image_id] = read_reading_file(text.file.path)
        except ReadingError as error:
            scan.skip(
                text.path, "unreadable reading", f"unreadable clinical reading: {error.reason}"
            )
            continue
        kept_path[image_id] = text.path
    return readings
