"""Download the public chest X-ray datasets, verify them, and unpack them safely.

A small registry (:data:`REGISTRY`) lists the public archives the book can use,
each with its URL, expected sha256 checksum, size and citation. :func:`fetch`
downloads one with :mod:`pooch` into a cache folder, verifies the checksum and
unpacks it with :func:`safe_extract`::

    from cxrlib.data.download import fetch
    root = fetch("montgomery")  # <cache>/NLM-MontgomeryCXRSet/MontgomerySet/...

Where the files go (first match wins): the ``dest`` argument, the environment
variable ``CXRLIB_DATA_DIR``, or the user cache folder ``pooch.os_cache("cxrlib")``.

Rules that keep the cache trustworthy:

* never download without a checksum: where the registry has none, the caller
  must pass ``sha256=`` (or ``--sha256`` on the command line);
* a download whose checksum does not match raises :class:`ChecksumError`, and no
  file is left behind under the archive's name;
* a file already in the cache with the right checksum is not downloaded again;
* extraction refuses absolute paths, ``..`` components, drive letters and links
  (:class:`UnsafeArchiveError`), skips clutter such as ``__MACOSX/`` and
  ``Thumbs.db``, and is atomic: it unpacks into a hidden temporary folder and
  renames it into place only when complete.

Command line: ``python -m cxrlib.data.download list`` and
``python -m cxrlib.data.download fetch NAME [--sha256 HEX] [--dest DIR] [--url URL]``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import sys
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pooch
from pooch.downloaders import choose_downloader

__all__ = [
    "DATA_DIR_ENV",
    "REGISTRY",
    "RemoteDataset",
    "DownloadError",
    "ChecksumError",
    "MissingChecksumError",
    "UnknownDatasetError",
    "ArchiveError",
    "UnsafeArchiveError",
    "list_datasets",
    "get_dataset",
    "data_dir",
    "fetch",
    "safe_extract",
    "is_clutter",
    "main",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Environment variable that overrides the cache folder.
DATA_DIR_ENV = "CXRLIB_DATA_DIR"
#: Name of the marker file written last into a completely extracted folder.
EXTRACT_MARKER = ".cxrlib-extracted.json"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CLUTTER_DIRS = frozenset({"__macosx"})
_CLUTTER_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})


# --------------------------------------------------------------------------- errors


class DownloadError(OSError):
    """A download failed (HTTP error, connection error); the message names the URL."""


class ChecksumError(ValueError):
    """A downloaded file does not match its expected sha256 checksum.

    Attributes
    ----------
    dataset, url, expected, actual
        The dataset name, where it came from, and the expected and actual hashes.
    """

    def __init__(self, dataset: str, url: str, expected: str, actual: str) -> None:
        self.dataset = dataset
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"checksum mismatch for dataset {dataset!r} downloaded from {url}: "
            f"expected sha256 {expected}, got sha256 {actual}. The download was deleted. "
            "The file may be corrupt or truncated, the mirror may serve different bytes, "
            "or the expected checksum may be outdated."
        )


class MissingChecksumError(ValueError):
    """Refusal to download a dataset for which no sha256 checksum is known."""


class UnknownDatasetError(ValueError):
    """The requested dataset name is not in the registry; the message lists known names."""


class ArchiveError(ValueError):
    """An archive cannot be read (not a zip, corrupt member); the message names the file."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the destination, or is a link.

    Attributes
    ----------
    archive
        The archive path.
    members
        The offending member names (the first one is named in the message).
    """

    def __init__(self, archive: PathLike, members: Sequence[tuple[str, str]]) -> None:
        self.archive = Path(archive)
        self.members = [name for name, _ in members]
        first, reason = members[0]
        more = f" (and {len(members) - 1} more unsafe member(s))" if len(members) > 1 else ""
        super().__init__(
            f"{self.archive}: refusing to extract unsafe member {first!r}: {reason}{more}; "
            "nothing was extracted"
        )


# ------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RemoteDataset:
    """One downloadable archive.

    Attributes
    ----------
    name
        Registry key, e.g. ``"montgomery"``.
    url
        Canonical public download URL.
    sha256
        Expected sha256 of the archive (64 lower-case hex digits), or ``None``
        when none is on record: :func:`fetch` then needs one from the caller.
    filename
        File name of the archive in the cache folder.
    size_hint
        Approximate archive size in bytes, or ``None`` when unknown.
    description
        One paragraph: what it is, layout, licence.
    citation
        What users must cite.
    """

    name: str
    url: str
    sha256: str | None
    filename: str
    size_hint: int | None
    description: str
    citation: str

    @property
    def size_text(self) -> str:
        """The size hint as text, e.g. ``"about 0.6 GB"``."""
        if self.size_hint is None:
            return "size unknown"
        return f"about {self.size_hint / 1e9:.1f} GB"


_NLM_ATTRIBUTION = (
    "Attribute the National Library of Medicine, National Institutes of Health, Bethesda, MD, USA"
)
_JAEGER_2014_TMI = (
    "Jaeger S, Karargyris A, Candemir S, Folio L, Siegelman J, Callaghan F, Xue Z, "
    "Palaniappan K, Singh RK, Antani S, Thoma G, Wang YX, Lu PX, McDonald CJ. Automatic "
    "tuberculosis screening using chest radiographs. IEEE Trans Med Imaging. "
    "2014;33(2):233-45. doi:10.1109/TMI.2013.2284099"
)
_CANDEMIR_2014 = (
    "Candemir S, Jaeger S, Palaniappan K, Musco JP, Singh RK, Xue Z, Karargyris A, "
    "Antani S, Thoma G, McDonald CJ. Lung segmentation in chest radiographs using anatomical "
    "atlases with nonrigid registration. IEEE Trans Med Imaging. 2014;33(2):577-90. "
    "doi:10.1109/TMI.2013.2290491"
)
_STIRENKO_2018 = (
    "Stirenko S, Kochura Y, Alienin O, Rokovyi O, Gordienko Y, Gang P, Zeng W. Chest X-Ray "
    "Analysis of Tuberculosis by Deep Learning with Segmentation and Augmentation. 2018. "
    "arXiv:1803.01199"
)

_DATASETS = (
    RemoteDataset(
        name="montgomery",
        url="https://openi.nlm.nih.gov/imgs/collections/NLM-MontgomeryCXRSet.zip",
        sha256="54601e952315d8f67383e9202a6e145997ade429f54f7e0af44b4e158714f424",
        filename="NLM-MontgomeryCXRSet.zip",
        size_hint=600_000_000,
        description=(
            "NLM Montgomery County (MC) tuberculosis chest X-ray set: 138 PNG radiographs "
            "(80 normal, 58 TB; 4020x4892 or 4892x4020, 12-bit), left and right lung masks "
            "and clinical readings. Layout: MontgomerySet/CXR_png/, "
            "MontgomerySet/ManualMask/{leftMask,rightMask}/, MontgomerySet/ClinicalReadings/. "
            "File-by-file copy: https://data.lhncbc.nlm.nih.gov/public/"
            "Tuberculosis-Chest-X-ray-Datasets/Montgomery-County-CXR-Set/MontgomerySet/"
        ),
        citation=f"{_NLM_ATTRIBUTION}. {_JAEGER_2014_TMI}. {_CANDEMIR_2014}.",
    ),
    RemoteDataset(
        name="shenzhen",
        url="https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip",
        sha256=None,
        filename="ChinaSet_AllFiles.zip",
        size_hint=3_800_000_000,
        description=(
            "NLM Shenzhen (CHN) tuberculosis chest X-ray set from Shenzhen No.3 People's "
            "Hospital: 662 PNG radiographs (326 normal, 336 TB; about 3000x3000) and clinical "
            "readings, no masks. Layout: ChinaSet_AllFiles/CXR_png/, "
            "ChinaSet_AllFiles/ClinicalReadings/. File-by-file copy: "
            "https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/"
            "Shenzhen-Hospital-CXR-Set/"
        ),
        citation=(
            f"{_NLM_ATTRIBUTION} and Shenzhen No.3 People's Hospital, Guangdong Medical "
            f"College, Shenzhen, China. {_JAEGER_2014_TMI}. {_CANDEMIR_2014}."
        ),
    ),
    RemoteDataset(
        name="shenzhen-masks",
        url=(
            "https://www.kaggle.com/api/v1/datasets/download/yoctoman/shcxr-lung-mask"
            "?datasetVersionNumber=1"
        ),
        sha256=None,
        filename="shcxr-lung-mask.zip",
        size_hint=None,
        description=(
            "Lung masks for 566 of the 662 Shenzhen radiographs (Stirenko et al. 2018), "
            "published by the authors as the Kaggle dataset yoctoman/shcxr-lung-mask "
            "(version 1). Licence CC BY-NC-SA 4.0: non-commercial use only, share alike. "
            "Masks are named CHNCXR_####_y_mask.png."
        ),
        citation=(
            f"{_STIRENKO_2018}. Masks licensed CC BY-NC-SA 4.0 "
            "(https://creativecommons.org/licenses/by-nc-sa/4.0/)."
        ),
    ),
)

#: The known datasets, by name (read-only).
REGISTRY: MappingProxyType[str, RemoteDataset] = MappingProxyType(
    {entry.name: entry for entry in _DATASETS}
)


def list_datasets() -> list[RemoteDataset]:
    """Return the registry entries, sorted by name.

    Returns
    -------
    list of RemoteDataset
        One entry per downloadable archive.
    """
    return [REGISTRY[name] for name in sorted(REGISTRY)]


def get_dataset(name: str) -> RemoteDataset:
    """Look a dataset up by name (case-insensitive; ``_`` and ``-`` are interchangeable).

    Raises
    ------
    UnknownDatasetError
        If ``name`` is not in the registry; the message lists the known names.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}")
    return REGISTRY[key]


