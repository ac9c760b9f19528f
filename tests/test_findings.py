"""Tests for cxrlib.book.findings: keyword families, counts per label, demographics."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cxrlib.book import findings
from cxrlib.book.findings import find_keywords, keyword_matrix, keyword_table

# Realistic readings in both formats (finding text only, as datasets.scan_dataset stores it).
MONTGOMERY = {
    "Bilateral upper lobe cavitary lesions": {"upper zone", "cavity", "bilateral"},
    "right upper lobe infiltrate, consistent with TB": {"upper zone", "infiltrate", "TB named"},
    "Left apical fibrocavitary disease with calcified granulomas": {
        "upper zone",
        "cavity",
        "fibrosis / scarring",
        "calcification",
    },
    "RUL consolidation and small left pleural effusion": {
        "upper zone",
        "consolidation",
        "pleural effusion",
    },
    "diffuse miliary nodules, consistent with tuberculosis": {"miliary", "nodule", "TB named"},
    "Scarring in both upper lobes; nodular opacities in the right mid lung": {
        "fibrosis / scarring",
        "bilateral",
        "upper zone",
        "nodule",
        "opacity",
        "middle zone",
    },
    "normal": set(),
}
SHENZHEN = {
    "PTB in the left upper field": {"upper zone", "TB named"},
    "STB,ATB,tuberculosis pleuritis": {"TB named", "pleural thickening / pleuritis"},
    "bilateral PTB, right pleural effusion": {"bilateral", "TB named", "pleural effusion"},
    "PTB in the right lower field with cavitation": {"lower zone", "TB named", "cavity"},
    "1.left secondary PTB 2.right pleural thickening": {
        "TB named",
        "pleural thickening / pleuritis",
    },
    "PTB in the right upper field, fibrous lesions": {
        "upper zone",
        "TB named",
        "fibrosis / scarring",
    },
    "normal": set(),
}


def _families_only(expected: set[str]) -> set[str]:
    return expected & set(findings.KEYWORD_FAMILIES)


@pytest.mark.parametrize(
    ("reading", "expected"),
    list(MONTGOMERY.items()) + list(SHENZHEN.items()),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_find_keywords_on_realistic_readings(reading, expected):
    assert set(find_keywords(reading)) == _families_only(expected)


def test_find_keywords_is_case_insensitive_and_handles_word_forms():
    for text in ("CAVITY", "two cavities", "Cavitary lesion", "cavitation", "fibrocavitary"):
        assert "cavity" in find_keywords(text), text
    for text in ("nodule", "Nodules", "nodular", "micronodular", "fibronodular"):
        assert "nodule" in find_keywords(text), text
    for text in ("infiltrate", "INFILTRATES", "infiltration", "infiltrative"):
        assert "infiltrate" in find_keywords(text), text
    for text in ("fibrosis", "fibrotic streaks", "fibrous lesions", "scarring"):
        assert "fibrosis / scarring" in find_keywords(text), text
    for text in ("calcification", "Calcified granuloma", "fibrocalcific", "calcifications"):
        assert "calcification" in find_keywords(text), text
    for text in ("upper field", "upper zone", "upper lobes", "right apex", "apical", "LUL"):
        assert "upper zone" in find_keywords(text), text


def test_find_keywords_avoids_lookalike_words():
    assert "cavity" not in find_keywords("concavity of the diaphragm")
    assert find_keywords("") == []
    assert find_keywords(None) == []
    assert "TB named" not in find_keywords("STBX artefact")


def test_negated_mentions_do_not_count():
    assert find_keywords("no effusion") == []
    assert find_keywords("PTB in the left upper field, no effusion") == ["upper zone", "TB named"]
    assert "cavity" not in find_keywords("infiltrate without cavitation")
    # A negation does not reach past the end of its clause.
    found = find_keywords("no effusion. Cavity in the right upper lobe")
    assert "cavity" in found and "pleural effusion" not in found
    found = find_keywords("no effusion but cavity in the right upper lobe")
    assert "cavity" in found
    # ...nor past a long stretch of words.
    found = find_keywords("no change since the previous film taken two years ago, cavity")
    assert "cavity" in found


def test_custom_families_and_invalid_pattern():
    families = {"left": r"\bleft\b", "right": r"\bright\b"}
    assert find_keywords("left upper field", families) == ["left"]
    with pytest.raises(ValueError, match="broken"):
        find_keywords("x", {"broken": r"(unclosed"})
    with pytest.raises(ValueError, match="at least one"):
        findings.compile_families({})


def test_every_family_pattern_compiles_and_matches_its_own_name():
    samples = {
        "upper zone": "upper zone",
        "middle zone": "middle zone",
        "lower zone": "lower zone",
        "pleural effusion": "pleural effusion",
        "pleural thickening / pleuritis": "pleuritis",
        "fibrosis / scarring": "fibrosis",
        "TB named": "tuberculosis",
    }
    for name, pattern in findings.compile_families().items():
        assert isinstance(pattern, re.Pattern)
        assert name in find_keywords(samples.get(name, name)), name


def test_keyword_matrix_shape_index_and_values():
    readings = pd.Series(["PTB in the left upper field", None, "normal"], index=[10, 11, 12])
    matrix = keyword_matrix(readings)
    assert matrix.shape == (3, len(findings.KEYWORD_FAMILIES))
    assert list(matrix.index) == [10, 11, 12]
    assert list(matrix.columns) == list(findings.KEYWORD_FAMILIES)
    assert matrix.dtypes.eq(bool).all()
    assert matrix.loc[10, "upper zone"] and matrix.loc[10, "TB named"]
    assert not matrix.loc[11].any() and not matrix.loc[12].any()


def _hand_table() -> pd.DataFrame:
    """Four TB readings, three normal ones, one missing reading, one missing label."""
    return pd.DataFrame(
        {
            "reading": [
                "PTB in the left upper field",  # TB
                "bilateral PTB, right pleural effusion",  # TB
                "Bilateral upper lobe cavitary lesions",  # TB
                "right lower lobe infiltrate",  # TB
                "normal",  # normal
                "calcified granuloma left upper lobe",  # normal
                "normal",  # normal
                None,  # TB without reading: left out
                "upper lobe cavity",  # unknown label: left out
            ],
            "label": pd.array([1, 1, 1, 1, 0, 0, 0, 1, pd.NA], dtype="Int64"),
        }
    )


def test_keyword_table_counts_and_percentages_on_a_hand_made_table():
    table = _hand_table()
    result = keyword_table(table["reading"], table["label"])
    assert list(result.columns) == list(findings.KEYWORD_COLUMNS)
    assert result.index.name == "family"
    assert list(result.index) == list(findings.KEYWORD_FAMILIES)
    # upper zone: TB readings 0 and 2 (2 of 4), normal reading 5 (1 of 3).
    assert result.loc["upper zone", "n_tb"] == 2
    assert result.loc["upper zone", "pct_tb"] == pytest.approx(50.0)
    assert result.loc["upper zone", "n_normal"] == 1
    assert result.loc["upper zone", "pct_normal"] == pytest.approx(100 / 3)
    assert result.loc["bilateral", "n_tb"] == 2 and result.loc["bilateral", "n_normal"] == 0
    assert result.loc["cavity", "n_tb"] == 1  # the unknown-label cavity is not counted
    assert result.loc["lower zone", "pct_tb"] == pytest.approx(25.0)
    assert result.loc["calcification", "n_normal"] == 1
    assert result.loc["calcification", "n_tb"] == 0
    assert result.loc["TB named", "n_tb"] == 2
    assert findings.readings_per_label(table["reading"], table["label"]) == {"TB": 4, "normal": 3}


def test_keyword_table_counts_a_family_once_per_reading():
    result = keyword_table(["upper lobe cavity, left upper lobe cavity"], [1])
    assert result.loc["cavity", "n_tb"] == 1
    assert result.loc["cavity", "pct_tb"] == pytest.approx(100.0)
    assert np.isnan(result.loc["cavity", "pct_normal"])  # no normal reading at all


def test_keyword_table_without_readings_is_empty_with_the_right_columns():
    for readings, labels in (
        ([None, None], [0, 1]),
        (["", "  "], [0, 1]),
        ([], []),
        (pd.Series([np.nan, np.nan]), pd.array([0, 1], dtype="Int64")),
        (["normal"], [pd.NA]),
    ):
        result = keyword_table(readings, labels)
        assert result.empty
        assert list(result.columns) == list(findings.KEYWORD_COLUMNS)
        assert result.index.name == "family"
        assert result["n_tb"].dtype == np.int64 and result["pct_tb"].dtype == np.float64


def test_keyword_table_rejects_bad_input():
    with pytest.raises(ValueError, match="labels has 1 entries but readings has 2"):
        keyword_table(["a", "b"], [1])
    with pytest.raises(ValueError, match=r"labels\[1\] is 2"):
        keyword_table(["a", "b"], [1, 2])


def _demo_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"X_{i}" for i in range(8)],
            "site": ["montgomery"] * 4 + ["shenzhen"] * 4,
            "label": pd.array([0, 0, 1, 1, 0, 1, 1, None], dtype="Int64"),
            "sex": ["F", "M", "M", "M", "F", "M", None, "F"],
            "age": [20.0, 40.0, 50.0, 70.0, 30.0, 45.0, np.nan, 33.0],
            "reading": ["normal"] * 8,
        }
    )


def test_age_summary_per_site_and_label():
    summary = findings.age_summary(_demo_table())
    assert list(summary.columns) == list(findings.AGE_COLUMNS)
    assert summary.loc[("montgomery", "normal"), "median"] == pytest.approx(30.0)
    assert summary.loc[("montgomery", "TB"), "mean"] == pytest.approx(60.0)
    assert summary.loc[("montgomery", "TB"), "q1"] == pytest.approx(55.0)
    assert summary.loc[("shenzhen", "TB"), "n"] == 1  # the NaN age is left out
    assert list(summary.index)[:2] == [("montgomery", "normal"), ("montgomery", "TB")]


def test_sex_proportions_per_site_and_label():
    shares = findings.sex_proportions(_demo_table())
    assert list(shares.columns) == list(findings.SEX_COLUMNS)
    row = shares.loc[("montgomery", "normal")]
    assert (row["n"], row["n_female"], row["n_male"]) == (2, 1, 1)
    assert row["female"] == pytest.approx(0.5)
    assert shares.loc[("montgomery", "TB"), "male"] == pytest.approx(1.0)
    assert shares.loc[("shenzhen", "TB"), "n"] == 1  # missing sex left out
    np.testing.assert_allclose(shares["female"] + shares["male"], 1.0)


def test_demographics_without_readings_are_empty_tables_or_nan():
    table = _demo_table().assign(sex=None, age=np.nan, reading=None)
    assert findings.age_summary(table).empty
    assert list(findings.age_summary(table).columns) == list(findings.AGE_COLUMNS)
    assert findings.sex_proportions(table).empty
    demo = findings.demographics(table)
    assert len(demo) == 4 and demo.isna().all().all()


def test_demographics_has_every_site_and_label():
    demo = findings.demographics(_demo_table())
    sites = sorted(_demo_table()["site"].unique())
    assert list(demo.index) == [(s, label) for s in sites for label in ("normal", "TB")]
    assert list(demo.columns) == ["median_age", "pct_male"]
    assert demo.loc[("montgomery", "TB"), "median_age"] == pytest.approx(60)
    assert demo.loc[("montgomery", "normal"), "median_age"] == pytest.approx(30)
    assert demo.loc[("montgomery", "TB"), "pct_male"] == pytest.approx(100)
    assert demo.loc[("montgomery", "normal"), "pct_male"] == pytest.approx(50)
    one_label = _demo_table().assign(label=1)
    assert findings.demographics(one_label).xs("normal", level="label").isna().all().all()
    only = findings.demographics(_demo_table(), sites=("shenzhen", "mars"))
    assert list(only.index.get_level_values("site")) == ["shenzhen"] * 2 + ["mars"] * 2
    assert only.loc["mars"].isna().all().all()


def test_has_readings_and_reading_count():
    table = _demo_table()
    assert findings.has_readings(table)
    assert findings.reading_count(table) == 8
    partial = table.assign(reading=["normal"] * 6 + [None, ""])
    assert findings.reading_count(partial) == 6
    empty = table.assign(reading=None)
    assert not findings.has_readings(empty)
    assert findings.reading_count(empty) == 0
    assert not findings.has_readings(table.drop(columns="reading"))
    assert findings.reading_count(table.drop(columns="reading")) == 0


def test_pick_by_site_and_label_orders_groups_and_respects_n():
    table = pd.DataFrame(
        {
            "site": ["shenzhen"] * 5 + ["montgomery"] * 3,
            "label": pd.array([1, 1, 0, 0, 0, 1, 0, None], dtype="Int64"),
        }
    )
    chosen = findings.pick_by_site_and_label(table, 2, seed=1)
    picked = table.iloc[chosen]
    assert list(picked["site"]) == ["montgomery", "montgomery"] + ["shenzhen"] * 4
    assert list(picked["label"]) == [0, 1, 0, 0, 1, 1]
    assert len(set(chosen)) == len(chosen)
    assert np.array_equal(chosen, findings.pick_by_site_and_label(table, 2, seed=1))
    with pytest.raises(ValueError, match="n must be at least 1"):
        findings.pick_by_site_and_label(table, 0)


def test_keyword_table_on_phantom_readings(tmp_path):
    """The phantoms' readings (both formats) give TB-only findings, mostly upper-zone."""
    from cxrlib.data.datasets import scan_dataset
    from cxrlib.synthetic import write_dataset

    write_dataset(tmp_path, n=16, size=64, seed=3, progress=False)
    table = scan_dataset(tmp_path).table
    assert findings.has_readings(table)
    result = keyword_table(table["reading"], table["label"])
    assert result["n_normal"].sum() == 0  # phantom normals read "normal"
    assert result.loc["TB named", "pct_tb"] == pytest.approx(100.0)
    assert result.loc["upper zone", "n_tb"] >= result.loc["lower zone", "n_tb"]
