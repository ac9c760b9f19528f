"""Atomic writes: right content, ordinary permissions, nothing half-written on error."""

from __future__ import annotations

import stat

import pytest

from cxrlib.atomic import atomic_write, atomic_write_bytes, default_file_mode


def test_written_file_has_the_ordinary_mode_not_mkstemps(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "a.csv", b"x,y\n1,2\n")
    assert path.read_bytes() == b"x,y\n1,2\n"
    mode = stat.S_IMODE(path.stat().st_mode)
    plain = tmp_path / "plain.txt"
    plain.write_text("same as open()")
    assert mode == stat.S_IMODE(plain.stat().st_mode) == default_file_mode()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"old model")

    def broken(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken, ".keras")
    assert path.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_writer_sees_a_temporary_with_the_requested_suffix(tmp_path):
    seen = []
    atomic_write(
        tmp_path / "m.keras", lambda tmp: seen.append(tmp) or open(tmp, "w").close(), ".keras"
    )
    assert seen[0].endswith(".keras") and seen[0] != str(tmp_path / "m.keras")
    assert (tmp_path / "m.keras").exists()