def data_dir(dest: PathLike | None = None) -> Path:
    """Return the folder where downloads are cached.

    Parameters
    ----------
    dest
        An explicit folder; wins over everything else.

    Returns
    -------
    pathlib.Path
        ``dest`` if given, else ``$CXRLIB_DATA_DIR`` if set and non-empty, else
        ``pooch.os_cache("cxrlib")``. The folder is not created here.
    """
    if dest is not None:
        return Path(dest).expanduser()
    env_value = os.environ.get(DATA_DIR_ENV, "").strip()
    if env_value:
        return Path(env_value).expanduser()
    return Path(pooch.os_cache("cxrlib"))


# ------------------------------------------------------------------------- download


def _normalize_sha256(value: str, parameter: str = "sha256") -> str:
    """Return ``value`` as 64 lower-case hex digits (an optional ``sha256:`` prefix is ok)."""
    text = str(value).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _SHA256_RE.fullmatch(text):
        raise ValueError(
            f"{parameter} must be a sha256 checksum of 64 hexadecimal digits "
            f"(optionally prefixed 'sha256:'), got {value!r}"
        )
    return text


def _require_checksum(entry: RemoteDataset, sha256: str | None) -> str:
    """Return the checksum to verify against, or refuse to download without one."""
    if sha256 is not None:
        given = _normalize_sha256(sha256)
        if entry.sha256 is not None and given != entry.sha256:
            logger.warning(
                "dataset %r: using the caller's sha256 %s instead of the registry's %s",
                entry.name,
                given,
                entry.sha256,
            )
        return given
    if entry.sha256 is not None:
        return entry.sha256
    raise MissingChecksumError(
        f"refusing to download dataset {entry.name!r} ({entry.filename}): cxrlib has no "
        "sha256 checksum on record for it, and files are never downloaded without one. "
        "Get the archive's sha256 from a source you trust (for example a colleague's "
        "verified copy: `sha256sum "
        f"{entry.filename}`) and pass it: fetch({entry.name!r}, sha256='<64 hex digits>') "
        f"in Python, or `cxrlib download {entry.name} --sha256 <64 hex "
        "digits>` on the command line."
    )


