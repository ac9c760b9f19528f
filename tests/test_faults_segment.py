"""Kills during `cxrlib segment` and during cache writes: the rerun recovers by itself.

A child process is made to die (``os._exit``, as SIGKILL would: no clean-up runs) at a
chosen write; the rerun in this process must succeed without hand cleaning, leave no
temporary file behind and give the same outputs as an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import save_standin_model

from cxrlib.data.imageio import read_mask, write_png
from cxrlib.lock import LOCK_NAME
from cxrlib.preprocess import load_arrays
from cxrlib.seg.folder import segment_folder

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.full((48, 40), 0.8, np.float32)
        image[8:40, 4:18] = 0.2 + 0.05 * rng.random((32, 14))
        image[8:40, 22:36] = 0.2 + 0.05 * rng.random((32, 14))
        write_png(folder / f"MCUCXR_{i:04d}_0.png", image)
    return folder


def _die_at_write(code: str, n: int, target: str) -> str:
    """Python source that runs ``code`` with the ``n``-th atomic write of ``target`` dying."""
    return textwrap.dedent(
        f"""
        import os, sys
        import cxrlib.atomic as atomic
        sys.path.insert(0, {str(REPO / "tests")!r})
        real = atomic.atomic_write
        count = [0]
        def dying(path, write, suffix):
            if os.path.basename(str(path)).endswith({target!r}):
                count[0] += 1
                if count[0] == {n}:
                    def partial(tmp):
                        write(tmp)
                        os._exit(137)  # killed after the temporary file, before the rename
                    return real(path, partial, suffix)
            return real(path, write, suffix)
        atomic.atomic_write = dying
        """
    ) + textwrap.dedent(code)


def _run_child(source: str) -> int:
    return subprocess.run([sys.executable, "-c", source], cwd=REPO, capture_output=True).returncode


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())


@pytest.mark.parametrize(("target", "n"), [(".png", 3), ("lungs.csv", 1)])
def test_a_segment_run_killed_mid_write_reruns_cleanly(tmp_path, target, n):
    model = save_standin_model(tmp_path / "model.keras")
    images = _images(tmp_path / "images")
    out = tmp_path / "out"
    code = f"""
    from cxrlib.seg.folder import segment_folder
    segment_folder({str(model)!r}, {str(images)!r}, {str(out)!r}, progress=False, io_threads=1)
    """
    assert _run_child(_die_at_write(code, n, target)) == 137
    assert _hidden(out), "the kill left a temporary file (the case this test is about)"
    assert (out / LOCK_NAME).exists(), "the killed run still holds its lock"
    report = segment_folder(model, images, out, progress=False, io_threads=1)
    assert len(report.table) == 6 and not report.skipped
    assert _hidden(out) == [], "temporary files of the killed run are left"
    assert not (out / LOCK_NAME).exists()
    clean = segment_folder(model, images, tmp_path / "clean", progress=False, io_threads=1)
    for name in clean.table["file"]:
        stem = Path(name).stem + ".png"
        assert np.array_equal(read_mask(out / stem), read_mask(tmp_path / "clean" / stem))
    lungs = pd.read_csv(out / "lungs.csv")
    assert lungs.equals(pd.read_csv(tmp_path / "clean" / "lungs.csv"))


def test_a_cache_write_killed_before_its_rename_is_rebuilt(tmp_path):
    images = _images(tmp_path / "images", n=4)
    rows = [
        {"id": p.stem, "image_path": str(p), "mask_path": None}
        for p in sorted(images.glob("*.png"))
    ]
    table_file = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(table_file, index=False)
    cache = tmp_path / "cache"
    code = f"""
    import os
    import pandas as pd
    import cxrlib.preprocess.cache as cache
    real = cache._write_sidecar
    def dying(*args, **kwargs):
        real(*args, **kwargs)
        os._exit(137)  # killed with the entry written but not yet renamed into place
    cache._write_sidecar = dying
    from cxrlib.preprocess import load_arrays
    table = pd.read_csv({str(table_file)!r}).astype(object).where(lambda t: t.notna(), None)
    load_arrays(table, size=32, cache_dir={str(cache)!r}, n_jobs=1, progress=False)
    """
    assert _run_child(textwrap.dedent(code)) == 137
    table = pd.DataFrame(rows)
    arrays = load_arrays(table, size=32, cache_dir=cache, n_jobs=1, progress=False)
    again = load_arrays(table, size=32, cache_dir=cache, n_jobs=1, progress=False)
    fresh = load_arrays(table, size=32, cache_dir=False, n_jobs=1, progress=False)
    assert np.array_equal(arrays.images, fresh.images)
    assert np.array_equal(again.images, fresh.images)
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1, "the rerun wrote one complete cache entry"
    # the killed writer's folder is kept while it could still be a live writer's, and
    # removed by the next write once it is old
    (abandoned,) = [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    old = abandoned.stat().st_mtime - 2 * 24 * 3600
    os.utime(abandoned, (old, old))
    load_arrays(table, size=16, cache_dir=cache, n_jobs=1, progress=False)
    assert not abandoned.exists()
