"""Helpers to write the source notebooks from Python (used while authoring chapters).

Usage: build a list of ("md" | "code" | "params", source) pairs and call ``write_notebook``.
The notebooks under ``notebooks/`` are the sources of truth; this helper only keeps their
metadata (kernelspec, language_info, tags) consistent.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def write_notebook(
    path: str | Path, cells: list[tuple[str, str]], hide_stderr: tuple[str, ...] = ()
) -> Path:
    """Write a notebook with a ``parameters``-tagged cell and papermill-ready metadata.

    Code cells whose source starts with one of ``hide_stderr`` get the ``remove-stderr``
    tag, so the book hides TensorFlow's start-up log printed by those cells.
    """
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11"}
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            notebook.cells.append(new_markdown_cell(source))
        elif kind == "params":
            notebook.cells.append(new_code_cell(source, metadata={"tags": ["parameters"]}))
        elif kind == "code":
            tags = ["remove-stderr"] if hide_stderr and source.startswith(hide_stderr) else []
            notebook.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
        else:
            raise ValueError(f"unknown cell kind {kind!r}")
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
    path = Path(path)
    nbformat.write(notebook, path)
    return path