def _tqdm_available() -> bool:
    return importlib.util.find_spec("tqdm") is not None


class _HashRecordingDownloader:
    """Wrap a pooch downloader and remember the sha256 of what it downloaded."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.actual_sha256: str | None = None

    def __call__(self, url: str, output_file: Any, pooch_obj: Any, **kwargs: Any) -> Any:
        self.actual_sha256 = None
        result = self.inner(url, output_file, pooch_obj, **kwargs)
        if isinstance(output_file, str | os.PathLike) and Path(output_file).is_file():
            self.actual_sha256 = pooch.file_hash(str(output_file), alg="sha256")
        return result


def _warn_if_low_on_space(entry: RemoteDataset, folder: Path, extract: bool) -> None:
    if entry.size_hint is None or (folder / entry.filename).is_file():
        return
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    needed = entry.size_hint * (2 if extract else 1)
    if free < needed:
        warnings.warn(
            f"dataset {entry.name!r} needs about {needed / 1e9:.1f} GB in {folder}, "
            f"but only {free / 1e9:.1f} GB are free",
            UserWarning,
            stacklevel=3,
        )


def _discard_if_bad(path: Path, expected: str) -> None:
    """Delete a cached file that does not match ``expected`` (a stale or bad copy)."""
    if path.is_file() and pooch.file_hash(str(path), alg="sha256") != expected:
        logger.warning("removing %s: its sha256 does not match %s", path, expected)
        path.unlink()


def _download(entry: RemoteDataset, url: str, expected: str, folder: Path, progress: bool) -> Path:
    """Download (or reuse) ``entry``'s archive into ``folder`` and verify it."""
    import requests

    show_bar = bool(progress) and _tqdm_available()
    downloader = _HashRecordingDownloader(choose_downloader(url, progressbar=show_bar))
    target = folder / entry.filename
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{expected}",
            fname=entry.filename,
            path=folder,
            downloader=downloader,
        )
    except ValueError as error:
        actual = downloader.actual_sha256
        if actual is not None and actual != expected:
            _discard_if_bad(target, expected)
            raise ChecksumError(entry.name, url, expected, actual) from error
        raise
    except requests.exceptions.RequestException as error:
        raise DownloadError(
            f"could not download dataset {entry.name!r} from {url}: {error}. "
            "Check the connection, or pass url= (--url) to use a mirror."
        ) from error
    return Path(path)


