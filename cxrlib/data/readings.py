"""Parse the clinical readings that come with the Montgomery and Shenzhen sets.

Each radiograph of the official sets has a small text file in ``ClinicalReadings/``
with the patient's sex and age and the radiologist's finding. The two sites write
them differently:

Montgomery (``MCUCXR_0001_0.txt``)::

    Patient's Sex: F
    Patient's Age: 047Y
    normal

Shenzhen (``CHNCXR_0001_0.txt``)::

    male 35yrs
    PTB in the left upper field

A reading is free text written by people, so parsing never fails: a field that
cannot be understood becomes None and the rest is kept as the finding.

    >>> parse_reading("Patient's Sex: F\\nPatient's Age: 047Y\\nnormal")
    Reading(sex='F', age=47.0, reading='normal')
    >>> parse_reading("female, 45yr\\nPTB in the left upper field")
    Reading(sex='F', age=45.0, reading='PTB in the left upper field')
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cxrlib.errors import CxrlibError

__all__ = [
    "READING_FORMATS",
    "Reading",
    "ReadingError",
    "detect_format",
    "parse_age",
    "parse_reading",
    "parse_sex",
    "read_reading_file",
]

#: The two reading formats, named after the site that writes them.
READING_FORMATS: tuple[str, ...] = ("montgomery", "shenzhen")

#: Oldest age accepted as plausible; larger numbers are treated as unreadable.
_MAX_AGE_YEARS = 130.0

_UNIT_DIVISORS: dict[str, float] = {
    **dict.fromkeys(("", "y", "yr", "yrs", "year", "years", "yo", "y/o", "a"), 1.0),
    **dict.fromkeys(("m", "mo", "mos", "mon", "mons", "mth", "mths", "month", "months"), 12.0),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 365.25 / 7.0),
    **dict.fromkeys(("d", "day", "days"), 365.25),
}
_SEX_WORDS: dict[str, str] = {
    **dict.fromkeys(("m", "male", "man", "boy"), "M"),
    **dict.fromkeys(("f", "female", "femal", "woman", "girl"), "F"),
}

_KEY_SEX = re.compile(r"^\s*(?:patient['’`]?s?\s*)?sex\s*[:=]\s*(?P<value>.*)$", re.IGNORECASE)
_KEY_AGE = re.compile(r"^\s*(?:patient['’`]?s?\s*)?age\s*[:=]\s*(?P<value>.*)$", re.IGNORECASE)
_AGE_VALUE = re.compile(
    r"^\s*(?P<num>\d+(?:[.,]\d+)?)\s*-?\s*(?P<unit>[a-z/]*)\.?(?:[\s-]*old)?\s*$", re.IGNORECASE
)

_SEX = r"(?P<sex>female|femal|woman|girl|male|man|boy|f|m)"
_UNIT = r"years?|yrs?|y/o|yo|y|months?|mons?|mths?|mos?|m|weeks?|wks?|w|days?|d"
_AGE = rf"(?P<num>\d{{1,3}}(?:\.\d+)?)[\s-]*(?:(?P<unit>{_UNIT})\b\.?(?:[\s-]*old\b)?)?"
_SEP = r"[\s,;:.\-/]*"
#: Shenzhen header, sex first: ``male 35yrs``, ``female, 45yr``, ``Male  8 months``, ``F``.
_HEADER_SEX_FIRST = re.compile(rf"^{_SEX}\b{_SEP}(?:{_AGE}(?![\w.]))?{_SEP}", re.IGNORECASE)
#: Shenzhen header, age first: ``35yrs male``, ``45 yrs, female``.
_HEADER_AGE_FIRST = re.compile(rf"^{_AGE}{_SEP}{_SEX}\b{_SEP}", re.IGNORECASE)
#: Shenzhen header without sex: ``35yrs`` (a unit is required, so ``2 nodules`` is no age).
_HEADER_AGE_ONLY = re.compile(rf"^{_AGE}(?![\w.]){_SEP}", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """A parsed clinical reading.

    Attributes
    ----------
    sex
        ``"M"``, ``"F"`` or None (missing, ``O``ther or unreadable).
    age
        Age in years (months, weeks and days converted to a fraction of a year),
        or None when missing or unreadable.
    reading
        The finding (``"normal"``, ``"PTB in the left upper field"``...), its lines
        joined with single spaces; ``""`` when the file has no finding.
    """

    sex: str | None
    age: float | None
    reading: str


class ReadingError(CxrlibError, ValueError):
    """A clinical-reading file could not be read; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def parse_sex(value: str | None) -> str | None:
    """Normalise a sex field (``"F"``, ``"male"``, ``"Female "``) to ``"M"``/``"F"``/None.

    ``O`` (other), empty and unrecognised values give None.
    """
    if value is None:
        return None
    word = value.strip().strip(".,;:").lower()
    return _SEX_WORDS.get(word)


def _age_in_years(number: str, unit: str | None) -> float | None:
    unit = (unit or "").lower().rstrip(".")
    divisor = _UNIT_DIVISORS.get(unit)
    if divisor is None:
        return None
    years = float(number.replace(",", ".")) / divisor
    return years if 0.0 <= years <= _MAX_AGE_YEARS else None


