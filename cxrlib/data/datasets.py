"""Scan a dataset folder into one tidy table: a row per radiograph.

:func:`scan_dataset` walks a folder at any depth, recognises the layouts in which
the Montgomery and Shenzhen sets are distributed, pairs images, lung masks and
clinical readings **by name** (never by order) and returns the table together
with a :class:`ScanReport` that accounts for every file it did not use.

Layouts recognised (each may sit at any depth, e.g. inside an extracted zip):

``compilation``
    ``Lung Segmentation/CXR_png/`` (both sites), ``masks/`` (Montgomery masks
    share the image name, Shenzhen masks end in ``_mask``) and ``test/`` (Shenzhen
    images without masks that also appear in ``CXR_png/``: recorded as duplicates).
``montgomery``
    ``MontgomerySet/CXR_png/``, ``ManualMask/leftMask/`` + ``rightMask/`` (merged
    into one mask: ``mask_path`` is the tuple ``(left, right)``) and
    ``ClinicalReadings/*.txt``.
``shenzhen``
    ``ChinaSet_AllFiles/CXR_png/`` and ``ClinicalReadings/*.txt``.
``shenzhen-masks``
    The separately distributed Shenzhen masks (``CHNCXR_####_y_mask.png`` in a
    ``mask/`` or ``masks/`` folder anywhere under the root).
``plain``
    Any other folder: an ``images/`` + ``masks/`` pair with any file names; masks
    pair with the image of the same stem or the stem plus ``_mask``.

In the first three layouts an image or mask whose name is neither
``MCUCXR_####_y`` nor ``CHNCXR_####_y`` is skipped ("unknown name"); in a plain
folder any name is accepted (see :func:`cxrlib.data.naming.parse_generic_name`).
"""

from __future__ import annotations

import filecmp
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from cxrlib.data.imageio import DICOM_SUFFIXES, is_image_file
from cxrlib.data.naming import SITES, ParsedName, parse_generic_name, parse_name
from cxrlib.data.readings import ReadingError, read_reading_file
from cxrlib.errors import CxrlibError
from cxrlib.paths import display_path

__all__ = [
    "LAYOUTS",
    "TABLE_COLUMNS",
    "TABLE_DTYPES",
    "DatasetError",
    "DatasetScan",
    "DuplicateFile",
    "ScanReport",
    "SkippedFile",
    "empty_table",
    "relative_paths",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

#: Layout names that can appear in :attr:`ScanReport.layouts`, in report order.
LAYOUTS: tuple[str, ...] = ("compilation", "montgomery", "shenzhen", "shenzhen-masks", "plain")
#: Columns of the dataset table, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "id",
    "site",
    "label",
    "image_path",
    "mask_path",
    "sex",
    "age",
    "reading",
)
#: The dtype of each table column (the same for empty and non-empty tables).
TABLE_DTYPES: dict[str, Any] = {
    "id": object,
    "site": object,
    "label": "Int64",
    "image_path": object,
    "mask_path": object,
    "sex": object,
    "age": "float64",
    "reading": object,
}

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


class DatasetError(CxrlibError, ValueError):
    """The dataset folder is missing, not a folder, or holds no radiographs."""


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


