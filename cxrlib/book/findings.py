"""What the clinical readings say: keyword families, their frequency per label, demographics.

The Montgomery and Shenzhen readings describe each radiograph in a few words of free text
(``"PTB in the left upper field"``, ``"Bilateral upper lobe cavitary lesions"``,
``"STB,ATB,tuberculosis pleuritis"``, ``"normal"``). This module groups the words that
radiologists use for the same finding into *keyword families* (``cavity`` covers cavity,
cavities, cavitary, cavitation, fibrocavitary...) and counts, per label, how many readings
mention each family.

Matching is case-insensitive and ignores a mention in the scope of a simple negation
(``"no effusion"``, ``"without cavitation"``): the scope starts at the negation word and ends
at ``.``/``;``/``:``, at a word such as *but* or *however*, at a numbered item, or after six
words. This is a heuristic in the spirit of NegEx, good enough for short readings; it does not
understand uncertainty (``"possible cavity"`` counts as a cavity).

    >>> find_keywords("PTB in the left upper field, no effusion")
    ['upper zone', 'TB named']
    >>> find_keywords("Bilateral upper lobe cavitary lesions")
    ['upper zone', 'cavity', 'bilateral']

The functions take the tidy table of :func:`cxrlib.data.datasets.scan_dataset` (or its
``reading`` and ``label`` columns) and return pandas objects and numbers that chapter 5 plots
and quotes. Folders without readings (such as the "Chest Xray Masks and Labels" compilation)
give empty tables with the usual columns, or NaN.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "KEYWORD_FAMILIES",
    "KEYWORD_COLUMNS",
    "AGE_COLUMNS",
    "SEX_COLUMNS",
    "LABEL_NAMES",
    "compile_families",
    "find_keywords",
    "keyword_matrix",
    "keyword_table",
    "readings_per_label",
    "has_readings",
    "reading_count",
    "age_summary",
    "sex_proportions",
    "demographics",
    "pick_by_site_and_label",
]

#: Display name of each label value.
LABEL_NAMES: dict[int, str] = {0: "normal", 1: "TB"}

#: Keyword families: display name -> regular expression (matched case-insensitively).
#: Word forms are spelled out so that, e.g., ``concavity`` is no cavity and ``abnormal``
#: no ``normal``.
KEYWORD_FAMILIES: dict[str, str] = {
    "upper zone": r"\bupper\b|\bapic(?:al|es)\b|\bapex\b|\b[rl]ul\b",
    "middle zone": r"\bmid(?:dle)?\b|\bmid-?(?:lung|zone|field)s?\b|\brml\b|\blingula\w*",
    "lower zone": r"\blower\b|\bbas(?:e|es|al|ilar)\b|\b[rl]ll\b",
    "cavity": r"(?<!con)cavit(?:y|ies|ary|ation|ations|ating|ated)\b",
    "pleural effusion": (
        r"\beffusions?\b|\bhydrothorax\b|\bpleural\s+fluid\b"
        r"|\bblunt\w*\s+(?:\w+\s+){0,3}costophrenic|\bcostophrenic\s+(?:\w+\s+){0,2}blunt\w*"
    ),
    "pleural thickening / pleuritis": (
        r"\bpleur(?:isy|itis|itic)\b|\bpleural\s+(?:thickening|reaction|adhesions?)\b"
        r"|\bthickened\s+pleura\b"
    ),
    "miliary": r"\bmiliary\b",
    "nodule": r"nodul(?:e|es|ar|arity)\b",
    "infiltrate": r"\binfiltrat(?:e|es|ed|ion|ions|ive)\b",
    "opacity": r"\bopaci(?:ty|ties|fication|fications|fied)\b",
    "fibrosis / scarring": r"\bfibro\w*|\bscar(?:s|ring|red)?\b",
    "calcification": r"calcif(?:ied|ication|ications|ic|y|ies)\b",
    "consolidation": r"\bconsolidat(?:ion|ions|ed|ive|ing)\b",
    "bilateral": (
        r"\bbilateral(?:ly)?\b|\bbi-?apical\b"
        r"|\bboth\s+(?:lungs?|sides|hemithora\w*|(?:upper|middle|mid|lower)\s+\w+)\b"
    ),
    "TB named": r"\b(?:[psam]?tb|tuberculo(?:sis|us|ma|mas))\b",
}

#: Columns of :func:`keyword_table` (the index is the family name).
KEYWORD_COLUMNS: tuple[str, ...] = ("n_tb", "pct_tb", "n_normal", "pct_normal")
#: Columns of :func:`age_summary` (the index is ``(site, label)``).
AGE_COLUMNS: tuple[str, ...] = ("n", "mean", "median", "q1", "q3")
#: Columns of :func:`sex_proportions` (the index is ``(site, label)``).
SEX_COLUMNS: tuple[str, ...] = ("n", "n_female", "n_male", "female", "male")

_NEGATION = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of)\b", re.IGNORECASE
)
_SCOPE_END = re.compile(
    r"[.;:!?\n]|\b(?:but|however|although|though|except|while|whereas)\b|\b\d+\s*[.,)]",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)
_NEGATION_WINDOW_WORDS = 6


def compile_families(families: Mapping[str, str] | None = None) -> dict[str, re.Pattern[str]]:
    """Compile keyword families to case-insensitive patterns.

    Parameters
    ----------
    families
        Display name -> regular expression; None uses :data:`KEYWORD_FAMILIES`.

    Raises
    ------
    ValueError
        If ``families`` is empty or a pattern is not a valid regular expression (the
        message names the family).
    """
    families = KEYWORD_FAMILIES if families is None else families
    if not families:
        raise ValueError("families must name at least one keyword family")
    compiled = {}
    for name, pattern in families.items():
        if isinstance(pattern, re.Pattern):
            pattern = pattern.pattern
        try:
            compiled[str(name)] = re.compile(pattern, re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"keyword family {name!r}: invalid pattern ({error})") from error
    return compiled


def _is_negated(text: str, start: int) -> bool:
    """True when the position ``start`` lies in the scope of a negation word."""
    scope_start = 0
    for end in _SCOPE_END.finditer(text, 0, start):
        scope_start = end.end()
    cues = list(_NEGATION.finditer(text, scope_start, start))
    if not cues:
        return False
    between = text[cues[-1].end() : start]
    return len(_WORD.findall(between)) < _NEGATION_WINDOW_WORDS


def _as_text(reading: object) -> str:
    if reading is None or (isinstance(reading, float) and np.isnan(reading)):
        return ""
    if reading is pd.NA:
        return ""
    return str(reading)


def find_keywords(reading: str | None, families: Mapping[str, str] | None = None) -> list[str]:
    """Return the keyword families that a reading mentions (and does not negate).

    Parameters
    ----------
    reading
        The finding text; None or ``""`` mention nothing.
    families
        Display name -> regular expression; None uses :data:`KEYWORD_FAMILIES`.

    Returns
    -------
    list of str
        Family names, in the order of ``families``.
    """
    text = _as_text(reading)
    patterns = compile_families(families)
    found = []
    for name, pattern in patterns.items():
        if any(not _is_negated(text, match.start()) for match in pattern.finditer(text)):
            found.append(name)
    return found


def keyword_matrix(
    readings: Iterable[str | None], families: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Flag, for every reading, the keyword families it mentions.

    Parameters
    ----------
    readings
        Finding texts (a pandas Series keeps its index); None/NaN/``""`` flag nothing.
    families
        Display name -> regular expression; None uses :data:`KEYWORD_FAMILIES`.

    Returns
    -------
    pandas.DataFrame
        ``bool``, shape ``(N, F)``: one row per reading, one column per family.
    """
    patterns = compile_families(families)
    index = readings.index if isinstance(readings, pd.Series) else None
    texts = [_as_text(r) for r in readings]
    rows = [
        [any(not _is_negated(t, m.start()) for m in p.finditer(t)) for p in patterns.values()]
        for t in texts
    ]
    array = np.array(rows, dtype=bool).reshape(len(texts), len(patterns))
    return pd.DataFrame(array, columns=list(patterns), index=index)


