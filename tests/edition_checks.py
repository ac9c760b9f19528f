"""What a reader of an executed chapter would notice: checks over a notebook's outputs.

Each function takes an executed notebook (``nbformat.NotebookNode``) and returns a list of
problems, one string each (empty: nothing found), so that a test can show them all at once
and another test can show that a deliberately broken chapter is caught.
"""

from __future__ import annotations

import ast
import base64
import io
import math
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np

#: Cell texts that mean "no value".
MISSING = {"", "nan", "none", "<na>", "nat", "null"}
#: Standard deviation of the gray levels (0-1) below which a figure counts as blank.
BLANK_FLOOR = 0.02
_PNG_KEYS = ("image/png", "application/papermill.record/image/png")
_GLUE_REF = re.compile(r"\{glue(?::text|:figure|:any|)?\}`([^`:]+)")
_GLUE_FIGURE = re.compile(r"```\{glue:figure\}\s+(\S+)")


def glued_values(notebook: Any) -> dict[str, Any]:
    """Every ``glue``-d plain value of an executed notebook (figures are left out)."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            data = output.get("data", {})
            text = data.get("application/papermill.record/text/plain")
            if name and text is not None and len(data) == 1:
                try:
                    values[name] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    values[name] = text
    return values


def glued_names(notebook: Any) -> set[str]:
    """Names of everything glued (values and figures)."""
    return {
        output["metadata"]["scrapbook"]["name"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("metadata", {}).get("scrapbook", {}).get("name")
    }


def blank_figures(notebook: Any, floor: float = BLANK_FLOOR) -> list[str]:
    """PNG outputs whose gray levels barely vary (an empty canvas)."""
    import matplotlib.image

    problems = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            for key in _PNG_KEYS:
                if key not in output.get("data", {}):
                    continue
                png = base64.b64decode(output["data"][key])
                pixels = np.asarray(matplotlib.image.imread(io.BytesIO(png), format="png"))
                gray = pixels[..., :3].mean(axis=-1) if pixels.ndim == 3 else pixels
                spread = float(np.std(gray))
                if spread < floor:
                    name = output.get("metadata", {}).get("scrapbook", {}).get("name", key)
                    problems.append(f"cell {index}: figure {name} is blank (s.d. {spread:.4f})")
    return problems


class _TableParser(HTMLParser):
    """Rows of body cells (``td``) of every ``<table>`` in an HTML string."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def missing_tables(notebook: Any) -> list[str]:
    """HTML tables whose every body cell is missing, or that have an all-missing column."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html")
            if not html:
                continue
            parser = _TableParser()
            parser.feed("".join(html) if isinstance(html, list) else html)
            for rows in parser.tables:
                rows = [row for row in rows if row]
                if not rows:
                    continue
                width = max(len(row) for row in rows)
                cells = [row + [""] * (width - len(row)) for row in rows]
                empty = [[value.lower() in MISSING for value in row] for row in cells]
                if all(all(row) for row in empty):
                    problems.append(f"cell {index}: a table of only missing values")
                    continue
                columns = [j for j in range(width) if all(row[j] for row in empty)]
                if columns:
                    problems.append(
                        f"cell {index}: table columns {columns} hold only missing values"
                    )
    return problems


def unresolved_glue(notebook: Any) -> list[str]:
    """Glue references in the prose whose name the notebook never glued."""
    known = glued_names(notebook)
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        names = set(_GLUE_REF.findall(cell.source)) | set(_GLUE_FIGURE.findall(cell.source))
        for name in sorted(names - known):
            problems.append(f"cell {index}: glue reference {name!r} was never glued")
    return problems


def _relation(value: float, low: float, high: float) -> str:
    if any(math.isnan(v) for v in (value, low, high)):
        return "undefined"
    return "below" if value < low else "above" if value > high else "inside"


#: Verbal claims of the chapters: glued word -> (reference value, interval low, interval high).
RELATION_CLAIMS = {
    "mc_vs_jaeger": ("jaeger2014_mc_auc", "auc_montgomery_low", "auc_montgomery_high"),
    "chn_vs_jaeger": ("jaeger2014_chn_auc", "auc_shenzhen_low", "auc_shenzhen_high"),
    "densenet_vs_ours": ("densenet121_auc", "auc_low", "auc_high"),
    "mask_relation": (
        "auc_predicted_masks",
        "auc_ground_truth_masks_low",
        "auc_ground_truth_masks_high",
    ),
}


def contradicted_claims(values: dict[str, Any]) -> list[str]:
    """Glued verdicts and intervals that disagree with the glued numbers they rest on.

    - every ``X`` glued with ``X_low`` and ``X_high`` lies inside its interval;
    - each word of :data:`RELATION_CLAIMS` is where its reference lies relative to the interval;
    - each paired difference's ``better`` (1, -1, 0) matches its interval's sign.
    """
    problems = []
    for key, value in values.items():
        stem = key[: -len("_mean")] if key.endswith("_mean") else key
        low, high = values.get(f"{stem}_low"), values.get(f"{stem}_high")
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (value, low, high)
        ):
            continue
        if any(math.isnan(v) for v in (value, low, high)):
            continue
        if not (low - 1e-9 <= value <= high + 1e-9):
            problems.append(
                f"{key} = {value:.4g} lies outside its interval [{low:.4g}, {high:.4g}]"
            )
    for word, (reference, low, high) in RELATION_CLAIMS.items():
        if word not in values:
            continue
        absent = [key for key in (reference, low, high) if key not in values]
        if absent:
            problems.append(f"{word} rests on numbers the chapter never glued: {absent}")
            continue
        expected = _relation(float(values[reference]), float(values[low]), float(values[high]))
        if values[word] != expected:
            problems.append(f"{word} says {values[word]!r} but the numbers say {expected!r}")
    for key, better in values.items():
        if not key.endswith("_better"):
            continue
        stem = key[: -len("_better")]
        low, high = values.get(f"{stem}_diff_low"), values.get(f"{stem}_diff_high")
        if low is None or high is None:
            continue
        expected = int(low > 0) - int(high < 0)
        if int(better) != expected:
            problems.append(f"{key} = {better} but its interval is [{low:.4g}, {high:.4g}]")
    return problems


def reader_problems(notebook: Any) -> list[str]:
    """All of the above for one executed chapter."""
    return [
        *blank_figures(notebook),
        *missing_tables(notebook),
        *unresolved_glue(notebook),
        *contradicted_claims(glued_values(notebook)),
    ]
