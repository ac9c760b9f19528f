"""Execute the book's notebooks with papermill and build the Jupyter Book.

The runner reads a parameter profile (``book/params/<profile>.yml``), checks that every
key it sets exists in the target notebook's ``parameters`` cell, executes the ordered
chapter sources from ``notebooks/`` (MyST Markdown notebooks, read with jupytext) into the
book folder as executed ``.ipynb`` files, writes the reproducibility
page, and finally runs ``jupyter-book build`` with warnings as errors.

Profiles look like::

    phantoms: {n: 120, size: 256, seed: 0}   # data generated when --data is not given
    notebooks:
      01_data_exploration: {image_size: 128}

Keys under ``notebooks`` are the executed notebook names of :data:`BOOK_PLAN` (a
notebook that the plan runs twice, such as segmentation training, has two names).
"""

from __future__ import annotations

import ast
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlib.book.chapter_variants import dataset_facts, prepare_chapter
from cxrlib.book.profile import PHANTOM_KEYS, PROFILE_KEYS, BookBuildError, load_profile
from cxrlib.runs import versions

__all__ = [
    "BookBuildError",
    "PHANTOM_KEYS",
    "PROFILE_KEYS",
    "NotebookRun",
    "BOOK_PLAN",
    "find_project_root",
    "portable_path",
    "load_profile",
    "notebook_parameters",
    "read_chapter",
    "chapter_source",
    "validate_profile",
    "execute_notebook",
    "build_book",
]


@dataclass(frozen=True)
class NotebookRun:
    """One executed chapter: a source notebook, its output name and fixed parameters."""

    source: str
    output: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: The executed page's H1 title where it differs from the source's (a chapter run twice).
    title: str | None = None


#: The chapters in order. Runs whose source notebook does not exist yet are skipped.
BOOK_PLAN: tuple[NotebookRun, ...] = (
    NotebookRun("01_data_exploration", "01_data_exploration"),
    NotebookRun("02_augmentation", "02_augmentation"),
    NotebookRun(
        "03_segmentation_training", "03a_unet_training", {"model": "unet"}, "Training a U-Net"
    ),
    NotebookRun(
        "03_segmentation_training",
        "03b_resunet_training",
        {"model": "resunet"},
        "Training a ResUNet",
    ),
    NotebookRun("04_unet_vs_resunet", "04_unet_vs_resunet"),
    NotebookRun("05_tb_exploration", "05_tb_exploration"),
    NotebookRun("06_tb_classification", "06_tb_classification"),
)


#: Suffix of the chapter sources in ``notebooks/`` (jupytext ``md:myst``).
SOURCE_SUFFIX = ".md"
_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def chapter_source(root: Path, name: str) -> Path:
    """The source file of chapter ``name``: ``notebooks/<name>.md``."""
    return root / "notebooks" / f"{name}{SOURCE_SUFFIX}"


def read_chapter(path: Path) -> Any:
    """Read a chapter source (``.md`` through jupytext, or ``.ipynb``) as a notebook.

    The notebook gets what papermill needs (``kernelspec``, ``language_info``) and
    stable cell ids (``cell-00``, ``cell-01``, ...), so executing the same source twice
    gives the same file.

    Raises
    ------
    BookBuildError
        When the file is missing or is not a readable notebook.
    """
    import jupytext

    path = Path(path)
    if not path.is_file():
        raise BookBuildError(f"{path}: chapter source does not exist")
    try:
        notebook = jupytext.read(path)
    except Exception as error:  # jupytext/nbformat raise many types for a bad file
        raise BookBuildError(f"{path}: not a readable notebook ({error})") from error
    notebook.metadata.setdefault("kernelspec", dict(_KERNELSPEC))
    notebook.metadata.setdefault("language_info", {"name": "python", "version": "3.11"})
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
    return notebook


