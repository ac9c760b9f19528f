"""Where a notebook reads its data and writes its outputs.

Notebooks take ``data_dir`` and ``run_dir`` parameters. ``data_dir=None`` means "the
embedded default": synthetic phantoms generated (once, deterministically) inside the run
folder. Every file a notebook writes goes under ``run_dir``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cxrlib.paths import display_path

__all__ = ["prepare_run_dir", "resolve_data_dir", "real_data_dir", "display_path"]


def prepare_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Create (if needed) and return the run folder as an absolute path."""
    path = Path(run_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"run_dir {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    n: int = 120,
    size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Return the dataset folder a notebook should read.

    Parameters
    ----------
    data_dir
        A dataset folder (any layout ``cxrlib.data.datasets`` knows), or None for phantoms.
    run_dir
        The notebook's run folder; phantoms go to ``run_dir/phantoms``.
    n, size, seed
        Phantom count, image side and seed when ``data_dir`` is None. An existing
        phantom folder made with the same settings is reused.

    Returns
    -------
    pathlib.Path
        An existing folder.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` is given but does not exist.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"data_dir {path} does not exist or is not a folder")
        return path
    from cxrlib.synthetic import write_dataset

    target = prepare_run_dir(run_dir) / "phantoms"
    manifest_path = target / "phantoms.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        if (manifest.get("seed"), manifest.get("size"), manifest.get("n_images")) == (
            seed,
            size,
            n,
        ):
            return target
    write_dataset(target, n=n, size=size, seed=seed, overwrite=True, progress=progress)
    return target


def real_data_dir() -> Path | None:
    """Return the real development set named by ``CXR_REAL_DIR``, or None when absent."""
    value = os.environ.get("CXR_REAL_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


def is_phantom_folder(path: str | os.PathLike[str]) -> bool:
    """Return True when ``path`` was written by :func:`cxrlib.synthetic.write_dataset`."""
    return (Path(path) / "phantoms.json").is_file()


def phantom_and_real_examples(
    data_path: str | os.PathLike[str],
    *,
    n: int = 4,
    size: int = 256,
    compare_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
):
    """Return ``n`` phantoms and ``n`` real radiographs at the same size, for a side-by-side.

    When ``data_path`` holds phantoms, the real radiographs come from ``compare_dir`` or,
    if that is None, from ``CXR_REAL_DIR``; when ``data_path`` holds real radiographs, the
    phantoms are generated in memory.

    Returns
    -------
    tuple
        ``(phantoms, real)``: ``float32`` arrays ``(n, size, size)``; ``real`` is None when
        no real radiographs are available.
    """
    from cxrlib.book.explore import pick_examples
    from cxrlib.data.datasets import scan_dataset
    from cxrlib.preprocess import load_arrays
    from cxrlib.synthetic import generate_arrays

    def examples_from(folder: Path):
        table = scan_dataset(folder).table
        rows = table.iloc[pick_examples(table, n=n, seed=seed)].reset_index(drop=True)
        arrays = load_arrays(rows, size=size, cache_dir=False, n_jobs=1, progress=False)
        return arrays.images[..., 0]

    data_path = Path(data_path)
    if is_phantom_folder(data_path):
        phantoms = examples_from(data_path)
        other = Path(compare_dir) if compare_dir is not None else real_data_dir()
        real = examples_from(other) if other is not None and other.is_dir() else None
    else:
        real = examples_from(data_path)
        phantoms = generate_arrays(n, size=size, seed=seed)[0]
    return phantoms, real
