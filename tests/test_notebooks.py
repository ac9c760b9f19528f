"""Notebook tests: clean sources, valid profiles, and the smoke book executed end to end.

The smoke book is executed once per session with papermill (``cxrlib.book.runner``), built
with Jupyter Book, and each executed chapter is re-run by nbval, which compares the cells
tagged ``nbval-check-output``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cxrlib.book import runner as bookrunner

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO_ROOT / "notebooks").glob(f"*{bookrunner.SOURCE_SUFFIX}"))
PROFILES = sorted(p.stem for p in (REPO_ROOT / "book" / "params").glob("*.yml"))


def test_there_are_notebooks():
    assert SOURCES, "no source notebooks in notebooks/"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_source_is_a_myst_notebook_with_a_parameters_cell(path):
    import jupytext

    notebook = jupytext.read(path)
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"
    assert bookrunner.notebook_parameters(path), f"{path.name} has an empty parameters cell"
    executable = bookrunner.read_chapter(path)
    assert executable.metadata["language_info"]["name"] == "python"  # papermill needs it
    assert [c["id"] for c in executable.cells] == [
        f"cell-{i:02d}" for i in range(len(executable.cells))
    ]
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    headings = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    text = "\n".join(headings)
    for section in ("## Overview", "## Prerequisites", "## Summary", "## What's next"):
        assert section in text, f"{path.name} lacks the section {section!r}"


def test_no_pip_install_or_hidden_downloads_in_notebooks():
    for path in SOURCES:
        notebook = bookrunner.read_chapter(path)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert "pip install" not in cell.source, path.name
                assert "urlretrieve" not in cell.source, path.name


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_key_is_a_notebook_parameter(profile):
    settings = bookrunner.load_profile(REPO_ROOT, profile)
    plan = bookrunner._plan_for(REPO_ROOT, None)
    bookrunner.validate_profile(REPO_ROOT, settings, plan)


@pytest.mark.parametrize("chapter", ["03a_unet_training", "03b_resunet_training"])
def test_cpu_profile_trains_exactly_the_cpu_recipe(chapter, monkeypatch):
    """The published edition's segmentation runs are what `cxrlib train-seg` trains."""
    from cxrlib import precision
    from cxrlib.book import seg_runs
    from cxrlib.seg import train_config

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(precision, "has_gpu", lambda: False)
    settings = bookrunner.load_profile(REPO_ROOT, "cpu")["notebooks"][chapter]
    run = next(r for r in bookrunner.BOOK_PLAN if r.output == chapter)
    assert settings["recipe"] == "cpu", "the cpu profile names the recipe"
    restated = {"img_size", "filters", "epochs", "batch_size", "lr_schedule", "patience"}
    assert not restated & set(settings), "the profile restates values of the recipe"
    declared = bookrunner.notebook_parameters(bookrunner.chapter_source(REPO_ROOT, run.source))
    values = {**declared, **run.parameters, **settings}
    keys = ("img_size", "filters", "epochs", "batch_size", "precision", "lr_schedule", "patience")
    config = seg_runs.segmentation_config(
        values["model"], recipe=values["recipe"], **{key: values[key] for key in keys}
    )
    assert config == train_config.cpu_recipe(run.parameters["model"])


