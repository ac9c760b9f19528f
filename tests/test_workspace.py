"""Tests for cxrlib.book.workspace: run folders and the phantom default."""

from __future__ import annotations

import pytest

from cxrlib.book import workspace


def test_phantoms_are_generated_once_and_reused(tmp_path):
    first = workspace.resolve_data_dir(None, tmp_path, n=4, size=64, seed=1)
    assert workspace.is_phantom_folder(first)
    stamp = (first / "phantoms.json").stat().st_mtime_ns
    again = workspace.resolve_data_dir(None, tmp_path, n=4, size=64, seed=1)
    assert again == first and (first / "phantoms.json").stat().st_mtime_ns == stamp
    changed = workspace.resolve_data_dir(None, tmp_path, n=5, size=64, seed=1)
    assert (changed / "phantoms.json").stat().st_mtime_ns != stamp
    assert len(list((changed / "Lung Segmentation" / "CXR_png").glob("*.png"))) == 5


def test_given_data_dir_must_exist(tmp_path):
    assert workspace.resolve_data_dir(tmp_path, tmp_path / "run") == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="missing"):
        workspace.resolve_data_dir(tmp_path / "missing", tmp_path / "run")


def test_run_dir_cannot_be_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        workspace.prepare_run_dir(tmp_path / "f")


def test_real_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_REAL_DIR", str(tmp_path))
    assert workspace.real_data_dir() == tmp_path
    monkeypatch.setenv("CXR_REAL_DIR", str(tmp_path / "nope"))
    assert workspace.real_data_dir() is None
    monkeypatch.delenv("CXR_REAL_DIR")
    assert workspace.real_data_dir() is None


def test_display_path_relative_from_working_directory_or_absolute(tmp_path, monkeypatch):
    root = tmp_path / "work" / "main"
    (root / "runs").mkdir(parents=True)
    monkeypatch.chdir(root)
    assert workspace.display_path(root / "runs" / "cpu") == "runs/cpu"
    assert workspace.display_path(tmp_path / "work" / "shared") == "../shared"
    far = tmp_path / "elsewhere"
    assert workspace.display_path(far) == str(far.resolve())
    assert workspace.display_path(root / "runs", start=tmp_path / "work") == "main/runs"