def find_project_root(start: Path | None = None) -> Path:
    """Return the repository root: the first folder upward with ``_config.yml`` and ``book/``.

    Raises
    ------
    BookBuildError
        When no such folder exists above ``start`` (default: the working directory).
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "book" / "_toc.yml").is_file():
            return folder
    raise BookBuildError(
        f"no cxr-book repository (a folder with _config.yml and book/_toc.yml) at or above {here}"
    )


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Return the names and literal values assigned in a notebook's ``parameters`` cell.

    Raises
    ------
    BookBuildError
        When the notebook has no cell tagged ``parameters``, has more than one, or the
        cell holds anything other than literal assignments.
    """
    notebook = read_chapter(path)
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise BookBuildError(f"{path}: expected exactly one 'parameters' cell, found {len(cells)}")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError as error:
        raise BookBuildError(f"{path}: parameters cell does not parse: {error}") from error
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            raise BookBuildError(
                f"{path}: parameters cell line {node.lineno} is not `name = value`"
            )
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            raise BookBuildError(f"{path}: parameters cell line {node.lineno} assigns a non-name")
        try:
            values[target.id] = ast.literal_eval(node.value)
        except ValueError as error:
            raise BookBuildError(
                f"{path}: parameter {target.id!r} is not a literal value"
            ) from error
    return values


def _plan_for(root: Path, only: Iterable[str] | None) -> list[NotebookRun]:
    wanted = set(only) if only else None
    plan = [r for r in BOOK_PLAN if chapter_source(root, r.source).is_file()]
    if wanted is not None:
        known = {r.output for r in plan} | {r.source for r in plan}
        unknown = wanted - known
        if unknown:
            raise BookBuildError(f"unknown notebook(s) {sorted(unknown)}; known: {sorted(known)}")
        plan = [r for r in plan if r.output in wanted or r.source in wanted]
    return plan


def validate_profile(root: Path, profile: Mapping[str, Any], plan: Iterable[NotebookRun]) -> None:
    """Check that every key the profile sets exists in its notebook's ``parameters`` cell.

    Raises
    ------
    BookBuildError
        Naming the profile key and the notebook when a key is unknown.
    """
    runs = {r.output: r for r in plan}
    per_notebook = profile.get("notebooks") or {}
    if not isinstance(per_notebook, Mapping):
        raise BookBuildError(
            f"profile key 'notebooks' must be a mapping from notebook name to parameters, "
            f"got {type(per_notebook).__name__}"
        )
    for output, values in per_notebook.items():
        if values is not None and not isinstance(values, Mapping):
            raise BookBuildError(
                f"profile key notebooks.{output} must be a mapping of parameters, got "
                f"{type(values).__name__}"
            )
        if output not in {r.output for r in BOOK_PLAN}:
            raise BookBuildError(f"profile names an unknown notebook {output!r}")
        if output not in runs:
            continue
        source = chapter_source(root, runs[output].source)
        declared = notebook_parameters(source)
        for key in values or {}:
            if key not in declared:
                raise BookBuildError(
                    f"profile key {output}.{key} is not a parameter of {source.name} "
                    f"(its parameters: {sorted(declared)})"
                )


def portable_path(path: Path | str, root: Path) -> str:
    """``path`` as typed from the repository root (:func:`cxrlib.book.workspace.display_path`).

    The notebooks run with ``root`` as working directory, so the executed chapters and the
    reproducibility page show ``runs/cpu/...`` and ``../shared/cxr-real``, not the build
    machine's folders.
    """
    from cxrlib.paths import display_path

    return display_path(path, root)


def execute_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    cwd: Path,
    progress: bool = True,
    facts: Mapping[str, bool] | None = None,
    title: str | None = None,
) -> float:
    """Execute one chapter source with papermill; return its run time in seconds.

    ``source`` is read with :func:`read_chapter` (MyST Markdown or ``.ipynb``); the
    executed notebook is written to ``output``. With ``facts`` (the dataset's, from
    :func:`cxrlib.book.chapter_variants.dataset_facts`) or ``title``, the cells the data
    rule out are dropped and the title set first
    (:func:`cxrlib.book.chapter_variants.prepare_chapter`).

    Raises
    ------
    BookBuildError
        When a cell fails: the message names the notebook, the cell number, the
        exception and where the partially executed copy was written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    notebook = read_chapter(source)
    if facts is not None or title is not None:
        notebook = prepare_chapter(notebook, facts=facts or {}, title=title)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            notebook,
            str(output),
            parameters=dict(parameters),
            cwd=str(cwd),
            kernel_name="python3",
            progress_bar=progress,
            log_output=False,
        )
    except PapermillExecutionError as error:
        first_line = str(error.evalue).splitlines()[0] if error.evalue else ""
        raise BookBuildError(
            f"notebook {source.name} failed in cell {error.exec_count} "
            f"(cell index {error.cell_index}): {error.ename}: {first_line}\n"
            f"the partially executed notebook is at {output}"
        ) from None
    return time.perf_counter() - start


def _stage_book(root: Path, book_dir: Path) -> None:
    """Copy the book's sources (not its chapters or build) into ``book_dir``."""
    source = root / "book"
    if book_dir.resolve() == source.resolve():
        return
    book_dir.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in ("_build", "chapters") or item.name.startswith("."):
            continue
        target = book_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{out}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


