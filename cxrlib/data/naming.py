"""Parse radiograph and mask file names.

The two NLM tuberculosis sets name their radiographs ``MCUCXR_####_y`` (Montgomery
County, USA) and ``CHNCXR_####_y`` (Shenzhen, China), where ``y`` is the label
(0 normal, 1 tuberculosis). Lung masks carry the image's own name, or, for the
Shenzhen community masks, the image name plus a ``_mask`` suffix::

    >>> name = parse_name("CHNCXR_0327_1_mask.png")
    >>> name.id, name.site, name.label, name.is_renamed_mask
    ('CHNCXR_0327_1', 'shenzhen', 1, True)

:func:`parse_name` accepts only these two patterns; :func:`parse_generic_name`
accepts any name (for a plain ``images/`` + ``masks/`` folder pair).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePath

__all__ = ["SITE_PREFIXES", "SITES", "ParsedName", "parse_name", "parse_generic_name"]

#: File-name prefix of each site's radiographs.
SITE_PREFIXES: dict[str, str] = {"MCUCXR": "montgomery", "CHNCXR": "shenzhen"}
#: Every site value used by cxrlib, in table order.
SITES: tuple[str, ...] = ("montgomery", "shenzhen", "unknown")

_STRICT = re.compile(r"^(?P<prefix>MCUCXR|CHNCXR)_(?P<number>\d+)_(?P<label>[01])$", re.IGNORECASE)
_MASK_SUFFIX = re.compile(r"_mask$", re.IGNORECASE)
_TRAILING_LABEL = re.compile(r"_(?P<label>[01])$")
_GENERIC_SITES = (("CHN", "shenzhen"), ("MC", "montgomery"))


@dataclass(frozen=True)
class ParsedName:
    """What a file name says about a radiograph.

    Attributes
    ----------
    id
        The radiograph's identifier: the image stem (``"MCUCXR_0001_0"``), also for
        its mask (``"CHNCXR_0327_1_mask.png"`` -> ``"CHNCXR_0327_1"``).
    site
        ``"montgomery"``, ``"shenzhen"`` or ``"unknown"``.
    label
        0 (normal), 1 (tuberculosis) or None when the name carries no label.
    is_renamed_mask
        True when the name carries the ``_mask`` suffix.
    key
        The id without its label (``"CHNCXR_0327"``): an image and a mask with the
        same key but different labels disagree about the label. For generic names
        the key is the id itself.
    """

    id: str
    site: str
    label: int | None
    is_renamed_mask: bool
    key: str


def _stem(filename: str | os.PathLike[str]) -> str:
    """Return the file name without folders and without its last suffix."""
    return PurePath(PurePath(os.fspath(filename)).name).stem.strip()


def _strip_mask_suffix(stem: str) -> tuple[str, bool]:
    stripped = _MASK_SUFFIX.sub("", stem)
    return stripped, stripped != stem


def parse_name(filename: str | os.PathLike[str]) -> ParsedName | None:
    """Parse a Montgomery (``MCUCXR_####_y``) or Shenzhen (``CHNCXR_####_y``) name.

    Parameters
    ----------
    filename
        A file name or path (folders are ignored), with any suffix (``.png``,
        ``.PNG``, ``.txt``, ``.dcm``). An optional ``_mask`` suffix (any case)
        marks a renamed mask.

    Returns
    -------
    ParsedName or None
        None when the name does not follow either pattern. The id always uses
        the upper-case prefix (``mcucxr_0001_0.png`` -> ``"MCUCXR_0001_0"``).
    """
    stem, renamed = _strip_mask_suffix(_stem(filename))
    match = _STRICT.match(stem)
    if match is None:
        return None
    prefix = match["prefix"].upper()
    key = f"{prefix}_{match['number']}"
    return ParsedName(
        id=f"{key}_{match['label']}",
        site=SITE_PREFIXES[prefix],
        label=int(match["label"]),
        is_renamed_mask=renamed,
        key=key,
    )


def parse_generic_name(filename: str | os.PathLike[str]) -> ParsedName:
    """Parse any image name leniently (plain ``images/`` + ``masks/`` layouts).

    Parameters
    ----------
    filename
        A file name or path (folders are ignored).

    Returns
    -------
    ParsedName
        Montgomery/Shenzhen names parse as in :func:`parse_name`. Otherwise the id
        is the stem without a ``_mask`` suffix; the site is ``"shenzhen"`` for a
        ``CHN`` prefix, ``"montgomery"`` for an ``MC`` prefix (upper case) and
        ``"unknown"`` otherwise; the label comes from a trailing ``_0``/``_1``
        when present, else None.

    Raises
    ------
    ValueError
        If the name is empty (nothing left once the suffix is removed).
    """
    strict = parse_name(filename)
    if strict is not None:
        return strict
    stem, renamed = _strip_mask_suffix(_stem(filename))
    if not stem:
        raise ValueError(f"cannot parse an empty file name: {os.fspath(filename)!r}")
    site = next((s for prefix, s in _GENERIC_SITES if stem.startswith(prefix)), "unknown")
    match = _TRAILING_LABEL.search(stem)
    label = int(match["label"]) if match else None
    return ParsedName(id=stem, site=site, label=label, is_renamed_mask=renamed, key=stem)