def fetch(
    name: str,
    *,
    dest: PathLike | None = None,
    sha256: str | None = None,
    url: str | None = None,
    progress: bool = True,
    extract: bool = True,
) -> Path:
    """Download a registered dataset (once), verify its checksum, and unpack it.

    Parameters
    ----------
    name
        Registry name, see :func:`list_datasets` (e.g. ``"montgomery"``).
    dest
        Cache folder; default ``$CXRLIB_DATA_DIR`` or ``pooch.os_cache("cxrlib")``.
    sha256
        Expected sha256 of the archive. Required where the registry has none;
        otherwise overrides the registry's.
    url
        Download from here instead of the registry URL (a mirror); the checksum
        still applies.
    progress
        Show a tqdm progress bar while downloading.
    extract
        Unpack the zip with :func:`safe_extract` and return the folder.

    Returns
    -------
    pathlib.Path
        The extracted folder ``<dest>/<archive stem>/`` (``extract=True``), or the
        archive file.

    Raises
    ------
    UnknownDatasetError, MissingChecksumError, ChecksumError, DownloadError,
    UnsafeArchiveError
        See the module docstring.
    """
    entry = get_dataset(name)
    expected = _require_checksum(entry, sha256)
    source = url if url is not None else entry.url
    folder = data_dir(dest)
    _warn_if_low_on_space(entry, folder, extract)
    archive = _download(entry, source, expected, folder, progress)
    if extract and archive.suffix.lower() == ".zip":
        return safe_extract(archive, folder, progress=progress)
    return archive


