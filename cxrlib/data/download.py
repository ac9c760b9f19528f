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
  (:class:`UnsafeArchiveError`; :func:`fetch` then deletes the refused archive from the
  cache), skips clutter such as ``__MACOSX/`` and ``Thumbs.db``, and is atomic: it
  unpacks into a hidden temporary folder and renames it into place only when complete;
* a downloaded archive gets an ordinary file's mode (``0o666`` less the umask).

Extraction lives in :mod:`cxrlib.data.archive` (its names are re-exported here).
Command line: ``cxrlib download list`` and
``cxrlib download NAME [--sha256 HEX] [--dest DIR] [--url URL] [--no-extract]``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pooch
from pooch.downloaders import choose_downloader

from cxrlib.atomic import default_file_mode
from cxrlib.data.archive import (
    EXTRACT_MARKER,
    ArchiveError,
    UnsafeArchiveError,
    is_clutter,
    safe_extract,
)
from cxrlib.runs import sha256_file

__all__ = [
    "DATA_DIR_ENV",
    "EXTRACT_MARKER",
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
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Environment variable that overrides the cache folder.
DATA_DIR_ENV = "CXRLIB_DATA_DIR"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


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
            self.actual_sha256 = sha256_file(output_file)
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
    if path.is_file() and sha256_file(path) != expected:
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
    _make_readable(archive)
    if extract and archive.suffix.lower() == ".zip":
        try:
            return safe_extract(archive, folder, progress=progress)
        except UnsafeArchiveError as error:
            # The bytes are the ones the checksum names, so the source itself is unsafe:
            # keeping the archive would only offer it again to the next extraction.
            archive.unlink(missing_ok=True)
            raise UnsafeArchiveError(
                archive,
                error.reasons,
                "nothing was extracted and the archive was deleted from the cache (its "
                "checksum matched, so the file itself is unsafe: get it from another source)",
            ) from None
    return archive


def _make_readable(path: Path) -> None:
    """Give a downloaded file an ordinary file's mode (pooch leaves ``mkstemp``'s 0600)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) == 0o600:
            path.chmod(default_file_mode())
    except OSError as error:  # a read-only cache, someone else's file: keep it as it is
        logger.debug("cannot change the mode of %s: %s", path, error)
