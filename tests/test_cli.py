"""End-to-end tests of the `cxrlib` command line: synth, info, download, errors."""

from __future__ import annotations

import json

import pytest

from cxrlib.cli import main


def _info(capsys, folder) -> dict:
    assert main(["-q", "info", str(folder), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("layout", ["compilation", "montgomery", "shenzhen", "plain"])
def test_synth_then_info_agree(tmp_path, capsys, layout):
    out = tmp_path / layout
    assert (
        main(
            [
                "-q",
                "synth",
                str(out),
                "--n",
                "10",
                "--size",
                "64",
                "--seed",
                "3",
                "--layout",
                layout,
                "--json",
            ]
        )
        == 0
    )
    manifest = json.loads(capsys.readouterr().out)
    info = _info(capsys, out)
    assert info["images"] == manifest["n_images"] == 10
    assert info["images_without_mask"] == len(manifest["images_without_mask"])
    assert info["masks"] == 10 - len(manifest["images_without_mask"])
    assert info["masks_without_image"] == 0
    expected_sites = {
        site: {k: v for k, v in counts.items() if v} for site, counts in manifest["by_site"].items()
    }
    got_sites = {site: {k: v for k, v in c.items() if v} for site, c in info["by_site"].items()}
    assert got_sites == expected_sites
    if layout in ("montgomery", "shenzhen", "compilation"):
        assert info["readings"] == 10


def test_synth_dicom_is_readable(tmp_path, capsys):
    out = tmp_path / "dcm"
    assert (
        main(["-q", "synth", str(out), "--n", "4", "--size", "64", "--layout", "plain", "--dicom"])
        == 0
    )
    capsys.readouterr()
    info = _info(capsys, out)
    assert info["images"] == 4 and info["skipped_by_kind"].get("unreadable", 0) == 0


def test_info_on_real_set(real_dir, capsys):
    info = _info(capsys, real_dir)
    assert (info["images"], info["masks"], info["images_without_mask"]) == (640, 563, 77)
    assert (info["masks_without_image"], info["renamed_masks"]) == (0, 453)
    assert info["by_site"]["montgomery"] == {"normal": 64, "tb": 46}
    assert info["by_site"]["shenzhen"] == {"normal": 261, "tb": 269}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "{tmp}/missing"], "does not exist"),
        (["info", "{tmp}/empty"], "no radiographs"),
        (["synth", "{tmp}/s", "--n", "0"], "n"),
        (["synth", "{tmp}/s", "--size", "8"], "size"),
        (["download", "nosuchset"], "nosuchset"),
        (["download", "shenzhen", "--dest", "{tmp}/dl"], "sha256"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cxrlib {argv[0]}: error:") and message in err
    assert "Traceback" not in err


def test_synth_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["-q", "synth", str(tmp_path), "--n", "2", "--size", "64"]) == 2
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert "error" in capsys.readouterr().err
