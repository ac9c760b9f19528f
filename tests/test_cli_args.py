"""Shared argument helpers of the cxrlib commands."""

from __future__ import annotations

import argparse

import pytest

from cxrlib.cli.args import existing_folder, positive_int, show_progress, unit_interval


@pytest.mark.parametrize("text", ["0", "-3", "two", "1.5", ""])
def test_positive_int_rejects_with_the_value_named(text):
    with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
        positive_int(text)


def test_positive_int_accepts():
    assert positive_int("16") == 16


@pytest.mark.parametrize("text", ["0", "-0.1", "1.01", "high", "nan"])
def test_unit_interval_rejects_with_the_value_named(text):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"\(0, 1\], got '{text}'"):
        unit_interval(text)


def test_unit_interval_accepts():
    assert unit_interval("0.9") == 0.9 and unit_interval("1") == 1.0


def test_show_progress_follows_quiet():
    assert show_progress(argparse.Namespace(quiet=True)) is False
    assert show_progress(argparse.Namespace(quiet=False)) is True
    assert show_progress(argparse.Namespace()) is True


def test_existing_folder_names_the_missing_path(tmp_path):
    assert existing_folder(tmp_path) == tmp_path
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"dataset folder {missing} does not exist"):
        existing_folder(missing)
    afile = tmp_path / "f.png"
    afile.write_bytes(b"x")
    with pytest.raises(ValueError, match="images folder"):
        existing_folder(afile, "images folder")
