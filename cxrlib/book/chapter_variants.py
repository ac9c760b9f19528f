"""One chapter source, shown as the data allow: conditional cells and per-run titles.

A chapter runs on folders that differ in what they hold: the official Montgomery and
Shenzhen downloads ship a clinical reading per radiograph, the "Chest Xray Masks and Labels"
compilation ships none. Rather than render blank panels, a chapter tags the cells that need
a fact of the data:

``needs-readings``
    kept only where the dataset has clinical readings;
``without-readings``
    kept only where it has none (typically one sentence saying what is left out);
``phantoms-only``
    kept only on the synthetic phantoms (a caveat that holds for them alone);
``real-data-only``
    kept only on real radiographs.

:func:`prepare_chapter` drops the cells the data rule out *before* papermill executes the
notebook, sets a per-run H1 title (chapter 3 is executed twice, once per architecture), and
records what it did in the notebook's metadata (``metadata["cxrlib"]``), so a test over the
executed edition can compare it with today's source (:func:`variant_of`). A reader who
opens the source in Jupyter simply sees every cell; all of them run on any data.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrlib.book.profile import BookBuildError

__all__ = ["CONDITIONAL_TAGS", "dataset_facts", "prepare_chapter", "variant_of"]

#: Cell tag -> (fact, value the fact must have for the cell to be kept).
CONDITIONAL_TAGS: dict[str, tuple[str, bool]] = {
    "needs-readings": ("readings", True),
    "without-readings": ("readings", False),
    "phantoms-only": ("phantoms", True),
    "real-data-only": ("phantoms", False),
}

#: Key of the notebook metadata where :func:`prepare_chapter` records the variant.
METADATA_KEY = "cxrlib"


def dataset_facts(data_dir: Path | str) -> dict[str, bool]:
    """What the conditional cells ask of a dataset folder.

    Returns
    -------
    dict
        ``{"readings": bool, "phantoms": bool}``: ``readings`` is True when at least one
        radiograph has a clinical reading, ``phantoms`` when the folder was written by
        :func:`cxrlib.synthetic.write_dataset`.
    """
    from cxrlib.book.findings import has_readings
    from cxrlib.book.workspace import is_phantom_folder
    from cxrlib.data import datasets

    table = datasets.scan_dataset(Path(data_dir)).table
    return {"readings": has_readings(table), "phantoms": is_phantom_folder(data_dir)}


def _keeps(cell: Mapping[str, Any], facts: Mapping[str, bool]) -> bool:
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag in CONDITIONAL_TAGS:
            fact, wanted = CONDITIONAL_TAGS[tag]
            if fact not in facts:
                raise BookBuildError(f"cell tagged {tag!r} needs the fact {fact!r}, not given")
            if bool(facts[fact]) != wanted:
                return False
    return True


def _retitle(notebook: Any, title: str) -> None:
    first = notebook.cells[0] if notebook.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        raise BookBuildError(
            "the chapter does not start with a markdown cell holding its '# ' title"
        )
    lines = first.source.split("\n")
    lines[0] = f"# {title}"
    first.source = "\n".join(lines)


def prepare_chapter(notebook: Any, *, facts: Mapping[str, bool], title: str | None = None) -> Any:
    """A copy of ``notebook`` with the cells ``facts`` rule out dropped and its title set.

    Parameters
    ----------
    notebook
        An nbformat notebook (as :func:`cxrlib.book.runner.read_chapter` returns).
    facts
        The dataset's facts (:func:`dataset_facts`), e.g. ``{"readings": False}``.
    title
        The H1 title of this run, or None to keep the source's.

    Raises
    ------
    BookBuildError
        When a conditional cell needs a fact not given, or a title is asked for a chapter
        that does not start with its H1.
    """
    prepared = copy.deepcopy(notebook)
    kept = [cell for cell in prepared.cells if _keeps(cell, facts)]
    dropped = len(prepared.cells) - len(kept)
    prepared.cells = kept
    if title is not None:
        _retitle(prepared, title)
    prepared.metadata[METADATA_KEY] = {
        "facts": dict(facts),
        "title": title,
        "dropped_cells": dropped,
    }
    return prepared


def variant_of(executed: Any) -> dict[str, Any]:
    """The facts and title an executed chapter was prepared with (empty when none)."""
    recorded = executed.metadata.get(METADATA_KEY, {})
    return {"facts": dict(recorded.get("facts", {})), "title": recorded.get("title")}
