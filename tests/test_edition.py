"""The published edition: the executed chapters committed under ``book/chapters``.

The edition is made with ``cxrlib book --profile cpu --data ../shared/cxr-real --out book``
and committed, because the real radiographs are not in the repository. These tests check
that it is complete and clean, that its reproducibility page names the run, and (where the
real set is on the machine) that the numbers chapter 1 shows are what the code computes.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from edition_checks import glued_values, reader_problems

from cxrlib.book import chapter_variants
from cxrlib.book import runner as bookrunner

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK = REPO_ROOT / "book"
PLANNED = [run.output for run in bookrunner._plan_for(REPO_ROOT, None)]


def _chapter(name: str) -> nbformat.NotebookNode:
    return nbformat.read(BOOK / "chapters" / f"{name}.ipynb", as_version=4)


def injected_parameters(notebook: nbformat.NotebookNode) -> dict[str, Any]:
    """The parameters papermill injected when the edition was executed."""
    for cell in notebook.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {
                node.targets[0].id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign)
            }
    raise AssertionError("no injected-parameters cell: not executed by cxrlib book")


def test_every_planned_chapter_is_in_the_edition_executed_without_errors():
    present = sorted(p.stem for p in (BOOK / "chapters").glob("*.ipynb"))
    assert present == sorted(PLANNED), "book/chapters must hold exactly the planned chapters"
    for name in PLANNED:
        notebook = _chapter(name)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{name}: a code cell was not executed"
        for cell in code:
            for output in cell.get("outputs", []):
                assert output.get("output_type") != "error", f"{name}: {output.get('ename')}"
        params = injected_parameters(notebook)
        if "data_dir" in params:
            assert not Path(params["data_dir"]).is_absolute(), f"{name}: machine path shown"


def test_edition_sources_match_the_notebooks():
    """The edition was executed from today's sources (prose and code unchanged).

    The runner drops the cells the data rule out and sets the run's title; it records both
    in the executed notebook, so today's source is prepared the same way here.
    """
    for run in bookrunner._plan_for(REPO_ROOT, None):
        executed = _chapter(run.output)
        variant = chapter_variants.variant_of(executed)
        assert variant["title"] == run.title, f"{run.output}: executed with another title"
        source = chapter_variants.prepare_chapter(
            bookrunner.read_chapter(bookrunner.chapter_source(REPO_ROOT, run.source)),
            facts=variant["facts"],
            title=variant["title"],
        )
        body = [
            c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])
        ]
        assert [c.source for c in body] == [c.source for c in source.cells], (
            f"{run.output} was executed from an older notebooks/{run.source}.md: rebuild "
            "the edition (`cxrlib book --profile cpu --data ../shared/cxr-real --out book`)"
        )


def test_edition_shows_the_real_sets_variant(real_dir):
    """The real set has no clinical readings: the edition drops the cells that need them."""
    facts = chapter_variants.dataset_facts(real_dir)
    for name in PLANNED:
        assert chapter_variants.variant_of(_chapter(name))["facts"] == facts, name


def test_executed_titles_are_distinct():
    titles = [_chapter(name).cells[0].source.split("\n", 1)[0] for name in PLANNED]
    assert len(set(titles)) == len(titles), f"two chapters share a title: {titles}"


def test_reproducibility_page_names_profile_real_data_and_a_commit_of_this_history():
    text = (BOOK / "reproducibility.md").read_text()
    assert "| profile | `cpu` (`book/params/cpu.yml`) |" in text
    assert "cxr-real" in text, "the edition must be built on the real radiographs"
    for name in PLANNED:
        assert f"| {name} |" in text, f"no run time recorded for {name}"
    commit = text.split("| git commit | `", 1)[1].split("`", 1)[0].split()[0]
    found = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0 and not (REPO_ROOT / ".git" / "shallow").exists():
        pytest.fail(f"the edition names commit {commit}, which is not in this history")


def test_chapter1_numbers_are_what_the_code_computes(real_dir, tmp_path):
    from cxrlib import preprocess
    from cxrlib.book import explore
    from cxrlib.data import datasets

    notebook = _chapter("01_data_exploration")
    shown = glued_values(notebook)
    params = injected_parameters(notebook)
    scan = datasets.scan_dataset(real_dir)
    assert shown["n_images"] == scan.report.images
    assert shown["n_masks"] == scan.report.masks
    assert shown["n_without_mask"] == len(scan.report.images_without_mask)
    assert shown["n_renamed"] == len(scan.report.renamed_masks)
    arrays = preprocess.load_arrays(
        scan.table, size=params["image_size"], cache_dir=tmp_path / "cache", progress=False
    )
    stats = explore.lung_statistics(scan.table, arrays.masks, arrays.has_mask)
    summary = explore.lung_size_summary(stats)
    for site in summary.index:
        np.testing.assert_allclose(
            shown[f"lung_{site}"], summary.loc[site, "mean_lung_fraction"], rtol=1e-9
        )
    comparison = explore.compare_sites(stats)
    np.testing.assert_allclose(shown["ratio_lung"], comparison["ratio"], rtol=1e-9)


def test_every_chapter_reads_clean():
    """No blank figure, no all-missing table or column, every glue resolved, no claim
    contradicted by the numbers it rests on, in every chapter of the edition."""
    problems = {name: reader_problems(_chapter(name)) for name in PLANNED}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


def _blank_png() -> str:
    import base64
    import io

    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.ones((40, 60, 3)), format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_reader_checks_catch_a_broken_chapter():
    """Each check finds its fault in a copy of a chapter broken on purpose."""
    import copy

    import edition_checks

    notebook = copy.deepcopy(_chapter("06_tb_classification"))
    assert reader_problems(notebook) == [] or pytest.fail("the chapter is broken already")
    figure = next(
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if any(k in o.get("data", {}) for k in edition_checks._PNG_KEYS)
    )
    key = next(k for k in edition_checks._PNG_KEYS if k in figure["data"])
    figure["data"][key] = _blank_png()
    assert len(edition_checks.blank_figures(notebook)) == 1

    table = "<table><tr><th>a</th><th>b</th></tr><tr><td>NaN</td><td>None</td></tr></table>"
    column = "<table><tr><td>0.9</td><td>NaN</td></tr><tr><td>0.8</td><td>NaN</td></tr></table>"
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": table}))
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": column}))
    found = edition_checks.missing_tables(notebook)
    assert any("only missing values" in p for p in found), found
    assert any("columns [1]" in p for p in found), found

    notebook.cells.append(nbformat.v4.new_markdown_cell("AUC {glue:text}`no_such_value:.3f`."))
    assert edition_checks.unresolved_glue(notebook) == [
        f"cell {len(notebook.cells) - 1}: glue reference 'no_such_value' was never glued"
    ]

    values = glued_values(_chapter("06_tb_classification"))
    flipped = {"inside": "above", "above": "below", "below": "inside"}
    values["mc_vs_jaeger"] = flipped[values["mc_vs_jaeger"]]
    values["auc"] = values["auc_high"] + 0.05
    found = edition_checks.contradicted_claims(values)
    assert any(p.startswith("mc_vs_jaeger says") for p in found), found
    assert any(p.startswith("auc = ") for p in found), found