# -------------------------------------------------------------------------- extract


def is_clutter(member: str) -> bool:
    """Return True for archive clutter: ``__MACOSX/``, ``Thumbs.db``, ``.DS_Store``, ``._*``."""
    parts = [part for part in re.split(r"[/\\]", member) if part]
    if not parts:
        return False
    if any(part.lower() in _CLUTTER_DIRS for part in parts):
        return True
    base = parts[-1]
    return base.lower() in _CLUTTER_FILES or base.startswith("._")


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Return why a member is unsafe to extract, or None if it is safe."""
    name = info.filename
    if "\x00" in name:
        return "name contains a NUL byte"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if _DRIVE_RE.match(name):
        return "path starts with a drive letter"
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        return "path contains a '..' component"
    if os.name == "nt" and any(":" in part for part in parts):
        return "path contains ':' (drive or alternate data stream)"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file (device, pipe or socket)"
    return None


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[/\\]", info.filename) if part not in ("", "."))


def _plan(
    archive: zipfile.ZipFile, zip_path: Path
) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], list[str]]:
    """Check every member; return (members to extract, skipped clutter names)."""
    unsafe: list[tuple[str, str]] = []
    keep: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    skipped: list[str] = []
    for info in archive.infolist():
        reason = _unsafe_reason(info)
        if reason is not None:
            unsafe.append((info.filename, reason))
        elif is_clutter(info.filename):
            skipped.append(info.filename)
        elif _member_parts(info):
            keep.append((info, _member_parts(info)))
    if unsafe:
        raise UnsafeArchiveError(zip_path, unsafe)
    return keep, skipped


def _fingerprint(zip_path: Path, archive: zipfile.ZipFile) -> str:
    """Identify an archive's content from its central directory (cheap, no decompression)."""
    digest = hashlib.sha256(str(zip_path.stat().st_size).encode())
    for info in sorted(archive.infolist(), key=lambda item: item.filename):
        digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    return digest.hexdigest()


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / EXTRACT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(folder: Path, fingerprint: str) -> bool:
    marker = _read_marker(folder)
    return bool(marker) and marker.get("fingerprint") == fingerprint


def _check_free_space(dest: Path, needed: int, zip_path: Path) -> None:
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"extracting {zip_path} needs {needed / 1e9:.2f} GB but only "
            f"{free / 1e9:.2f} GB are free in {dest}",
        )


