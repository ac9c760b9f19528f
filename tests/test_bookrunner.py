"""Tests for cxrlib.book.runner: parameter cells, profiles, failing notebooks."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cxrlib.book import runner as bookrunner
from cxrlib.book.runner import BookBuildError


def _notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    for source, tags in cells:
        notebook.cells.append(new_code_cell(source, metadata={"tags": tags}))
    jupytext.write(notebook, path, fmt="md:myst")  # the chapters' own format
    return path


def test_notebook_parameters_reads_literals(tmp_path):
    path = _notebook(
        tmp_path / "a.md",
        [
            ("import os", []),
            ("size = 128\nname = 'unet'\ndata_dir = None  # comment", ["parameters"]),
        ],
    )
    assert bookrunner.notebook_parameters(path) == {"size": 128, "name": "unet", "data_dir": None}


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([("x = 1", [])], "exactly one 'parameters' cell, found 0"),
        ([("x = 1", ["parameters"]), ("y = 2", ["parameters"])], "found 2"),
        ([("x = compute()", ["parameters"])], "not a literal"),
        ([("print(1)", ["parameters"])], "not `name = value`"),
    ],
)
def test_notebook_parameters_rejects_bad_cells(tmp_path, cells, message):
    path = _notebook(tmp_path / "bad.md", cells)
    with pytest.raises(BookBuildError, match=message) as info:
        bookrunner.notebook_parameters(path)
    assert "bad.md" in str(info.value)


def _fake_project(tmp_path: Path, profile_text: str) -> Path:
    root = tmp_path / "project"
    (root / "book" / "params").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "_config.yml").write_text("title: t\n")
    (root / "book" / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (root / "book" / "params" / "smoke.yml").write_text(profile_text)
    _notebook(
        root / "notebooks" / "01_data_exploration.md",
        [("data_dir = None\nimage_size = 64", ["parameters"])],
    )
    return root


def test_profile_keys_must_exist_in_parameters_cell(tmp_path):
    root = _fake_project(tmp_path, "notebooks:\n  01_data_exploration: {image_sise: 32}\n")
    profile = bookrunner.load_profile(root, "smoke")
    plan = bookrunner._plan_for(root, None)
    with pytest.raises(BookBuildError, match="image_sise") as info:
        bookrunner.validate_profile(root, profile, plan)
    assert "01_data_exploration" in str(info.value)


def test_valid_profile_passes_and_unknown_profile_is_named(tmp_path):
    root = _fake_project(tmp_path, "notebooks:\n  01_data_exploration: {image_size: 32}\n")
    profile = bookrunner.load_profile(root, "smoke")
    bookrunner.validate_profile(root, profile, bookrunner._plan_for(root, None))
    with pytest.raises(BookBuildError, match="unknown profile 'huge'.*smoke"):
        bookrunner.load_profile(root, "huge")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("phantoms: {n: 4\nnotebooks: {}\n", r"smoke\.yml, line 2, column \d+: not valid YAML"),
        ("notebooks:\n  - 01_data_exploration\n", r"smoke\.yml, line 1: 'notebooks' must be"),
        ("notebooks:\n  01_data_exploration: [1]\n", r"line 2: notebooks\.01_data_exploration"),
        ("phantoms: {n: lots}\n", r"line 1: phantoms\.n must be an integer >= 1, got 'lots'"),
        ("phantoms:\n  size: 8\n", r"line 2: phantoms\.size must be an integer >= 32"),
        ("phantoms: {layout: plain}\n", r"unknown key phantoms\.layout"),
        ("phantoms: [1, 2]\n", r"'phantoms' must be a mapping"),
        ("notebook:\n  x: {}\n", r"line 1: unknown profile key 'notebook'"),
        ("- a\n- b\n", r"a profile must be a mapping, got list"),
    ],
)
def test_malformed_profiles_name_file_line_and_key(tmp_path, text, message):
    root = _fake_project(tmp_path, text)
    with pytest.raises(BookBuildError, match=message):
        bookrunner.load_profile(root, "smoke")


def test_the_books_profiles_pass(repo_root):
    for path in sorted((repo_root / "book" / "params").glob("*.yml")):
        profile = bookrunner.load_profile(repo_root, path.stem)
        assert set(profile) <= set(bookrunner.PROFILE_KEYS)


def test_validate_profile_refuses_a_list_of_notebooks(tmp_path):
    root = _fake_project(tmp_path, "phantoms: {n: 4}\n")
    plan = bookrunner._plan_for(root, None)
    with pytest.raises(BookBuildError, match="'notebooks' must be a mapping"):
        bookrunner.validate_profile(root, {"notebooks": ["01_data_exploration"]}, plan)


def test_find_project_root(tmp_path, repo_root):
    assert bookrunner.find_project_root(repo_root / "cxrlib") == repo_root
    with pytest.raises(BookBuildError, match="no cxr-book repository"):
        bookrunner.find_project_root(tmp_path)


def test_failing_notebook_names_notebook_and_cell(tmp_path):
    source = _notebook(
        tmp_path / "02_broken.md",
        [
            ("value = 1", ["parameters"]),
            ("total = value + 1", []),
            ("raise RuntimeError('the data folder is empty')", []),
            ("never = True", []),
        ],
    )
    output = tmp_path / "out" / "02_broken.ipynb"
    with pytest.raises(BookBuildError) as info:
        bookrunner.execute_notebook(
            source, output, {"value": 2}, cwd=tmp_path / "run", progress=False
        )
    message = str(info.value)
    assert "02_broken.md" in message
    assert "cell 4" in message  # exec count: papermill injects a parameters cell first
    assert "RuntimeError: the data folder is empty" in message
    assert output.exists()


def test_executes_with_parameters(tmp_path):
    source = _notebook(
        tmp_path / "ok.md",
        [("value = 1", ["parameters"]), ("print(value * 10)", [])],
    )
    output = tmp_path / "ok-out.ipynb"
    seconds = bookrunner.execute_notebook(
        source, output, {"value": 4}, cwd=tmp_path, progress=False
    )
    executed = nbformat.read(output, as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "40" in text and seconds > 0


def test_portable_path_inside_next_to_and_far_from_root(tmp_path):
    root = tmp_path / "work" / "main"
    (root / "runs" / "cpu").mkdir(parents=True)
    (tmp_path / "work" / "shared" / "cxr-real").mkdir(parents=True)
    assert bookrunner.portable_path(root / "runs" / "cpu", root) == "runs/cpu"
    assert bookrunner.portable_path(root, root) == "."
    shared = tmp_path / "work" / "shared" / "cxr-real"
    assert bookrunner.portable_path(shared, root) == "../shared/cxr-real"
    far = tmp_path / "elsewhere" / "data"
    assert bookrunner.portable_path(far, root) == str(far.resolve())
    assert bookrunner.portable_path(tmp_path / "work", root) == str((tmp_path / "work").resolve())


def test_reproducibility_page_records_run_and_rebuild_command(tmp_path, repo_root):
    page = bookrunner.write_reproducibility_page(
        tmp_path,
        profile="cpu",
        data_description="`cxr-real` (`../shared/cxr-real`)",
        timings={"01_data_exploration": 60.0, "02_augmentation": 120.5},
        root=repo_root,
        rebuild_command="cxrlib book --profile cpu --data ../shared/cxr-real --out book",
    )
    text = page.read_text()
    assert "| profile | `cpu` (`book/params/cpu.yml`) |" in text
    assert "| 02_augmentation | 120.5 |" in text
    assert "**180.5** (3.0 min)" in text
    assert "`cxrlib book --profile cpu --data ../shared/cxr-real --out book`" in text
    assert not list(tmp_path.glob("*.part"))
    default = bookrunner.write_reproducibility_page(
        tmp_path,
        profile="smoke",
        data_description="synthetic phantoms",
        timings={},
        root=repo_root,
    )
    assert "`cxrlib book --profile smoke`" in default.read_text()


def test_build_records_the_commit_read_before_the_notebooks_ran(tmp_path, repo_root, monkeypatch):
    commits = iter(["abc1234", "abc1234 (with uncommitted changes)"])
    monkeypatch.setattr(bookrunner, "_git_commit", lambda root: next(commits))
    ran = []

    def fake_execute(source, output, parameters, *, cwd, progress, facts, title):
        assert facts == {"readings": False} and title is None
        ran.append((source.stem, dict(parameters), cwd))
        return 1.5

    monkeypatch.setattr(bookrunner, "execute_notebook", fake_execute)
    monkeypatch.setattr(bookrunner, "dataset_facts", lambda path: {"readings": False})
    data = tmp_path / "data"
    data.mkdir()

    def build(**options):
        return bookrunner.build_book(
            profile="smoke",
            data_dir=data,
            out_dir=tmp_path / "book",
            runs_dir=tmp_path / "runs",
            notebooks=["01_data_exploration"],
            skip_build=True,
            progress=False,
            root=repo_root,
            **options,
        )

    text = (build() / "reproducibility.md").read_text()
    assert "| git commit | `abc1234` |" in text
    assert "| 01_data_exploration | 1.5 |" in text
    ((name, parameters, cwd),) = ran
    assert name == "01_data_exploration" and cwd == repo_root
    assert parameters["data_dir"] == bookrunner.portable_path(data, repo_root)
    assert (repo_root / parameters["data_dir"]).resolve() == data.resolve()
    ran.clear()
    build(relative_paths=False)
    assert ran[0][1]["data_dir"] == str(data.resolve())


def test_jupyter_book_writes_into_the_book_folder(tmp_path, repo_root, monkeypatch):
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    monkeypatch.setattr(bookrunner.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done)
    html = bookrunner._run_jupyter_book(repo_root, repo_root / "book")
    (command,) = calls
    assert command[command.index("--path-output") + 1] == str(repo_root / "book")
    assert "--warningiserror" in command
    assert html == repo_root / "book" / "_build" / "html"
