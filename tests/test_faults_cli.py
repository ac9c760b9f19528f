"""Reported command-line faults (issue 13, items 7, 9 and 10), one test per case.

Every test runs the command through :func:`cxrlib.cli.main` on tiny phantoms; the
segmentation model is an untrained stand-in (``tests/standins.py``), nothing is trained.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxrlib.cli import build_parser, main
from cxrlib.synthetic import MANIFEST_NAME, SynthManifest, write_dataset
from cxrlib.synthetic import writers as synth_writers
from cxrlib.synthetic.outdir import PARTIAL_NAME

SYNTH = ["--n", "4", "--size", "48", "--layout", "plain"]


def _times(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file()
    }


def _on_disk(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    from standins import save_standin_model

    return save_standin_model(tmp_path_factory.mktemp("seg") / "run" / "model.keras")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "phantoms"
    write_dataset(
        out, n=8, size=64, seed=1, layout="plain", site_fraction=0.5, n_jobs=1, progress=False
    )
    return out


# --------------------------------------------------------------------------- item 7: synth


def test_synth_again_with_the_same_settings_reuses_the_folder(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["-q", "synth", str(out), *SYNTH]) == 0
    capsys.readouterr()
    before = _times(out)
    assert main(["-q", "synth", str(out), *SYNTH]) == 0
    printed = capsys.readouterr().out
    assert "reused 4 phantoms" in printed and "nothing was rewritten" in printed
    assert _times(out) == before  # trained runs keyed on the data still accept it


def test_synth_with_other_settings_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["-q", "synth", str(out), *SYNTH]) == 0
    capsys.readouterr()
    before = _times(out)
    assert main(["-q", "synth", str(out), "--n", "3", "--size", "48", "--layout", "plain"]) == 2
    err = _error(capsys)
    assert "other settings" in err and "n_images: the folder has 4, asked for 3" in err
    assert "--overwrite" in err
    assert _times(out) == before
    argv = ["-q", "synth", str(out), "--n", "3", "--size", "48", "--layout", "plain"]
    assert main([*argv, "--overwrite"]) == 0
    assert "replacing phantoms made with other settings" in capsys.readouterr().out
    assert SynthManifest.load(out).n_images == 3 and _on_disk(out) == SynthManifest.load(out).files


def test_interrupted_synth_does_not_block_the_next_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ph"
    real = synth_writers._write_chunk
    done: list[int] = []

    def killed_after_one_chunk(args):
        if done:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) does half-way
        done.append(1)
        return real(args)

    monkeypatch.setattr(synth_writers, "_check_jobs", lambda n_jobs: 1)  # draw in this process
    monkeypatch.setattr(synth_writers, "_write_chunk", killed_after_one_chunk)
    assert main(["-q", "synth", str(out), "--n", "6", "--size", "48", "--layout", "plain"]) == 130
    assert not (out / MANIFEST_NAME).exists() and (out / PARTIAL_NAME).is_file()
    assert len(list((out / "images").glob("*.png"))) == 1
    monkeypatch.setattr(synth_writers, "_write_chunk", real)
    capsys.readouterr()
    # other settings, no --overwrite: the half-written folder is cleaned and rewritten
    assert main(["-q", "synth", str(out), *SYNTH]) == 0
    assert "did not finish" in capsys.readouterr().out
    manifest = SynthManifest.load(out)
    assert manifest.n_images == 4 and _on_disk(out) == manifest.files
    assert not (out / PARTIAL_NAME).exists()


# --------------------------------------------------------------------------- item 9: profiles


def _project(tmp_path: Path, profile_text: str) -> Path:
    root = tmp_path / "project"
    (root / "book" / "params").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "_config.yml").write_text("title: t\n")
    (root / "book" / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (root / "book" / "params" / "bad.yml").write_text(profile_text)
    (root / "notebooks" / "01_data_exploration.md").write_text("# never read\n")
    return root


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("phantoms: {n: 4\nnotebooks:\n  x: 1\n", ["line 2", "not valid YAML"]),
        ("phantoms: {n: 4}\nnotebooks:\n  - 01_data_exploration\n", ["line 2", "'notebooks'"]),
        ("# small\nphantoms: {n: lots, size: 64}\n", ["line 2", "phantoms.n", "'lots'"]),
    ],
    ids=["yaml-syntax", "notebooks-list", "phantoms-n-text"],
)
def test_malformed_profile_names_file_and_key_before_running(
    tmp_path, capsys, monkeypatch, text, expected
):
    from cxrlib.book import runner

    root = _project(tmp_path, text)
    monkeypatch.chdir(root)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a notebook was executed")

    monkeypatch.setattr(runner, "execute_notebook", must_not_run)
    assert main(["-q", "book", "--profile", "bad", "--no-html"]) == 2
    err = _error(capsys)
    assert str(root / "book" / "params" / "bad.yml") in err
    for part in expected:
        assert part in err
    assert "invalid literal" not in err
    assert not (root / "runs").exists()


# --------------------------------------------------------------------------- item 10: segment


def test_segment_accepts_a_run_folder(seg_model, phantoms, tmp_path, capsys):
    out = tmp_path / "masks"
    run_dir = seg_model.parent
    assert main(["-q", "segment", str(run_dir), str(phantoms / "images"), str(out)]) == 0
    assert "segmented 8 image(s)" in capsys.readouterr().out
    assert (out / "lungs.csv").is_file()


def test_segment_on_an_empty_folder_exits_2(seg_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "segment", str(seg_model), str(empty), str(tmp_path / "out")]) == 2
    assert "the folder is empty" in _error(capsys)


def test_segment_on_an_unreadable_folder_exits_2(seg_model, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "notes.txt").write_text("hello")
    assert main(["-q", "segment", str(seg_model), str(bad), str(tmp_path / "out")]) == 2
    err = _error(capsys)
    assert "no image in" in err and "a.png" in err and "notes.txt" in err


# --------------------------------------------------------------------------- item 10: train-tb


def test_train_tb_small_set_names_the_users_splits(phantoms, seg_model, tmp_path, capsys):
    argv = ["-q", "train-tb", str(phantoms), "--out", str(tmp_path / "tb"), "--seg-model"]
    argv += [str(seg_model), "--image-size", "64", "--splits", "2", "--repeats", "1"]
    assert main(argv) == 2
    err = _error(capsys)
    assert "2-fold cross-validation" in err and "n_splits=5" not in err
    from cxrlib.tb.config import TBConfig

    assert f"classifier {TBConfig().classifier!r}" in err  # the default, named


def test_cross_validate_names_the_callers_folds_not_the_classifiers():
    from cxrlib.tb.crossval import cross_validate

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 3)), np.array([0, 1] * 4)
    with pytest.raises(
        ValueError, match="2-fold cross-validation leaves 2 normal and 2 TB"
    ) as info:
        cross_validate(X, y, classifier="logreg", n_splits=2, n_repeats=1)
    assert "its own 5-fold" in str(info.value)


# --------------------------------------------------------------------------- item 10: lr


@pytest.mark.parametrize(
    ("options", "lr", "min_lr"),
    [
        ([], 1e-3, 1e-5),
        (["--learning-rate", "1e-6"], 1e-6, 1e-8),
        (["--learning-rate", "1e-6", "--min-learning-rate", "5e-7"], 1e-6, 5e-7),
        (["--learning-rate", "1e-4"], 1e-4, 1e-5),
    ],
)
def test_train_seg_accepts_learning_rates_below_the_recipe_floor(options, lr, min_lr):
    from cxrlib.cli.seg import _config_from_args

    args = build_parser().parse_args(["train-seg", "DATA", "--out", "RUN", *options])
    config = _config_from_args(args)
    assert config.learning_rate == pytest.approx(lr)
    assert config.min_learning_rate == pytest.approx(min_lr)


# --------------------------------------------------------------------------- item 10: skipped


def test_info_skipped_count_counts_files_only(tmp_path, capsys):
    from cxrlib.data.imageio import write_png

    root = tmp_path / "set"
    write_png(root / "images" / "MCUCXR_0001_0.png", np.full((40, 40), 0.5, np.float32))
    (root / "images" / "notes.txt").write_text("x")
    for name in ("link1", "link2"):
        os.symlink(root / "images", root / name)
    assert main(["-q", "info", str(root)]) == 0
    printed = capsys.readouterr().out
    skipped_line = next(line for line in printed.splitlines() if line.startswith("skipped:"))
    assert skipped_line == "skipped: 1 of 2 files and 2 folder(s)"  # both links: one real folder


# --------------------------------------------------------------------------- item 10: hints


def test_text_file_given_as_a_model_gets_an_actionable_hint(phantoms, tmp_path, capsys):
    fake = tmp_path / "model.keras"
    fake.write_text("I am a text file")
    assert main(["-q", "segment", str(fake), str(phantoms / "images"), str(tmp_path / "o")]) == 2
    err = _error(capsys)
    assert "File not found" not in err and "zip archive" in err and "cxrlib train-seg" in err
    argv = ["-q", "train-tb", str(phantoms), "--out", str(tmp_path / "tb"), "--seg-model"]
    assert main([*argv, str(fake)]) == 2
    err = _error(capsys)
    assert "File not found" not in err and "zip archive" in err


def test_non_dicom_dcm_file_gets_an_actionable_hint(seg_model, phantoms, tmp_path, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    image = sorted((phantoms / "images").glob("*.png"))[0]
    (folder / image.name).write_bytes(image.read_bytes())
    (folder / "scan.dcm").write_bytes(b"\0" * 300)
    assert main(["-q", "segment", str(seg_model), str(folder), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "scan.dcm" in printed and "force=True" not in printed
    assert "does not start like a DICOM file" in printed


# --------------------------------------------------------------------------- item 10: download


def test_refused_archive_is_deleted_from_the_cache(tmp_path, capsys, monkeypatch):
    from cxrlib.data import download

    cache = tmp_path / "cache"
    cache.mkdir()
    archive = cache / "NLM-MontgomeryCXRSet.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("MontgomerySet/ok.txt", b"ok")
        zf.writestr("../evil.txt", b"evil")
    archive.chmod(0o600)  # as pooch leaves a download

    monkeypatch.setattr(download, "_download", lambda *args: archive)
    argv = ["-q", "download", "montgomery", "--dest", str(cache), "--sha256", "0" * 64]
    assert main(argv) == 2
    err = _error(capsys)
    assert "'../evil.txt'" in err and "deleted" in err
    assert not archive.exists() and not (tmp_path / "evil.txt").exists()


def test_kept_archive_gets_an_ordinary_mode(tmp_path, monkeypatch):
    from cxrlib.atomic import default_file_mode
    from cxrlib.data import download

    archive = tmp_path / "NLM-MontgomeryCXRSet.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("MontgomerySet/ok.txt", b"ok")
    archive.chmod(0o600)
    monkeypatch.setattr(download, "_download", lambda *args: archive)
    assert download.fetch("montgomery", dest=tmp_path, extract=False) == archive
    assert stat.S_IMODE(archive.stat().st_mode) == default_file_mode()