def _extract_members(
    archive: zipfile.ZipFile,
    members: Iterable[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    root: Path,
    zip_path: Path,
    progress: bool,
) -> None:
    """Write the (already vetted) members under ``root``."""
    members = list(members)
    bar = None
    if progress and _tqdm_available():
        from tqdm.auto import tqdm

        total = sum(info.file_size for info, _ in members)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {zip_path.name}")
    root_resolved = root.resolve()
    try:
        for info, parts in members:
            target = root.joinpath(*parts)
            if not target.resolve().is_relative_to(root_resolved):
                raise UnsafeArchiveError(zip_path, [(info.filename, "path escapes the folder")])
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            except (zipfile.BadZipFile, EOFError) as error:
                raise ArchiveError(
                    f"{zip_path}: member {info.filename!r} is corrupt ({error})"
                ) from error
            if bar is not None:
                bar.update(info.file_size)
    finally:
        if bar is not None:
            bar.close()


def _move_into_place(tmp: Path, final: Path, fingerprint: str) -> None:
    """Rename the finished temporary folder to ``final``, replacing a stale extraction."""
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process finished the same extraction first: keep theirs.
        if _is_complete(final, fingerprint):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def safe_extract(zip_path: PathLike, dest: PathLike, *, progress: bool = False) -> Path:
    """Unpack a zip archive into ``<dest>/<zip stem>/``, safely and atomically.

    Every member is checked before anything is written: absolute paths, ``..``
    components, drive letters, symbolic links and special files are refused.
    Clutter (``__MACOSX/``, ``Thumbs.db``, ``.DS_Store``, ``desktop.ini``, ``._*``)
    is skipped and listed in the log and in the marker file. Members are written
    into a hidden temporary folder next to the final one, a marker file
    (:data:`EXTRACT_MARKER`) is written last, and the folder is renamed into
    place, so an interrupted or refused extraction leaves no partial folder.
    A complete earlier extraction of the same archive is reused.

    Parameters
    ----------
    zip_path
        The zip archive.
    dest
        Parent folder of the extracted folder (created if needed).
    progress
        Show a tqdm progress bar (bytes).

    Returns
    -------
    pathlib.Path
        The extracted folder ``<dest>/<zip stem>/``.

    Raises
    ------
    FileNotFoundError
        If ``zip_path`` does not exist.
    ArchiveError
        If it is not a readable zip archive or a member is corrupt.
    UnsafeArchiveError
        If any member is unsafe (nothing is written).
    FileExistsError
        If ``<dest>/<zip stem>/`` exists but was not made by this function.
    """
    zip_path = Path(zip_path)
    dest = Path(dest)
    if not zip_path.is_file():
        raise FileNotFoundError(errno.ENOENT, "zip archive does not exist", str(zip_path))
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{zip_path}: not a readable zip archive ({error})") from error
    with archive:
        members, skipped = _plan(archive, zip_path)
        fingerprint = _fingerprint(zip_path, archive)
        final = dest / zip_path.stem
        if final.exists():
            if _is_complete(final, fingerprint):
                logger.info("reusing complete extraction %s", final)
                return final
            if _read_marker(final) is None:
                raise FileExistsError(
                    errno.EEXIST,
                    f"cannot extract {zip_path.name}: the folder exists but was not "
                    "extracted by cxrlib (no marker file); remove or rename it, or choose "
                    "another dest",
                    str(final),
                )
            logger.info("%s holds an older extraction; extracting again", final)
        dest.mkdir(parents=True, exist_ok=True)
        _check_free_space(dest, sum(info.file_size for info, _ in members), zip_path)
        tmp = dest / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
        tmp.mkdir()
        try:
            _extract_members(archive, members, tmp, zip_path, progress)
            marker = {
                "archive": zip_path.name,
                "fingerprint": fingerprint,
                "members": len(members),
                "bytes": sum(info.file_size for info, _ in members),
                "skipped": skipped,
            }
            (tmp / EXTRACT_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            _move_into_place(tmp, final, fingerprint)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        logger.info("skipped %d clutter member(s) of %s: %s", len(skipped), zip_path, shown)
    logger.info("extracted %d member(s) of %s into %s", len(members), zip_path, final)
    return final


# ------------------------------------------------------------------------------ CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cxrlib.data.download",
        description="List, download and unpack the public chest X-ray datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the known datasets")
    get = commands.add_parser("fetch", help="download, verify and unpack a dataset")
    get.add_argument("name", help="dataset name (see 'list')")
    get.add_argument("--dest", help=f"cache folder (default ${DATA_DIR_ENV} or the user cache)")
    get.add_argument("--sha256", help="expected sha256 of the archive")
    get.add_argument("--url", help="download from this mirror instead")
    get.add_argument("--no-extract", action="store_true", help="keep the zip only")
    get.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 refused or failed)."""
    args = _build_parser().parse_args(argv)
    if args.command == "list":
        for entry in list_datasets():
            checksum = entry.sha256 or "none on record (pass --sha256)"
            sys.stdout.write(
                f"{entry.name}\n  file: {entry.filename} ({entry.size_text})\n"
                f"  url: {entry.url}\n  sha256: {checksum}\n  cite: {entry.citation}\n"
            )
        return 0
    try:
        path = fetch(
            args.name,
            dest=args.dest,
            sha256=args.sha256,
            url=args.url,
            progress=not args.no_progress,
            extract=not args.no_extract,
        )
    except (ValueError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
