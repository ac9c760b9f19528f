"""Tests for cxrlib.data.readings: the Montgomery and Shenzhen clinical-reading formats."""

from __future__ import annotations

import random
import string

import pytest

from cxrlib.data.readings import (
    Reading,
    ReadingError,
    detect_format,
    parse_age,
    parse_reading,
    parse_sex,
    read_reading_file,
)

MONTGOMERY_CASES = [
    # (text, sex, age, reading)
    ("Patient's Sex: F\nPatient's Age: 047Y\nnormal\n", "F", 47.0, "normal"),
    ("Patient's Sex: M\nPatient's Age: 47Y\n\nnormal", "M", 47.0, "normal"),
    ("Patient's Sex: M\nPatient's Age: 006M\nnormal", "M", 0.5, "normal"),
    ("Patient's Sex: O\nPatient's Age: 072Y\nnormal", None, 72.0, "normal"),
    ("Patient's Sex: F\nPatient's Age: \nnormal", "F", None, "normal"),
    ("Patient's Sex: F\nnormal", "F", None, "normal"),
    ("Patient's Sex: \nPatient's Age: XXXY\nnormal", None, None, "normal"),
    (
        "Patient's Sex: M\r\nPatient's Age: 050Y\r\n\r\nPTB in the left upper lobe\r\n"
        "  with   cavitation \r\n",
        "M",
        50.0,
        "PTB in the left upper lobe with cavitation",
    ),
    (
        "patient's sex: f\npatient's age: 030y\nright pleural effusion",
        "F",
        30.0,
        "right pleural effusion",
    ),
    ("Patient’s Sex: Female\nPatient’s Age: 61 Y\nnormal", "F", 61.0, "normal"),
    ("Patient's Sex: M\nPatient's Age: 047Y\n", "M", 47.0, ""),
]

SHENZHEN_CASES = [
    ("male 35yrs\nnormal\n", "M", 35.0, "normal"),
    ("female, 45yr\nPTB in the left upper field", "F", 45.0, "PTB in the left upper field"),
    ("male 8 months\nnormal", "M", 8 / 12, "normal"),
    ("Male  35yrs\nnormal", "M", 35.0, "normal"),
    ("female 45yrs normal", "F", 45.0, "normal"),
    ("female 45yrs, normal", "F", 45.0, "normal"),
    ("FEMALE 27YRS\nnormal", "F", 27.0, "normal"),
    ("male 1yrs\nSTB,ATB,tuberculosis pleuritis", "M", 1.0, "STB,ATB,tuberculosis pleuritis"),
    (
        "male 63 yrs\n\n  PTB in the   right upper field  \n",
        "M",
        63.0,
        "PTB in the right upper field",
    ),
    ("female 35-year-old\nnormal", "F", 35.0, "normal"),
    ("male 35yrs.\nnormal", "M", 35.0, "normal"),
    ("male 3m\nnormal", "M", 0.25, "normal"),
    ("femal 23yrs\nnormal", "F", 23.0, "normal"),
    ("35yrs male\nnormal", "M", 35.0, "normal"),
    ("35 yrs\nnormal", None, 35.0, "normal"),
    ("male\nnormal", "M", None, "normal"),
    ("F 45\nnormal", "F", 45.0, "normal"),
    ("\ufeffmale 35yrs\r\nnormal\r\n", "M", 35.0, "normal"),
    ("normal", None, None, "normal"),
    ("PTB in the left upper field", None, None, "PTB in the left upper field"),
    ("M. tuberculosis culture positive", None, None, "M. tuberculosis culture positive"),
    ("mild fibrosis in both apices", None, None, "mild fibrosis in both apices"),
    ("2 nodules in the right lung", None, None, "2 nodules in the right lung"),
    ("male 200yrs\nnormal", "M", None, "normal"),
    ("", None, None, ""),
    ("   \n\n", None, None, ""),
]


@pytest.mark.parametrize(("text", "sex", "age", "finding"), MONTGOMERY_CASES)
def test_montgomery_readings(text: str, sex: str | None, age: float | None, finding: str) -> None:
    for site in (None, "montgomery"):
        reading = parse_reading(text, site=site)
        assert reading.sex == sex, text
        if age is None:
            assert reading.age is None, text
        else:
            assert reading.age == pytest.approx(age), text
        assert reading.reading == finding, text


