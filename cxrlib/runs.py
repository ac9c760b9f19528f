"""The load-or-train run store shared by segmentation and TB runs.

A run folder holds what one training produced plus ``key.json``: the hash of everything
that determines the result (what was trained, a format version, the configuration and the
identity of every data file). A second call with the same key reuses the folder; a
different key is refused unless the caller overwrites, and the refusal says what differs.
Every file is written atomically (:mod:`cxrlib.atomic`), so an interrupted run never
leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.atomic import atomic_write_bytes

__all__ = [
    "hash_key",
    "json_default",
    "finite",
    "write_json",
    "read_json",
    "write_text",
    "write_csv",
    "file_identity",
    "sha256_file",
    "data_identity",
    "run_key",
    "differences",
    "clear_run",
    "remove_stale_temporaries",
    "versions",
]


def hash_key(inputs: Any) -> str:
    """Return the SHA-256 hex digest of ``inputs`` serialized as canonical JSON.

    ``inputs`` must be JSON-serializable (dicts, lists, strings, numbers, booleans,
    None); dict keys are sorted so the key does not depend on insertion order.
    """
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays, paths, tuples and sets."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NaN and infinities become null)."""
    text = json.dumps(finite(data), indent=2, default=json_default, allow_nan=False)
    write_text(path, text + "\n")


def write_csv(path: str | os.PathLike[str], table: pd.DataFrame) -> None:
    """Write a table as CSV (no index) atomically."""
    write_text(path, table.to_csv(index=False))


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_identity(path: str | os.PathLike[str]) -> list[Any]:
    """``[absolute path, size, modification time in ns]`` of a file (cheap to compute)."""
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _paths(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)] if os.fspath(value) else []
    return [os.fspath(v) for v in value if v is not None and str(v)]


def data_identity(table: pd.DataFrame, *, masks: bool = True) -> list[list[Any]]:
    """``[id, site, label, image identity, mask identities]`` of every row, sorted by id.

    Parameters
    ----------
    table : pandas.DataFrame
        A dataset table (columns ``id``, ``site``, ``label``, ``image_path`` and, when
        ``masks``, ``mask_path`` holding a path, a list of paths or nothing).
    masks : bool, default True
        Include the mask files.

    Raises
    ------
    ValueError
        When a listed file cannot be read (the message names it).
    """
    rows = []
    for row in table.sort_values("id", key=lambda s: s.astype(str)).itertuples(index=False):
        label = None if pd.isna(row.label) else int(row.label)
        try:
            image = file_identity(row.image_path)
            mask_ids = [file_identity(p) for p in _paths(row.mask_path)] if masks else []
        except OSError as error:
            raise ValueError(f"cannot read the data file {error.filename}: {error}") from error
        rows.append([str(row.id), str(row.site), label, image, mask_ids])
    return rows


def run_key(
    what: str,
    format_version: int,
    config: Mapping[str, Any],
    table: pd.DataFrame,
    *,
    masks: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """The key of a run: its inputs and their hash under ``"key"``.

    Parameters
    ----------
    what : str
        The function that trains (``"cxrlib.seg.train.train_segmentation"``).
    format_version : int
        Bumped when the run's files or procedure change (old runs get a new key).
    config : mapping
        The run's JSON-serialisable configuration.
    table : pandas.DataFrame
        The data it trains on (:func:`data_identity`).
    masks : bool
        Whether the mask files are part of the data identity.
    **extra
        Further inputs (e.g. the segmentation model a TB run used).

    Returns
    -------
    dict
        ``{"key": sha256, "what", "format", "config", "data_sha256", "n_images", **extra}``.
    """
    inputs = {
        "what": what,
        "format": format_version,
        "config": json.loads(json.dumps(dict(config), default=json_default)),
        "data_sha256": hash_key(data_identity(table, masks=masks)),
        "n_images": len(table),
        **extra,
    }
    return {"key": hash_key(inputs), **inputs}


def differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """What differs between two run keys, in words, for an error message."""
    if not old:
        return "no readable key.json"
    parts = []
    old_cfg, new_cfg = old.get("config") or {}, new.get("config") or {}
    for name in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(name) != new_cfg.get(name):
            parts.append(f"{name}: {old_cfg.get(name)!r} -> {new_cfg.get(name)!r}")
    if old.get("data_sha256") != new.get("data_sha256"):
        parts.append(
            f"data files changed ({old.get('n_images')} -> {new.get('n_images')} images, "
            "or other paths, sizes or modification times)"
        )
    if old.get("format") != new.get("format"):
        parts.append(f"format {old.get('format')} -> {new.get('format')}")
    for name in sorted(set(old) | set(new)):
        if name in {"key", "what", "format", "config", "data_sha256", "n_images"}:
            continue
        if old.get(name) != new.get(name):
            parts.append(f"another {name}")
    return "; ".join(parts) or "unknown difference"


def clear_run(
    run_dir: str | os.PathLike[str], files: Iterable[str], folders: Sequence[str] = ()
) -> None:
    """Delete a run's own files and folders (nothing else in ``run_dir``)."""
    run_dir = Path(run_dir)
    for name in files:
        (run_dir / name).unlink(missing_ok=True)
    for name in folders:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def remove_stale_temporaries(run_dir: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete what interrupted atomic writes of ``names`` left in ``run_dir``; return them.

    :func:`cxrlib.atomic.atomic_write` writes ``.NAME.XXXXXXXX<suffix>`` next to ``NAME``
    and renames it; a process killed before the rename leaves that hidden file behind.
    Call this only while no other process writes into ``run_dir`` (hold its
    :func:`cxrlib.lock.run_lock`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    patterns = [re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}") for name in names]
    removed = []
    for entry in run_dir.iterdir():
        if entry.name.startswith(".") and any(p.match(entry.name) for p in patterns):
            if entry.is_file() or entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return sorted(removed)


def versions(*packages: str, backend: bool = True) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out), and the Keras backend.

    With ``backend`` (the default) and ``keras`` among the packages, the active Keras
    backend is added under ``"backend"`` (this imports Keras).
    """
    found: dict[str, str] = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    if backend and "keras" in found:
        try:
            import keras

            found["backend"] = keras.backend.backend()
        except ImportError:  # pragma: no cover
            pass
    return found
