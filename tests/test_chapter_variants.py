"""Tests for cxrlib.book.chapter_variants: cells kept by the data's facts, per-run titles."""

from __future__ import annotations

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cxrlib.book import chapter_variants
from cxrlib.book.profile import BookBuildError
from cxrlib.synthetic import writers


def _chapter():
    notebook = new_notebook()
    notebook.cells = [
        new_markdown_cell("# Source title\n\nIntro."),
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_markdown_cell("## Readings", metadata={"tags": ["needs-readings"]}),
        new_code_cell("show(readings)", metadata={"tags": ["needs-readings"]}),
        new_markdown_cell("No readings here.", metadata={"tags": ["without-readings"]}),
        new_markdown_cell("## Summary"),
    ]
    return notebook


def _sources(notebook):
    return [cell.source for cell in notebook.cells]


def test_without_readings_drops_the_cells_that_need_them():
    prepared = chapter_variants.prepare_chapter(_chapter(), facts={"readings": False})
    kept = ["# Source title\n\nIntro.", "x = 1", "No readings here.", "## Summary"]
    assert _sources(prepared) == kept
    assert prepared.metadata["cxrlib"] == {
        "facts": {"readings": False},
        "title": None,
        "dropped_cells": 2,
    }


def test_with_readings_drops_the_note_about_their_absence():
    source = _chapter()
    prepared = chapter_variants.prepare_chapter(source, facts={"readings": True})
    assert "No readings here." not in _sources(prepared)
    assert "show(readings)" in _sources(prepared)
    assert len(source.cells) == 6, "the source notebook is left as it was"


def test_title_replaces_only_the_h1_line():
    prepared = chapter_variants.prepare_chapter(
        _chapter(), facts={"readings": True}, title="Training a U-Net"
    )
    assert prepared.cells[0].source == "# Training a U-Net\n\nIntro."
    assert chapter_variants.variant_of(prepared) == {
        "facts": {"readings": True},
        "title": "Training a U-Net",
    }


def test_missing_fact_and_missing_title_cell_are_named():
    with pytest.raises(BookBuildError, match="needs the fact 'readings'"):
        chapter_variants.prepare_chapter(_chapter(), facts={})
    untitled = new_notebook()
    untitled.cells = [new_code_cell("x = 1")]
    with pytest.raises(BookBuildError, match="'# ' title"):
        chapter_variants.prepare_chapter(untitled, facts={}, title="T")


def test_variant_of_an_unprepared_notebook_is_empty():
    assert chapter_variants.variant_of(new_notebook()) == {"facts": {}, "title": None}


@pytest.mark.parametrize(("layout", "expected"), [("montgomery", True), ("plain", False)])
def test_dataset_facts_tell_readings_apart(tmp_path, layout, expected):
    writers.write_dataset(tmp_path / layout, n=4, size=64, seed=0, layout=layout)
    facts = chapter_variants.dataset_facts(tmp_path / layout)
    assert facts == {"readings": expected, "phantoms": True}


def test_dataset_facts_tell_phantoms_from_real_radiographs(tmp_path):
    writers.write_dataset(tmp_path / "real", n=4, size=64, seed=0, layout="plain")
    (tmp_path / "real" / "phantoms.json").unlink()
    assert chapter_variants.dataset_facts(tmp_path / "real")["phantoms"] is False