#: Packages whose versions the reproducibility page lists.
_PAGE_PACKAGES = (
    "cxrlib",
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "pandas",
    "papermill",
    "jupyter-book",
)


def _cpu_name() -> str:
    """The processor's model name where the system tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_reproducibility_page(
    book_dir: Path,
    *,
    profile: str,
    data_description: str,
    timings: Mapping[str, float],
    root: Path,
    rebuild_command: str | None = None,
    commit: str | None = None,
) -> Path:
    """Write ``reproducibility.md``: data, profile, hardware, versions, commit, run times.

    ``rebuild_command`` is the ``cxrlib book`` call that rebuilds this edition; by default
    it is worked out from ``profile`` and ``data_description``. ``commit`` is the git
    commit the notebooks were executed from (:func:`build_book` reads it before running
    them, since the run rewrites tracked files); by default it is read now.
    """
    if commit is None:
        commit = _git_commit(root)
    if rebuild_command is None:
        data_option = " --data DIR" if "phantom" not in data_description else ""
        rebuild_command = f"cxrlib book --profile {profile}{data_option}"
    total = sum(timings.values())
    lines = [
        "# Reproducibility",
        "",
        "This page is written by `cxrlib book` each time the book is built; nothing on it is",
        "typed by hand.",
        "",
        "| what | value |",
        "|---|---|",
        f"| profile | `{profile}` (`book/params/{profile}.yml`) |",
        f"| data | {data_description} |",
        f"| git commit | `{commit}` |",
        f"| machine | {_cpu_name()}, {os.cpu_count()} CPU cores, {platform.system()} |",
        f"| python | {platform.python_version()} |",
        f"| built | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
        "",
        "## Library versions",
        "",
        "| package | version |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in versions(*_PAGE_PACKAGES, backend=False).items()],
        "",
        "## Run time of each notebook",
        "",
        "| notebook | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
        f"| **all notebooks** | **{total:.1f}** ({total / 60:.1f} min) |",
        "",
        f"To rebuild this edition, from the repository root: `{rebuild_command}`.",
        "",
    ]
    path = book_dir / "reproducibility.md"
    tmp = path.with_suffix(".md.part")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def _run_jupyter_book(root: Path, book_dir: Path) -> Path:
    exe = Path(sys.executable).parent / "jupyter-book"
    command = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_dir)]
    command += ["--config", str(root / "_config.yml"), "--warningiserror", "--keep-going"]
    # Without --path-output, jupyter-book writes next to the first _config.yml it finds
    # above the book, which for `--out book` is the repository root, not book/_build.
    command += ["--path-output", str(book_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise BookBuildError(f"jupyter-book build failed for {book_dir}:\n{tail}")
    return book_dir / "_build" / "html"


def build_book(
    *,
    profile: str = "smoke",
    data_dir: Path | str | None = None,
    out_dir: Path | str | None = None,
    notebooks: Iterable[str] | None = None,
    skip_build: bool = False,
    progress: bool = True,
    root: Path | None = None,
    runs_dir: Path | str | None = None,
    relative_paths: bool = True,
) -> Path:
    """Execute the notebooks of ``profile`` and build the HTML book.

    Parameters
    ----------
    profile
        Name of a file in ``book/params/`` (``smoke``, ``cpu``, ``gpu``).
    data_dir
        Dataset folder passed to every notebook as ``data_dir``; when None, phantoms are
        generated once (profile key ``phantoms``) into ``runs/<profile>/phantoms`` and
        reused by later builds with the same settings.
    out_dir
        The book folder to execute into and build. Defaults to ``runs/<profile>/book``;
        pass ``book`` to update the published edition in place.
    notebooks
        Run only these (executed or source names).
    skip_build
        Execute only; do not call ``jupyter-book``.
    runs_dir
        Folder for generated data, models and other run outputs; defaults to
        ``runs/<profile>`` in the repository.
    relative_paths
        Give the notebooks ``data_dir``/``run_dir`` relative to the repository root where
        they can be (:func:`portable_path`; the notebooks run from the root), so the
        published chapters show ``../shared/cxr-real``. False gives absolute paths, for
        executed chapters that will be re-run from another folder (nbval starts each
        kernel in the notebook's own folder).

    Returns
    -------
    pathlib.Path
        The HTML folder (or the book folder when ``skip_build``).
    """
    from tqdm.auto import tqdm

    root = find_project_root(root)
    settings = load_profile(root, profile)
    plan = _plan_for(root, notebooks)
    if not plan:
        raise BookBuildError(f"no notebooks to run in {root / 'notebooks'}")
    validate_profile(root, settings, plan)
    # Read before executing: writing the chapters into a tracked folder (--out book) would
    # otherwise make every edition look built "with uncommitted changes".
    commit = _git_commit(root)
    runs_root = Path(runs_dir).resolve() if runs_dir else root / "runs" / profile
    book_dir = Path(out_dir).resolve() if out_dir else runs_root / "book"
    _stage_book(root, book_dir)

    if data_dir is None:
        from cxrlib.book.workspace import resolve_data_dir

        phantoms = dict(settings.get("phantoms") or {})
        # Reuses phantoms made with the same settings, so file times (part of every trained
        # model's key) do not change and a rebuild reuses the trained models.
        data_path = resolve_data_dir(
            None,
            runs_root,
            n=int(phantoms.get("n", 120)),
            size=int(phantoms.get("size", 256)),
            seed=int(phantoms.get("seed", 0)),
            progress=progress,
        )
        description = f"synthetic phantoms (`cxrlib.synthetic`, {phantoms or 'defaults'})"
    else:
        data_path = Path(data_dir).resolve()
        if not data_path.is_dir():
            raise BookBuildError(f"data folder {data_path} does not exist")
        description = f"`{data_path.name}` (`{portable_path(data_path, root)}`)"

    rebuild_command = f"cxrlib book --profile {profile}"
    if data_dir is not None:
        rebuild_command += f" --data {portable_path(data_path, root)}"
    if out_dir is not None:
        rebuild_command += f" --out {portable_path(book_dir, root)}"

    def shown(path: Path) -> str:
        return portable_path(path, root) if relative_paths else str(Path(path).resolve())

    facts = dataset_facts(data_path)
    timings: dict[str, float] = {}
    per_notebook = settings.get("notebooks") or {}
    bar = tqdm(plan, desc="notebooks", unit="nb", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.output)
        source = chapter_source(root, run.source)
        declared = notebook_parameters(source)
        params: dict[str, Any] = dict(run.parameters)
        params.update(per_notebook.get(run.output) or {})
        # Paths are given relative to the repository root where they can be (the notebooks
        # run there), so the executed chapters read like a reader's own run.
        if "data_dir" in declared:
            params["data_dir"] = shown(data_path)
        if "run_dir" in declared:
            params["run_dir"] = shown(runs_root / run.output)
        if "runs_root" in declared:
            params["runs_root"] = shown(runs_root)
        output = book_dir / "chapters" / f"{run.output}.ipynb"
        timings[run.output] = execute_notebook(
            source, output, params, cwd=root, progress=False, facts=facts, title=run.title
        )
    write_reproducibility_page(
        book_dir,
        profile=profile,
        data_description=description,
        timings=timings,
        root=root,
        rebuild_command=rebuild_command,
        commit=commit,
    )
    runs_root.mkdir(parents=True, exist_ok=True)
    (runs_root / "timings.json").write_text(json.dumps(timings, indent=2))
    if skip_build:
        return book_dir
    return _run_jupyter_book(root, book_dir)
