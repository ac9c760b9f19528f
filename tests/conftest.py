"""Shared test configuration: headless plotting, quiet TensorFlow, the real-data fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real development set named by CXR_REAL_DIR; skips the test when it is absent."""
    value = os.environ.get("CXR_REAL_DIR")
    if not value:
        pytest.skip("CXR_REAL_DIR is not set (the real development set is not on this machine)")
    path = Path(value)
    if not (path / "Lung Segmentation").is_dir():
        pytest.skip(f"CXR_REAL_DIR={path} has no 'Lung Segmentation' folder")
    return path


@pytest.fixture(scope="session")
def phantom_table(tmp_path_factory):
    """The table of 16 phantoms at 64 px (compilation layout, seed 0), made once per session."""
    from cxrlib.data.datasets import scan_dataset
    from cxrlib.synthetic import write_dataset

    root = tmp_path_factory.mktemp("phantoms16")
    write_dataset(root, n=16, size=64, seed=0, progress=False, n_jobs=1)
    return scan_dataset(root).table


def pytest_collection_modifyitems(config, items):
    """Tests that need the executed smoke book are the ``notebooks`` lane.

    ``pytest -m "not notebooks"`` (the fast lane) leaves them out; ``make test`` runs
    everything in one call, executing the smoke book once.
    """
    for item in items:
        if "smoke_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebooks)