def test_toc_lists_every_planned_chapter():
    import yaml

    toc = yaml.safe_load((REPO_ROOT / "book" / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for run in bookrunner._plan_for(REPO_ROOT, None):
        assert f"chapters/{run.output}" in files, f"{run.output} is executed but not in the toc"


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """Execute and build the smoke book once: returns (book folder, html folder)."""
    base = tmp_path_factory.mktemp("smoke")
    html = bookrunner.build_book(
        profile="smoke",
        out_dir=base / "book",
        runs_dir=base / "runs",
        progress=False,
        root=REPO_ROOT,
        relative_paths=False,  # nbval re-runs each chapter from the chapter's own folder
    )
    return base / "book", html


def _executed(book_dir: Path) -> list[Path]:
    return sorted((book_dir / "chapters").glob("*.ipynb"))


def test_smoke_book_executes_every_chapter(smoke_book):
    book_dir, _ = smoke_book
    executed = {p.stem for p in _executed(book_dir)}
    planned = {run.output for run in bookrunner._plan_for(REPO_ROOT, None)}
    assert executed == planned
    for path in _executed(book_dir):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert output.get("output_type") != "error", f"{path.name}: {output}"


def test_smoke_book_html_has_figures_and_no_tracebacks(smoke_book):
    book_dir, html = smoke_book
    for path in _executed(book_dir):
        page = html / "chapters" / f"{path.stem}.html"
        assert page.is_file(), f"no HTML page for {path.stem}"
        text = page.read_text()
        assert "<img" in text, f"{page.name} shows no figure"
        assert "Traceback" not in text, f"{page.name} shows a traceback"
    assert (html / "reproducibility.html").is_file()


#: Chapters nbval re-executes to check that their ``nbval-check-output`` cells give the
#: same output twice: the ones that train nothing (seconds each). The training chapters are
#: executed once per test run, by the ``smoke_book`` fixture; for them the test below only
#: checks that the marked cells printed something.
NBVAL_CHAPTERS = ("01_data_exploration", "05_tb_exploration")


def test_smoke_book_checked_cells_have_output(smoke_book):
    book_dir, _ = smoke_book
    n_checked = 0
    for path in _executed(book_dir):
        notebook = nbformat.read(path, as_version=4)
        checked = [c for c in notebook.cells if "nbval-check-output" in c.metadata.get("tags", [])]
        for cell in checked:
            text = "".join(o.get("text", "") for o in cell.get("outputs", []))
            assert text.strip(), f"{path.name}: a checked cell printed nothing"
        n_checked += len(checked)
    assert n_checked >= len(NBVAL_CHAPTERS), "no cell is tagged nbval-check-output"


def test_smoke_book_deterministic_cells_with_nbval(smoke_book):
    book_dir, _ = smoke_book
    sanitize = REPO_ROOT / "tests" / "nbval_sanitize.cfg"
    chapters = [p for p in _executed(book_dir) if p.stem in NBVAL_CHAPTERS]
    assert len(chapters) == len(NBVAL_CHAPTERS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
    command += ["--nbval-sanitize-with", str(sanitize), *map(str, chapters)]
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(command, capture_output=True, text=True, cwd=book_dir, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it where it can)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (it comes with the project's test extra)")
    return path


@pytest.fixture(scope="session")
def served_book(smoke_book):
    """Serve the smoke book's HTML on 127.0.0.1 for the browser."""
    import functools
    import http.server
    import threading

    _, html = smoke_book
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


#: JavaScript run on each page: what a reader would see as broken, one string per problem.
#: Figures whose pixels barely vary are blank; a table of only NaN/None says nothing; a table
#: or code block wider than its box is cut off; glue that did not resolve, or a bare "nan"
#: in the prose, is a placeholder.
READER_CHECKS = r"""
() => {
  const problems = [];
  const main = document.querySelector('main') || document.body;
  for (const img of main.querySelectorAll('img')) {
    if (!img.complete || img.naturalWidth === 0) continue;
    const canvas = document.createElement('canvas');
    const scale = Math.min(1, 400 / img.naturalWidth);
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0, sq = 0, n = 0;
    for (let i = 0; i < data.length; i += 4) {
      const g = (data[i] + data[i + 1] + data[i + 2]) / (3 * 255);
      sum += g; sq += g * g; n += 1;
    }
    const sd = Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2));
    if (sd < 0.02) problems.push('blank figure ' + img.src.split('/').pop());
  }
  const missing = new Set(['', 'nan', 'none', '<na>', 'nat', 'null']);
  for (const table of main.querySelectorAll('table')) {
    // textContent, not innerText: a folded table (hide-output) is judged by what it holds
    const cells = Array.from(table.querySelectorAll('td'))
      .map(c => c.textContent.trim().toLowerCase());
    if (cells.length && cells.every(c => missing.has(c))) {
      problems.push('table of only NaN/None');
    }
    const box = table.closest('.cell_output, .table-wrapper') || table.parentElement;
    if (box.getClientRects().length && box.scrollWidth > box.clientWidth + 1) {
      problems.push('table wider than its column (' + box.scrollWidth + ' > '
        + box.clientWidth + ' px): ' + table.innerText.slice(0, 60).replace(/\s+/g, ' '));
    }
  }
  for (const pre of main.querySelectorAll('pre')) {
    if (pre.getClientRects().length && pre.scrollWidth > pre.clientWidth + 1) {
      const start = pre.textContent.slice(0, 60).replace(/\s+/g, ' ');
      problems.push('code wider than its column: ' + start);
    }
  }
  for (const para of main.querySelectorAll('p, li')) {
    const text = para.innerText;
    if (/\{glue|\bnan\b/i.test(text)) {
      problems.push('placeholder in the prose: ' + text.slice(0, 80));
    }
  }
  return problems;
}
"""

#: A page with one of each fault, to show that READER_CHECKS finds them.
BROKEN_PAGE = """<!DOCTYPE html><html><head><title>broken</title></head><body><main>
<div class="cell_output" style="width: 200px; overflow-x: auto">
<table><tr><th>a</th><th>b</th></tr><tr><td>NaN</td><td>None</td></tr></table></div>
<div class="cell_output" style="width: 200px; overflow-x: auto"><table><tr>
<td>0.123456789</td><td>0.123456789</td><td>0.123456789</td><td>0.123456789</td></tr></table></div>
<pre style="width: 200px; overflow-x: auto">x = "a line longer than its narrow column"</pre>
<p>The AUC is nan at Montgomery.</p>
<img src="data:image/png;base64,{blank}">
</main></body></html>"""


def _blank_png() -> str:
    import base64
    import io

    import matplotlib.image
    import numpy as np

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.ones((30, 40, 3)), format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_reader_checks_catch_a_broken_page():
    """Each fault of BROKEN_PAGE is reported, and a clean page reports none."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_content(BROKEN_PAGE.replace("{blank}", _blank_png()))
            page.wait_for_load_state("load")
            problems = page.evaluate(READER_CHECKS)
            folded = "<details><summary>history</summary><table><tr><td>0.91</td></tr></table>"
            page.set_content(
                f"<html><body><main><p>AUC 0.91.</p><pre>x = 1</pre>{folded}</details></main>"
            )
            clean = page.evaluate(READER_CHECKS)
        finally:
            browser.close()
    kinds = [
        "blank figure",
        "table of only NaN/None",
        "table wider than its column",
        "code wider than its column",
        "placeholder in the prose",
    ]
    for kind in kinds:
        assert any(p.startswith(kind) for p in problems), (kind, problems)
    assert clean == []


def test_every_chapter_renders_in_a_browser(smoke_book, served_book):
    """Open each chapter in headless Chromium: figures loaded, no error text, a screenshot."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    book_dir, _ = smoke_book
    shots = REPO_ROOT / "runs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = ["intro", *[f"chapters/{p.stem}" for p in _executed(book_dir)], "reproducibility"]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            titles: list[str] = []
            for name in pages:
                response = page.goto(f"{served_book}/{name}.html", wait_until="load")
                assert response is not None and response.ok, f"{name}: HTTP error"
                broken = page.evaluate(
                    "Array.from(document.images)"
                    ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
                )
                assert broken == [], f"{name}: images that did not load: {broken}"
                if name.startswith("chapters/"):
                    count = page.evaluate("document.querySelectorAll('main img').length")
                    assert count >= 1, f"{name}: no figure on the page"
                text = page.inner_text("main")
                assert "Traceback" not in text, f"{name}: a traceback on the page"
                errors = page.evaluate(
                    "document.querySelectorAll('.output.traceback, .output.error, "
                    ".system-message, .problematic').length"
                )
                assert errors == 0, f"{name}: {errors} error outputs or build warnings shown"
                problems = page.evaluate(READER_CHECKS)
                assert problems == [], f"{name}: {problems}"
                titles.append(page.title())
                target = shots / f"{name.replace('/', '_')}.png"
                page.screenshot(path=str(target), full_page=False)
                assert target.stat().st_size > 10_000, f"{name}: empty screenshot"
        finally:
            browser.close()
    assert len(set(titles)) == len(titles), f"two pages share a title: {titles}"