@pytest.mark.parametrize(("text", "sex", "age", "finding"), SHENZHEN_CASES)
def test_shenzhen_readings(text: str, sex: str | None, age: float | None, finding: str) -> None:
    for site in (None, "shenzhen"):
        reading = parse_reading(text, site=site)
        assert reading.sex == sex, text
        if age is None:
            assert reading.age is None, text
        else:
            assert reading.age == pytest.approx(age), text
        assert reading.reading == finding, text


def test_detect_format() -> None:
    assert detect_format("Patient's Sex: F\nPatient's Age: 047Y\nnormal") == "montgomery"
    assert detect_format("\n\nPatient's Age: 047Y") == "montgomery"
    assert detect_format("male 35yrs\nnormal") == "shenzhen"
    assert detect_format("") == "shenzhen"


def test_forced_site_changes_parser() -> None:
    text = "male 35yrs\nnormal"
    assert parse_reading(text, site="montgomery") == Reading(None, None, "male 35yrs normal")
    assert parse_reading(text, site="unknown") == Reading("M", 35.0, "normal")


def test_invalid_site_is_rejected() -> None:
    with pytest.raises(ValueError, match="site must be one of"):
        parse_reading("normal", site="boston")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("F", "F"), ("m", "M"), (" Female ", "F"), ("male.", "M"), ("O", None), ("", None)]
    + [(None, None), ("unknown", None)],
)
def test_parse_sex(value: str | None, expected: str | None) -> None:
    assert parse_sex(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("047Y", 47.0),
        ("47Y", 47.0),
        ("047M", 47 / 12),
        ("35yrs", 35.0),
        ("8 months", 8 / 12),
        ("2 weeks", 2 * 7 / 365.25),
        ("10d", 10 / 365.25),
        ("47", 47.0),
        ("47.5 years", 47.5),
        ("1,5 years", 1.5),
        ("45 years old", 45.0),
        ("", None),
        (None, None),
        ("Y", None),
        ("47Q", None),
        ("999Y", None),
        ("forty", None),
    ],
)
def test_parse_age(value: str | None, expected: float | None) -> None:
    result = parse_age(value)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parsing_never_raises_on_odd_text() -> None:
    rng = random.Random(0)
    alphabet = string.printable + "éü’\u00a0"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        reading = parse_reading(text)
        assert reading.sex in (None, "M", "F")
        assert reading.age is None or 0.0 <= reading.age <= 130.0
        assert isinstance(reading.reading, str)
        assert "  " not in reading.reading and "\n" not in reading.reading


def test_read_reading_file_utf8_crlf(tmp_path) -> None:
    path = tmp_path / "MCUCXR_0001_0.txt"
    path.write_bytes(b"Patient's Sex: F\r\nPatient's Age: 047Y\r\nnormal\r\n")
    assert read_reading_file(path) == Reading("F", 47.0, "normal")


def test_read_reading_file_latin1_fallback(tmp_path) -> None:
    path = tmp_path / "CHNCXR_0001_1.txt"
    path.write_bytes("female 45yrs\nopacité apicale\n".encode("latin-1"))
    assert read_reading_file(path) == Reading("F", 45.0, "opacité apicale")


def test_read_reading_file_utf16_with_bom(tmp_path) -> None:
    path = tmp_path / "CHNCXR_0002_0.txt"
    path.write_bytes("male 30yrs\nnormal\n".encode("utf-16"))
    assert read_reading_file(path) == Reading("M", 30.0, "normal")


def test_read_reading_file_forced_site(tmp_path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("male 30yrs\nnormal\n")
    assert read_reading_file(path, site="montgomery").sex is None


def test_read_reading_file_missing_names_file(tmp_path) -> None:
    path = tmp_path / "MCUCXR_0404_0.txt"
    with pytest.raises(ReadingError, match="MCUCXR_0404_0.txt: file does not exist") as info:
        read_reading_file(path)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_read_reading_file_folder_and_binary(tmp_path) -> None:
    with pytest.raises(ReadingError, match="is a folder"):
        read_reading_file(tmp_path)
    binary = tmp_path / "CHNCXR_0003_0.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ReadingError, match="CHNCXR_0003_0.txt.*binary"):
        read_reading_file(binary)