@dataclass
class ScanReport:
    """What :func:`scan_dataset` found, paired, and left out.

    Attributes
    ----------
    root
        Absolute path of the scanned folder.
    images
        Radiographs in the table (one per id).
    masks
        Masks paired to an image (a Montgomery left + right pair counts once).
    readings
        Clinical readings paired to an image.
    images_without_mask
        Ids of radiographs without a usable mask, in table order.
    masks_without_image
        Paths of masks whose id matches no radiograph.
    renamed_masks
        Paths of paired masks whose name differs from the image's (``_mask`` suffix).
    skipped
        Files not used, each with its reason.
    duplicates
        Second copies of radiographs already in the table.
    incomplete_masks
        Ids of Montgomery radiographs with only one of the two lung masks.
    by_site
        Radiographs per site and label: ``{"shenzhen": {"normal": 3, "tb": 2}}``
        (an ``"unknown"`` label key only when some labels are unknown).
    layouts
        The layouts recognised (see :data:`LAYOUTS`).
    files_seen
        Number of files looked at.
    checked_images
        Whether image headers were opened (``check_images=True``).
    """

    root: str
    images: int = 0
    masks: int = 0
    readings: int = 0
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    renamed_masks: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    duplicates: list[DuplicateFile] = field(default_factory=list)
    incomplete_masks: list[str] = field(default_factory=list)
    by_site: dict[str, dict[str, int]] = field(default_factory=dict)
    layouts: list[str] = field(default_factory=list)
    files_seen: int = 0
    checked_images: bool = True

    def _rel(self, path: str) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def skipped_by_kind(self) -> dict[str, int]:
        """Return the number of skipped files per kind, most frequent first."""
        return dict(Counter(item.kind for item in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary.

        Returns
        -------
        dict
            ``root``; counts (ints) ``images``, ``masks``, ``readings``,
            ``images_without_mask``, ``masks_without_image``, ``renamed_masks``,
            ``skipped``, ``duplicates``, ``incomplete_masks``; ``by_site``;
            ``layouts``; ``skipped_by_kind``; and ``details`` with the lists
            (paths relative to ``root``, skipped as ``{"path", "reason"}``).
        """
        return {
            "root": self.root,
            "images": self.images,
            "masks": self.masks,
            "readings": self.readings,
            "images_without_mask": len(self.images_without_mask),
            "masks_without_image": len(self.masks_without_image),
            "renamed_masks": len(self.renamed_masks),
            "skipped": len(self.skipped),
            "duplicates": len(self.duplicates),
            "incomplete_masks": len(self.incomplete_masks),
            "by_site": {site: dict(counts) for site, counts in self.by_site.items()},
            "layouts": list(self.layouts),
            "skipped_by_kind": self.skipped_by_kind(),
            "details": {
                "images_without_mask": list(self.images_without_mask),
                "masks_without_image": [self._rel(p) for p in self.masks_without_image],
                "renamed_masks": [self._rel(p) for p in self.renamed_masks],
                "skipped": [
                    {"path": self._rel(item.path), "reason": item.reason} for item in self.skipped
                ],
                "duplicates": [
                    {
                        "path": self._rel(item.path),
                        "id": item.id,
                        "kept": self._rel(item.kept),
                        "identical": item.identical,
                    }
                    for item in self.duplicates
                ],
                "incomplete_masks": list(self.incomplete_masks),
            },
        }

    def summary(self, examples: int = 3) -> str:
        """Return a short, human-readable multi-line description.

        Parameters
        ----------
        examples
            How many skipped files to show per kind of reason.
        """
        sites = "; ".join(
            f"{site}: " + ", ".join(f"{n} {_pretty_label(label)}" for label, n in counts.items())
            for site, counts in self.by_site.items()
        )
        lines = [
            f"dataset: {display_path(self.root)}",
            f"layouts: {', '.join(self.layouts) or 'none'}",
            f"radiographs: {self.images} ({sites})",
            f"masks: {self.masks} paired ({len(self.renamed_masks)} renamed), "
            f"{len(self.images_without_mask)} images without mask, "
            f"{len(self.masks_without_image)} masks without image",
            f"clinical readings: {self.readings} paired",
        ]
        if self.incomplete_masks:
            lines.append(f"incomplete left/right masks: {len(self.incomplete_masks)}")
        if self.duplicates:
            lines.append(
                f"duplicates: {len(self.duplicates)} second copies of a radiograph (not used)"
            )
        if not self.checked_images:
            lines.append("image headers: not checked (check_images=False)")
        lines.append(f"skipped: {len(self.skipped)} of {self.files_seen} files")
        for kind, count in self.skipped_by_kind().items():
            lines.append(f"  {count} {kind}")
            for item in [s for s in self.skipped if s.kind == kind][:examples]:
                lines.append(f"    {self._rel(item.path)}: {item.reason}")
        return "\n".join(lines)


class DatasetScan(NamedTuple):
    """Result of :func:`scan_dataset`: ``table, report = scan_dataset(root)``."""

    table: pd.DataFrame
    report: ScanReport


def _pretty_label(label: str) -> str:
    return "TB" if label == "tb" else label


def relative_paths(table: pd.DataFrame, root: str | os.PathLike[str]) -> pd.DataFrame:
    """A copy of a dataset table with ``image_path`` and ``mask_path`` relative to ``root``.

    For display: ``Lung Segmentation/CXR_png/MCUCXR_0001_0.png`` reads better than the full
    path on the machine that scanned the folder. A mask given as a left/right pair becomes a
    tuple of relative paths; missing masks stay missing.

    Parameters
    ----------
    table : pandas.DataFrame
        A table from :func:`scan_dataset` (columns :data:`TABLE_COLUMNS`).
    root : path
        The folder that was scanned.

    Returns
    -------
    pandas.DataFrame
        A new table; ``table`` is not changed.
    """
    base = Path(root).resolve()

    def relative(value: Any) -> Any:
        if value is None or (isinstance(value, float) and value != value):
            return value
        if isinstance(value, list | tuple):
            return tuple(relative(item) for item in value)
        return Path(os.path.relpath(Path(value).resolve(), base)).as_posix()

    shown = table.copy()
    for column in ("image_path", "mask_path"):
        if column in shown:
            shown[column] = shown[column].map(relative)
    return shown


def empty_table() -> pd.DataFrame:
    """Return a dataset table with no rows and the standard columns and dtypes.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` with dtypes :data:`TABLE_DTYPES`.
    """
    return _make_table([])


def _make_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    columns = {
        name: pd.Series([row[name] for row in rows], dtype=TABLE_DTYPES[name])
        for name in TABLE_COLUMNS
    }
    return pd.DataFrame(columns, columns=list(TABLE_COLUMNS))


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
    if not is_image_file(path):
        suffix = path.suffix or "no suffix"
        scan.skip(path, "not an image", f"not an image or clinical reading ({suffix})")
        return
    strict_name = parse_name(path)
    is_mask = bool(_MASK_FOLDERS.intersection(dirs)) or path.stem.lower().endswith("_mask")
    role = "mask" if is_mask else "image"
    if strict_name is None and file.strict:
        scan.skip(
            path,
            "unknown name",
            f"unknown name {path.name!r} for a {role} in the {file.layout} layout "
            f"(expected {_STRICT_PATTERNS})",
        )
        return
    name = strict_name or parse_generic_name(path)
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


# --------------------------------------------------------------------------- headers


def _has_dicom_preamble(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_size(path: Path) -> tuple[int, int]:
    import pydicom

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many types for damaged files
        raise ValueError(f"not a readable DICOM file ({error})") from error
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if not rows or not columns:
        raise ValueError("DICOM header has no image size (Rows/Columns)")
    return int(columns), int(rows)


def _header_size(path: Path) -> tuple[int, int]:
    """Return ``(width, height)`` from the file header without decoding pixels.

    Raises
    ------
    ValueError or OSError
        With a short reason when the file is empty, truncated or not an image.
    """
    if path.stat().st_size == 0:
        raise ValueError("file is empty (0 bytes)")
    if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return _dicom_size(path)
    with Image.open(path) as image:
        width, height = image.size
        image_format = image.format
    if image_format == "PNG":
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            if b"IEND" not in handle.read():
                raise ValueError("truncated PNG (no IEND chunk at the end)")
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return width, height


def _check_headers(scan: _Scan, progress: bool) -> None:
    """Read the size of every image and mask; drop the unreadable ones into skipped."""
    items = [("image", item) for item in scan.images] + [("mask", item) for item in scan.masks]
    bad: set[int] = set()
    for role, item in tqdm(items, desc="checking images", unit="file", disable=not progress):
        try:
            item.file.size = _header_size(item.file.path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
            reason = str(error) or type(error).__name__
            if isinstance(error, UnidentifiedImageError):
                reason = "not a readable image (Pillow cannot identify it)"
            scan.skip(item.path, f"unreadable {role}", f"unreadable {role}: {reason}")
            bad.add(id(item))
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


def _match_masks(
    scan: _Scan, images: dict[str, _Named], report: ScanReport
) -> dict[str, list[_Named]]:
    """Attach each mask to the image with its id; report the others."""
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
        report.masks_without_image.append(mask.path)
    return matched


def _describe_label(label: int | None) -> str:
    return "unknown" if label is None else f"{_LABEL_NAMES[label]} ({label})"


def _mask_units(
    scan: _Scan, image: _Named, masks: list[_Named], report: ScanReport
) -> list[_MaskUnit]:
    """Group an image's masks into units; report incomplete left/right pairs."""
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
        if image.name.id not in report.incomplete_masks:
            report.incomplete_masks.append(image.name.id)
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


def _choose_mask(
    scan: _Scan, image: _Named, masks: list[_Named], report: ScanReport
) -> _MaskUnit | None:
    """Pick one mask (unit) for an image; every other candidate goes to skipped."""
    units = [u for u in _mask_units(scan, image, masks, report) if _size_ok(scan, image, u)]
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


def _by_site(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        label = row["label"]
        counts[row["site"]][
            _LABEL_NAMES.get(label, "unknown") if label is not None else "unknown"
        ] += 1
    result: dict[str, dict[str, int]] = {}
    for site in sorted(counts, key=lambda s: (SITES.index(s) if s in SITES else len(SITES), s)):
        entry = {"normal": counts[site]["normal"], "tb": counts[site]["tb"]}
        if counts[site]["unknown"]:
            entry["unknown"] = counts[site]["unknown"]
        result[site] = entry
    return result


def _no_radiographs(root: Path, scan: _Scan) -> DatasetError:
    if scan.files_seen == 0:
        detail = "the folder is empty"
    else:
        kinds = Counter(item.kind for item in scan.skipped).most_common()
        skipped = ", ".join(f"{n} {kind}" for kind, n in kinds) or "nothing"
        detail = f"skipped: {skipped}"
    return DatasetError(
        f"no radiographs found under {root} (looked at {scan.files_seen} files; {detail})"
    )


def _resolve_root(root: str | os.PathLike[str]) -> Path:
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} is not a folder")
    return path


def scan_dataset(
    root: str | os.PathLike[str], *, check_images: bool = True, progress: bool = False
) -> DatasetScan:
    """Scan a dataset folder into a table with a row per radiograph.

    Parameters
    ----------
    root
        The folder to scan, at any depth (e.g. the folder a zip was extracted into).
    check_images
        Open every image's and mask's header (Pillow, or pydicom with
        ``stop_before_pixels``) without decoding pixels: unreadable files are
        skipped and masks whose size differs from their image are left out.
        With False no file is opened and sizes are not compared.
    progress
        Show a tqdm progress bar while checking headers.

    Returns
    -------
    DatasetScan
        ``table``: a :class:`pandas.DataFrame` with columns :data:`TABLE_COLUMNS`
        (``id`` str unique; ``site``; ``label`` nullable ``Int64``; ``image_path``
        absolute str; ``mask_path`` None, str or a ``(left, right)`` tuple of str;
        ``sex`` ``"M"``/``"F"``/None; ``age`` float years or NaN; ``reading`` str or
        None), sorted by site then id, with a fresh ``RangeIndex``.
        ``report``: a :class:`ScanReport`.

    Raises
    ------
    DatasetError
        If ``root`` does not exist, is not a folder, or holds no usable radiograph.
    """
    root_path = _resolve_root(root)
    scan = _Scan(root=root_path)
    files, children = _walk(root_path, scan)
    scan.files_seen = len(files)
    for path in files:
        _classify(scan, path, children)
    if check_images:
        _check_headers(scan, progress)

    report = ScanReport(root=str(root_path), files_seen=len(files), checked_images=check_images)
    images, report.duplicates = _dedupe_images(scan.images)
    if not images:
        raise _no_radiographs(root_path, scan)
    matched = _match_masks(scan, images, report)
    readings = _match_readings(scan, images)

    rows: list[dict[str, Any]] = []
    layouts: set[str] = set()
    for image_id, image in images.items():
        unit = _choose_mask(scan, image, matched.get(image_id, []), report)
        reading = readings.get(image_id)
        layouts.add(image.file.layout)
        if unit is not None:
            layouts.update(part.file.layout for part in unit.parts)
            renamed = [p.path for p in unit.parts if p.file.path.stem != image.file.path.stem]
            report.renamed_masks.extend(renamed)
        rows.append(
            {
                "id": image_id,
                "site": image.name.site,
                "label": image.name.label,
                "image_path": image.path,
                "mask_path": None if unit is None else unit.value,
                "sex": reading.sex if reading else None,
                "age": reading.age if reading and reading.age is not None else float("nan"),
                "reading": reading.reading if reading else None,
            }
        )
    rows.sort(key=lambda row: (row["site"], row["id"]))

    report.images = len(rows)
    report.masks = sum(row["mask_path"] is not None for row in rows)
    report.readings = sum(row["reading"] is not None for row in rows)
    report.images_without_mask = [row["id"] for row in rows if row["mask_path"] is None]
    report.renamed_masks.sort()
    report.masks_without_image.sort()
    report.skipped = sorted(scan.skipped, key=lambda item: item.path)
    report.by_site = _by_site(rows)
    report.layouts = [name for name in LAYOUTS if name in layouts]
    logger.debug("scanned %s: %d radiographs, %d masks", root_path, report.images, report.masks)
    return DatasetScan(table=_make_table(rows), report=report)
