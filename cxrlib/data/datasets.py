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

This module holds the report and the table; walking, classifying and pairing the files
is :mod:`cxrlib.data.scan`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from cxrlib.data.naming import SITES
from cxrlib.data.scan import (
    _LABEL_NAMES,
    DuplicateFile,
    SkippedFile,
    _check_files,
    _choose_mask,
    _classify,
    _dedupe_images,
    _match_masks,
    _match_readings,
    _Scan,
    _walk,
)
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


class DatasetError(CxrlibError, ValueError):
    """The dataset folder is missing, not a folder, or holds no radiographs."""


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
    empty_masks
        Paths of mask files without a single lung pixel (all zero as
        :func:`cxrlib.data.imageio.read_mask` reads them). They are still paired; a
        warning is logged. Found only when pixels are decoded (``decode=True``).
    by_site
        Radiographs per site and label: ``{"shenzhen": {"normal": 3, "tb": 2}}``
        (an ``"unknown"`` label key only when some labels are unknown).
    layouts
        The layouts recognised (see :data:`LAYOUTS`).
    files_seen
        Number of files looked at.
    checked_images
        Whether image headers were opened (``check_images=True``).
    decoded
        Whether every image and mask was decoded (``decode=True``), not only its header.
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
    empty_masks: list[str] = field(default_factory=list)
    by_site: dict[str, dict[str, int]] = field(default_factory=dict)
    layouts: list[str] = field(default_factory=list)
    files_seen: int = 0
    checked_images: bool = True
    decoded: bool = False

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
            ``skipped``, ``duplicates``, ``incomplete_masks``, ``empty_masks``;
            ``by_site``; ``layouts``; ``skipped_by_kind``; ``checked_images`` and
            ``decoded`` (bools); and ``details`` with the lists (paths relative to
            ``root``, skipped as ``{"path", "reason"}``).
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
            "empty_masks": len(self.empty_masks),
            "by_site": {site: dict(counts) for site, counts in self.by_site.items()},
            "layouts": list(self.layouts),
            "skipped_by_kind": self.skipped_by_kind(),
            "checked_images": self.checked_images,
            "decoded": self.decoded,
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
                "empty_masks": [self._rel(p) for p in self.empty_masks],
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
        if self.empty_masks:
            lines.append(
                f"empty masks: {len(self.empty_masks)} mask files without a lung pixel "
                "(all zero; paired anyway)"
            )
            lines += [f"    {self._rel(path)}" for path in self.empty_masks[:examples]]
        if not self.checked_images:
            lines.append("image headers: not checked (check_images=False)")
        elif self.decoded:
            lines.append("pixels: every image and mask decoded")
        else:
            lines.append("pixels: not decoded (headers only; decode=True or info --check)")
        folders = sum(1 for item in self.skipped if item.kind in FOLDER_KINDS)
        line = f"skipped: {len(self.skipped) - folders} of {self.files_seen} files"
        lines.append(line + (f" and {folders} folder(s)" if folders else ""))
        for kind, count in self.skipped_by_kind().items():
            lines.append(f"  {count} {kind}")
            for item in [s for s in self.skipped if s.kind == kind][:examples]:
                lines.append(f"    {self._rel(item.path)}: {item.reason}")
        return "\n".join(lines)


#: Kinds of skipped entries that are folders, not files (counted apart in the summary).
FOLDER_KINDS = frozenset({"unreadable folder", "linked folder"})


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
    root: str | os.PathLike[str],
    *,
    check_images: bool = True,
    decode: bool = False,
    progress: bool = False,
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
        With False no image is opened and sizes are not compared. Either way a file
        without an image suffix is read up to its 132nd byte, to recognise DICOM
        files without a ``.dcm`` suffix by their ``DICM`` marker.
    decode
        Decode every image and mask too, as :func:`cxrlib.data.imageio.read_image` and
        :func:`~cxrlib.data.imageio.read_mask` read them (in threads): files whose
        headers are fine but whose pixel data is damaged are skipped ("unreadable
        image"/"unreadable mask"), and masks without a lung pixel are listed in
        :attr:`ScanReport.empty_masks` (and logged as a warning). Slower than the
        header check; needs ``check_images=True``. Images over the size limit of
        :mod:`cxrlib.data.imageio` are skipped in both modes.
    progress
        Show a tqdm progress bar while checking headers or decoding.

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
    ValueError
        If ``decode`` is true but ``check_images`` is false.
    """
    root_path = _resolve_root(root)
    scan = _Scan(root=root_path)
    files, children = _walk(root_path, scan)
    scan.files_seen = len(files)
    for path in files:
        _classify(scan, path, children)
    if decode and not check_images:
        raise ValueError("scan_dataset: decode=True needs check_images=True")
    if check_images:
        _check_files(scan, progress, decode=decode)

    report = ScanReport(
        root=str(root_path), files_seen=len(files), checked_images=check_images, decoded=decode
    )
    images, report.duplicates = _dedupe_images(scan.images)
    if not images:
        raise _no_radiographs(root_path, scan)
    matched = _match_masks(scan, images)
    readings = _match_readings(scan, images)

    rows: list[dict[str, Any]] = []
    layouts: set[str] = set()
    for image_id, image in images.items():
        unit = _choose_mask(scan, image, matched.get(image_id, []))
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
    report.masks_without_image = sorted(scan.masks_without_image)
    report.incomplete_masks = list(scan.incomplete_masks)
    report.empty_masks = sorted(scan.empty_masks)
    if report.empty_masks:
        logger.warning(
            "%d mask files under %s have no lung pixel (all zero), e.g. %s",
            len(report.empty_masks),
            root_path,
            report.empty_masks[0],
        )
    report.skipped = sorted(scan.skipped, key=lambda item: item.path)
    report.by_site = _by_site(rows)
    report.layouts = [name for name in LAYOUTS if name in layouts]
    logger.debug("scanned %s: %d radiographs, %d masks", root_path, report.images, report.masks)
    return DatasetScan(table=_make_table(rows), report=report)
