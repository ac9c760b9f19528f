"""Unpack zip archives safely and atomically (the datasets' downloads).

:func:`safe_extract` checks every member before anything is written (absolute paths,
``..`` components, drive letters, links and special files are refused with
:class:`UnsafeArchiveError`: no "zip slip"), skips clutter such as ``__MACOSX/`` and
``Thumbs.db`` (:func:`is_clutter`), and unpacks into a hidden temporary folder that is
renamed into place only when complete, with a marker file (:data:`EXTRACT_MARKER`) that
lets a later call reuse a complete extraction.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EXTRACT_MARKER",
    "ArchiveError",
    "UnsafeArchiveError",
    "safe_extract",
    "is_clutter",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Name of the marker file written last into a completely extracted folder.
EXTRACT_MARKER = ".cxrlib-extracted.json"

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CLUTTER_DIRS = frozenset({"__macosx"})
_CLUTTER_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})


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
    reasons
        ``(member, reason)`` of every offending member.
    """

    def __init__(
        self,
        archive: PathLike,
        members: Sequence[tuple[str, str]],
        outcome: str = "nothing was extracted",
    ) -> None:
        self.archive = Path(archive)
        self.reasons = [(name, reason) for name, reason in members]
        self.members = [name for name, _ in members]
        first, reason = members[0]
        more = f" (and {len(members) - 1} more unsafe member(s))" if len(members) > 1 else ""
        super().__init__(
            f"{self.archive}: refusing to extract unsafe member {first!r}: {reason}{more}; "
            f"{outcome}"
        )


def _tqdm_available() -> bool:
    return importlib.util.find_spec("tqdm") is not None


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