def parse_age(value: str | None) -> float | None:
    """Parse an age field to years.

    Parameters
    ----------
    value
        ``"047Y"``, ``"47Y"``, ``"047M"`` (months), ``"35yrs"``, ``"8 months"``,
        ``"2 weeks"``, ``"10d"``, ``"47"`` (years), or None/empty.

    Returns
    -------
    float or None
        The age in years (``"006M"`` -> 0.5); None when missing, unreadable or
        implausible (above 130 years).
    """
    if value is None:
        return None
    match = _AGE_VALUE.match(value)
    if match is None:
        return None
    return _age_in_years(match["num"], match["unit"])


def _clean_lines(text: str) -> list[str]:
    """Split text into whitespace-normalised, non-empty lines."""
    text = text.replace("\ufeff", "").replace("\x00", "")
    lines = (" ".join(line.split()) for line in text.splitlines())
    return [line for line in lines if line]


def detect_format(text: str) -> str:
    """Return ``"montgomery"`` when the text has ``Sex:``/``Age:`` lines, else ``"shenzhen"``."""
    for line in _clean_lines(text):
        if _KEY_SEX.match(line) or _KEY_AGE.match(line):
            return "montgomery"
    return "shenzhen"


def _parse_montgomery(lines: list[str]) -> Reading:
    sex: str | None = None
    age: float | None = None
    findings: list[str] = []
    for line in lines:
        if (match := _KEY_SEX.match(line)) is not None:
            sex = parse_sex(match["value"])
        elif (match := _KEY_AGE.match(line)) is not None:
            age = parse_age(match["value"])
        else:
            findings.append(line)
    return Reading(sex=sex, age=age, reading=" ".join(findings))


def _match_header(line: str) -> re.Match[str] | None:
    """Match a Shenzhen header (sex and/or age) at the start of ``line``, or None."""
    for pattern in (_HEADER_SEX_FIRST, _HEADER_AGE_FIRST, _HEADER_AGE_ONLY):
        match = pattern.match(line)
        if match is None:
            continue
        groups = match.groupdict()
        has_age = groups.get("num") is not None
        sex_word = (groups.get("sex") or "").lower()
        if pattern is _HEADER_AGE_ONLY and not groups.get("unit"):
            continue  # a bare number ("2 nodules") is not an age
        if len(sex_word) == 1 and not has_age and match.end() < len(line):
            continue  # a lone "M"/"F" followed by text is a finding, not a header
        return match
    return None


def _parse_shenzhen(lines: list[str]) -> Reading:
    if not lines:
        return Reading(sex=None, age=None, reading="")
    match = _match_header(lines[0])
    if match is None:
        return Reading(sex=None, age=None, reading=" ".join(lines))
    groups = match.groupdict()
    sex = parse_sex(groups.get("sex"))
    age = _age_in_years(groups["num"], groups.get("unit")) if groups.get("num") else None
    rest = lines[0][match.end() :].strip()
    findings = ([rest] if rest else []) + lines[1:]
    return Reading(sex=sex, age=age, reading=" ".join(findings))


def parse_reading(text: str, site: str | None = None) -> Reading:
    """Parse the text of a clinical-reading file.

    Parameters
    ----------
    text
        The file's text (any line endings; a BOM is ignored).
    site
        ``"montgomery"`` or ``"shenzhen"`` to force that format; None (or
        ``"unknown"``) detects it: text with ``Patient's Sex:``/``Patient's Age:``
        lines is Montgomery, anything else Shenzhen.

    Returns
    -------
    Reading
        Sex, age in years and the finding text. Fields that cannot be parsed
        are None; this function does not raise for odd text.

    Raises
    ------
    ValueError
        If ``site`` is not one of the accepted values.
    """
    if site not in (None, "unknown", *READING_FORMATS):
        raise ValueError(f"site must be one of {READING_FORMATS} or None (detect), got {site!r}")
    lines = _clean_lines(text)
    fmt = detect_format(text) if site in (None, "unknown") else site
    if fmt == "montgomery":
        return _parse_montgomery(lines)
    return _parse_shenzhen(lines)


def _decode(data: bytes) -> str:
    """Decode a reading: UTF-16 (with BOM), UTF-8 (BOM optional), else Latin-1."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_reading_file(path: str | os.PathLike[str], site: str | None = None) -> Reading:
    """Read and parse one clinical-reading file.

    Parameters
    ----------
    path
        A ``.txt`` reading, UTF-8 (or UTF-16 with a BOM); Latin-1 is used when
        the bytes are not valid UTF-8.
    site
        Passed to :func:`parse_reading` (None detects the format).

    Returns
    -------
    Reading

    Raises
    ------
    ReadingError
        If the file is missing, a folder, unreadable, or binary (NUL bytes).
    """
    path = Path(path)
    if path.is_dir():
        raise ReadingError(path, "is a folder, not a clinical-reading text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ReadingError(path, "file does not exist") from error
    except OSError as error:
        raise ReadingError(path, f"cannot be read ({error.strerror or error})") from error
    text = _decode(data)
    if "\x00" in text:
        raise ReadingError(path, "contains NUL bytes: a binary file, not a text reading")
    return parse_reading(text, site=site)