def _clean_labels(labels: Iterable[object], n: int, name: str = "labels") -> np.ndarray:
    """Labels as an object array of 0, 1 or None; raises for other values or lengths."""
    values = list(labels)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but readings has {n}")
    out = np.empty(n, dtype=object)
    for index, value in enumerate(values):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            out[index] = None
        elif value in (0, 1):
            out[index] = int(value)
        else:
            raise ValueError(f"{name}[{index}] is {value!r}: labels must be 0, 1 or missing")
    return out


def _has_text(readings: Sequence[object]) -> np.ndarray:
    return np.array([bool(_as_text(r).strip()) for r in readings], dtype=bool)


def readings_per_label(readings: Iterable[str | None], labels: Iterable[object]) -> dict[str, int]:
    """Count the non-empty readings of each label.

    Returns
    -------
    dict
        ``{"TB": n_tb, "normal": n_normal}``.
    """
    texts = list(readings)
    label_array = _clean_labels(labels, len(texts))
    present = _has_text(texts)
    return {
        "TB": int(sum(present & (label_array == 1))),
        "normal": int(sum(present & (label_array == 0))),
    }


def keyword_table(
    readings: Iterable[str | None],
    labels: Iterable[object],
    *,
    families: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """How often each keyword family occurs among TB and normal readings.

    Parameters
    ----------
    readings
        Finding texts, one per radiograph (e.g. ``table["reading"]``). Missing or empty
        readings are left out of the counts and of the denominators.
    labels
        Label of each radiograph: 1 TB, 0 normal, None/NA unknown (left out).
    families
        Display name -> regular expression; None uses :data:`KEYWORD_FAMILIES`.

    Returns
    -------
    pandas.DataFrame
        Index ``family`` (in the order of ``families``); columns ``n_tb`` and ``n_normal``
        (``int``: readings of that label that mention the family) and ``pct_tb``,
        ``pct_normal`` (``float``: the same as a percentage of that label's readings; NaN
        when the label has no reading). Zero rows, with these columns, when no radiograph
        has both a reading and a label.

    Raises
    ------
    ValueError
        If ``readings`` and ``labels`` differ in length or a label is not 0, 1 or missing.
    """
    texts = list(readings)
    label_array = _clean_labels(labels, len(texts))
    keep = _has_text(texts) & np.array([v is not None for v in label_array], dtype=bool)
    patterns = compile_families(families)
    if not keep.any():
        empty = pd.DataFrame(
            {
                "n_tb": pd.Series(dtype="int64"),
                "pct_tb": pd.Series(dtype="float64"),
                "n_normal": pd.Series(dtype="int64"),
                "pct_normal": pd.Series(dtype="float64"),
            }
        )
        empty.index.name = "family"
        return empty
    kept_texts = [t for t, k in zip(texts, keep, strict=True) if k]
    kept_labels = label_array[keep].astype(int)
    flags = keyword_matrix(kept_texts, families=patterns).to_numpy()
    is_tb = kept_labels == 1
    n_tb, n_normal = int(is_tb.sum()), int((~is_tb).sum())
    counts_tb = flags[is_tb].sum(axis=0).astype("int64")
    counts_normal = flags[~is_tb].sum(axis=0).astype("int64")

    def percent(counts: np.ndarray, total: int) -> np.ndarray:
        return 100.0 * counts / total if total else np.full(counts.shape, np.nan)

    table = pd.DataFrame(
        {
            "n_tb": counts_tb,
            "pct_tb": percent(counts_tb, n_tb),
            "n_normal": counts_normal,
            "pct_normal": percent(counts_normal, n_normal),
        },
        index=pd.Index(list(patterns), name="family"),
    )
    return table


def has_readings(table: pd.DataFrame) -> bool:
    """True when at least one radiograph of the dataset table has a non-empty reading."""
    if "reading" not in table.columns:
        return False
    return bool(_has_text(list(table["reading"])).any())


def reading_count(table: pd.DataFrame) -> int:
    """Number of radiographs of the dataset table with a non-empty reading (0 without the
    ``reading`` column)."""
    if "reading" not in table.columns:
        return 0
    return int(_has_text(list(table["reading"])).sum())


def _label_name(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    return LABEL_NAMES.get(int(value), "unknown")


def _with_label_names(table: pd.DataFrame) -> pd.DataFrame:
    for column in ("site", "label"):
        if column not in table.columns:
            raise ValueError(f"the dataset table has no {column!r} column")
    return table.assign(label=[_label_name(v) for v in table["label"]])


def _label_order(values: Iterable[str]) -> list[str]:
    order = ["normal", "TB", "unknown"]
    present = set(values)
    return [name for name in order if name in present]


def age_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Age by site and label, from the readings.

    Parameters
    ----------
    table
        The dataset table (columns ``site``, ``label``, ``age`` in years or NaN).

    Returns
    -------
    pandas.DataFrame
        Index ``(site, label)`` with label ``"normal"``/``"TB"``; columns ``n`` (radiographs
        with a known age), ``mean``, ``median``, ``q1``, ``q3`` (years). Zero rows when no
        age is known.
    """
    if "age" not in table.columns:
        raise ValueError("the dataset table has no 'age' column")
    named = _with_label_names(table)
    known = named[pd.to_numeric(named["age"], errors="coerce").notna()]
    index = pd.MultiIndex.from_arrays([[], []], names=["site", "label"])
    if known.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in AGE_COLUMNS}, index=index)
    ages = known.assign(age=known["age"].astype(float)).groupby(["site", "label"])["age"]
    summary = pd.DataFrame(
        {
            "n": ages.size(),
            "mean": ages.mean(),
            "median": ages.median(),
            "q1": ages.quantile(0.25),
            "q3": ages.quantile(0.75),
        }
    )
    return _order_rows(summary)


def _order_rows(summary: pd.DataFrame) -> pd.DataFrame:
    sites = sorted(summary.index.get_level_values("site").unique())
    labels = _label_order(summary.index.get_level_values("label"))
    order = [(s, lab) for s in sites for lab in labels if (s, lab) in summary.index]
    return summary.loc[order]


def sex_proportions(table: pd.DataFrame) -> pd.DataFrame:
    """Share of women and men by site and label, from the readings.

    Parameters
    ----------
    table
        The dataset table (columns ``site``, ``label``, ``sex`` as ``"M"``/``"F"``/None).

    Returns
    -------
    pandas.DataFrame
        Index ``(site, label)``; columns ``n`` (radiographs with a known sex), ``n_female``,
        ``n_male`` (counts) and ``female``, ``male`` (fractions of ``n``, summing to 1).
        Zero rows when no sex is known.
    """
    if "sex" not in table.columns:
        raise ValueError("the dataset table has no 'sex' column")
    named = _with_label_names(table)
    known = named[named["sex"].isin(["M", "F"])]
    index = pd.MultiIndex.from_arrays([[], []], names=["site", "label"])
    if known.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SEX_COLUMNS}, index=index)
    grouped = known.groupby(["site", "label"])["sex"]
    n_female = grouped.apply(lambda s: int((s == "F").sum()))
    n_male = grouped.apply(lambda s: int((s == "M").sum()))
    n = n_female + n_male
    summary = pd.DataFrame(
        {
            "n": n,
            "n_female": n_female,
            "n_male": n_male,
            "female": n_female / n,
            "male": n_male / n,
        }
    )
    return _order_rows(summary)


def demographics(
    table: pd.DataFrame, sites: Sequence[str] = ("montgomery", "shenzhen")
) -> pd.DataFrame:
    """Median age and share of men for every site and label, known or not.

    Parameters
    ----------
    table
        The dataset table (columns ``site``, ``label``, ``age``, ``sex``).
    sites
        The sites to report, in order (present in the table or not).

    Returns
    -------
    pandas.DataFrame
        Index ``(site, label)`` over ``sites`` and both labels
        (``"normal"``, ``"TB"``); columns ``median_age`` (years) and ``pct_male``
        (percentage of the radiographs with a known sex). NaN where the readings give no
        age or no sex for that group (or it has no radiograph).
    """
    index = pd.MultiIndex.from_product([list(sites), ["normal", "TB"]], names=["site", "label"])
    ages = age_summary(table)["median"].reindex(index)
    male = sex_proportions(table)["male"].reindex(index)
    return pd.DataFrame(
        {"median_age": ages.astype(float), "pct_male": 100.0 * male.astype(float)}, index=index
    )


def pick_by_site_and_label(table: pd.DataFrame, n: int = 2, *, seed: int = 0) -> np.ndarray:
    """Choose up to ``n`` radiographs of each (site, label) group, for side-by-side figures.

    Parameters
    ----------
    table
        The dataset table (columns ``site`` and ``label``); rows without a label are never
        chosen.
    n
        Radiographs per group (fewer when a group is smaller).
    seed
        Seed of the random choice within each group.

    Returns
    -------
    numpy.ndarray
        ``int`` row positions into ``table``, ordered by site, then label (normal first).

    Raises
    ------
    ValueError
        If ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    labels = np.array([_label_name(v) for v in table["label"]], dtype=object)
    sites = table["site"].astype(str).to_numpy()
    chosen: list[int] = []
    for site in sorted(set(sites)):
        for label in ("normal", "TB"):
            members = np.flatnonzero((sites == site) & (labels == label))
            if members.size:
                picked = rng.choice(members, size=min(n, members.size), replace=False)
                chosen.extend(sorted(int(p) for p in picked))
    return np.array(chosen, dtype=int)
