"""Tests for cxrlib.data.download: real HTTP against a local server, never the internet."""

from __future__ import annotations

import functools
import hashlib
import json
import stat
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cxrlib.atomic import default_file_mode
from cxrlib.cli import main
from cxrlib.data import archive as archive_module
from cxrlib.data import download
from cxrlib.data.download import (
    EXTRACT_MARKER,
    ArchiveError,
    ChecksumError,
    DownloadError,
    MissingChecksumError,
    UnknownDatasetError,
    UnsafeArchiveError,
    data_dir,
    fetch,
    get_dataset,
    is_clutter,
    list_datasets,
    safe_extract,
)
from cxrlib.data.imageio import read_image, read_mask, write_mask_png, write_png

MONTGOMERY_SHA256 = "54601e952315d8f67383e9202a6e145997ade429f54f7e0af44b4e158714f424"
CLUTTER = (
    "__MACOSX/._x.png",
    "__MACOSX/MontgomerySet/CXR_png/._MCUCXR_0001_0.png",
    "MontgomerySet/Thumbs.db",
    "MontgomerySet/CXR_png/.DS_Store",
    "MontgomerySet/CXR_png/._MCUCXR_0002_1.png",
)


# ----------------------------------------------------------------------- fixtures


class _CountingHandler(SimpleHTTPRequestHandler):
    """Serve files from a folder and record every request path on the server."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class LocalServer:
    def __init__(self, root: Path, server: ThreadingHTTPServer) -> None:
        self.root = root
        self.server = server

    @property
    def requests(self) -> list[str]:
        return self.server.requests  # type: ignore[attr-defined]

    def url(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{name}"


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 (random port) serving ``tmp_path/www``."""
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv(download.DATA_DIR_ENV, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield LocalServer(root, httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size)).astype(np.float32)


def _build_montgomery_zip(path: Path, work: Path) -> dict[str, np.ndarray]:
    """Write a tiny zip laid out like NLM-MontgomeryCXRSet.zip; return member -> pixels."""
    images = {
        "MontgomerySet/CXR_png/MCUCXR_0001_0.png": _image(1),
        "MontgomerySet/CXR_png/MCUCXR_0002_1.png": _image(2),
    }
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MontgomerySet/", "")
        for index, (member, pixels) in enumerate(images.items()):
            png = write_png(work / f"img{index}.png", pixels)
            archive.write(png, member)
            stem = Path(member).stem
            for side in ("leftMask", "rightMask"):
                mask = write_mask_png(work / f"{side}{index}.png", pixels > 0.5)
                archive.write(mask, f"MontgomerySet/ManualMask/{side}/{stem}.png")
            archive.writestr(
                f"MontgomerySet/ClinicalReadings/{stem}.txt",
                "Patient's Sex: F\nPatient's Age: 047Y\nnormal\n",
            )
        for member in CLUTTER:
            archive.writestr(member, b"clutter")
    return images


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture()
def montgomery(server: LocalServer, tmp_path: Path) -> tuple[str, str, dict[str, np.ndarray]]:
    """The fake Montgomery zip on the server: (url, sha256, member -> pixels)."""
    zip_path = server.root / "NLM-MontgomeryCXRSet.zip"
    images = _build_montgomery_zip(zip_path, tmp_path / "work")
    return server.url(zip_path.name), _sha256(zip_path), images


def _zip_with(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


# ----------------------------------------------------------------------- registry


def test_registry_has_the_three_datasets_with_known_checksums() -> None:
    names = [entry.name for entry in list_datasets()]
    assert names == ["montgomery", "shenzhen", "shenzhen-masks"]
    montgomery = get_dataset("montgomery")
    assert montgomery.sha256 == MONTGOMERY_SHA256
    assert montgomery.filename == "NLM-MontgomeryCXRSet.zip"
    assert montgomery.url.endswith("/NLM-MontgomeryCXRSet.zip")
    assert get_dataset("Shenzhen").filename == "ChinaSet_AllFiles.zip"
    assert get_dataset("shenzhen_masks").sha256 is None
    assert "BY-NC-SA" in get_dataset("shenzhen-masks").citation
    for entry in list_datasets():
        assert entry.url.startswith("https://")
        assert entry.citation and entry.description
        assert entry.sha256 is None or len(entry.sha256) == 64
    with pytest.raises(AttributeError):
        montgomery.sha256 = "0" * 64  # type: ignore[misc]


def test_unknown_dataset_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError) as caught:
        fetch("jsrt", dest=tmp_path)
    message = str(caught.value)
    assert "'jsrt'" in message
    for name in ("montgomery", "shenzhen", "shenzhen-masks"):
        assert name in message
    assert not any(tmp_path.iterdir())


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv(download.DATA_DIR_ENV, "")
    assert data_dir().name == "cxrlib"


# ----------------------------------------------------------------------- download


def test_fetch_downloads_verifies_and_extracts_without_clutter(
    montgomery: tuple[str, str, dict[str, np.ndarray]], server: LocalServer, tmp_path: Path
) -> None:
    url, sha, images = montgomery
    cache = tmp_path / "cache"
    root = fetch("montgomery", dest=cache, url=url, sha256=sha, progress=True)

    assert root == cache / "NLM-MontgomeryCXRSet"
    assert (cache / "NLM-MontgomeryCXRSet.zip").is_file()
    # an ordinary file's mode, not the 0600 of pooch's temporary download
    mode = stat.S_IMODE((cache / "NLM-MontgomeryCXRSet.zip").stat().st_mode)
    assert mode == default_file_mode()
    for member, pixels in images.items():
        decoded = read_image(root / member)
        assert decoded.shape == (32, 32)
        assert np.abs(decoded - pixels).max() <= 0.5 / 255 + 1e-6
        stem = Path(member).stem
        mask = read_mask(
            [root / f"MontgomerySet/ManualMask/{side}Mask/{stem}.png" for side in ("left", "right")]
        )
        np.testing.assert_array_equal(mask, pixels > 0.5)
    names = [p.relative_to(root).as_posix() for p in _all_files(root)]
    assert not any(is_clutter(name) for name in names), names
    assert "__MACOSX" not in {p.name for p in root.rglob("*")}
    marker = json.loads((root / EXTRACT_MARKER).read_text())
    assert sorted(marker["skipped"]) == sorted(CLUTTER)
    assert marker["members"] == 2 * 4 + 1  # 2 x (image, 2 masks, reading) + folder entry
    # nothing but the zip and the extracted folder in the cache (no temp files)
    assert sorted(p.name for p in cache.iterdir()) == [
        "NLM-MontgomeryCXRSet",
        "NLM-MontgomeryCXRSet.zip",
    ]
    assert server.requests == ["/NLM-MontgomeryCXRSet.zip"]


def test_second_fetch_uses_the_cache(
    montgomery: tuple[str, str, dict[str, np.ndarray]], server: LocalServer, tmp_path: Path
) -> None:
    url, sha, _ = montgomery
    cache = tmp_path / "cache"
    first = fetch("montgomery", dest=cache, url=url, sha256=sha, progress=False)
    sentinel = first / "sentinel.txt"
    sentinel.write_text("kept")  # proves the extraction is reused, not redone
    second = fetch("montgomery", dest=cache, url=url, sha256=sha, progress=False)
    assert second == first
    assert sentinel.read_text() == "kept"
    assert len(server.requests) == 1

    # a corrupted cached zip is detected by its checksum and downloaded again
    (cache / "NLM-MontgomeryCXRSet.zip").write_bytes(b"garbage")
    fetch("montgomery", dest=cache, url=url, sha256=sha, progress=False, extract=False)
    assert len(server.requests) == 2
    assert _sha256(cache / "NLM-MontgomeryCXRSet.zip") == sha


def test_env_var_sets_the_cache_folder(
    montgomery: tuple[str, str, dict[str, np.ndarray]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, sha, _ = montgomery
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "env-cache"))
    archive = fetch("montgomery", url=url, sha256=sha, progress=False, extract=False)
    assert archive == tmp_path / "env-cache" / "NLM-MontgomeryCXRSet.zip"
    assert _sha256(archive) == sha
    explicit = fetch("montgomery", dest=tmp_path / "arg", url=url, sha256=sha, progress=False)
    assert explicit.parent == tmp_path / "arg"


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(
    montgomery: tuple[str, str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    url, actual, _ = montgomery
    cache = tmp_path / "cache"
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as caught:
        fetch("montgomery", dest=cache, url=url, sha256=wrong, progress=False)
    message = str(caught.value)
    assert "'montgomery'" in message
    assert wrong in message and actual in message
    assert url in message
    assert (caught.value.expected, caught.value.actual) == (wrong, actual)
    assert _all_files(cache) == []


def test_wrong_checksum_also_removes_a_stale_cached_file(
    montgomery: tuple[str, str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    url, _, _ = montgomery
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "NLM-MontgomeryCXRSet.zip").write_bytes(b"an old, bad copy")
    with pytest.raises(ChecksumError):
        fetch("montgomery", dest=cache, url=url, sha256="cd" * 32, progress=False)
    assert _all_files(cache) == []


def test_registry_checksum_is_used_when_none_is_given(
    montgomery: tuple[str, str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    # The fake zip is not the real NLM archive, so the registry hash must reject it.
    url, actual, _ = montgomery
    with pytest.raises(ChecksumError) as caught:
        fetch("montgomery", dest=tmp_path / "cache", url=url, progress=False)
    assert caught.value.expected == MONTGOMERY_SHA256
    assert caught.value.actual == actual


def test_missing_checksum_is_refused_before_any_request(
    server: LocalServer, tmp_path: Path
) -> None:
    zip_path = _zip_with(
        server.root / "ChinaSet_AllFiles.zip",
        [("ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png", b"not really a png")],
    )
    cache = tmp_path / "cache"
    with pytest.raises(MissingChecksumError) as caught:
        fetch("shenzhen", dest=cache, url=server.url(zip_path.name), progress=False)
    message = str(caught.value)
    assert "'shenzhen'" in message
    assert "sha256=" in message and "--sha256" in message
    assert server.requests == []
    assert not cache.exists()

    # with a checksum from the caller the same call goes through
    root = fetch(
        "shenzhen",
        dest=cache,
        url=server.url(zip_path.name),
        sha256="SHA256:" + _sha256(zip_path).upper(),
        progress=False,
    )
    assert (root / "ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png").read_bytes() == (
        b"not really a png"
    )


@pytest.mark.parametrize("bad", ["abc", "md5:" + "0" * 32, "g" * 64, ""])
def test_malformed_checksum_names_the_parameter(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256 must be"):
        fetch("montgomery", dest=tmp_path, sha256=bad, url="http://127.0.0.1:9/x.zip")
    assert not any(tmp_path.iterdir())


def test_http_404_names_the_url(server: LocalServer, tmp_path: Path) -> None:
    url = server.url("missing/NLM-MontgomeryCXRSet.zip")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as caught:
        fetch("montgomery", dest=cache, url=url, sha256="0" * 64, progress=False)
    message = str(caught.value)
    assert url in message and "'montgomery'" in message and "404" in message
    assert server.requests == ["/missing/NLM-MontgomeryCXRSet.zip"]
    assert _all_files(cache) == []


def test_unsafe_zip_from_the_server_is_refused(server: LocalServer, tmp_path: Path) -> None:
    zip_path = _zip_with(
        server.root / "NLM-MontgomeryCXRSet.zip",
        [("MontgomerySet/ok.txt", b"ok"), ("../evil.txt", b"evil")],
    )
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil\.txt'.*deleted from the cache"):
        fetch(
            "montgomery",
            dest=cache,
            url=server.url(zip_path.name),
            sha256=_sha256(zip_path),
            progress=False,
        )
    # the refused archive is not kept: a later extraction would refuse it again
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


# ------------------------------------------------------------------------ extract


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "'..'"),
        ("MontgomerySet/../../evil.txt", "'..'"),
        ("..\\evil.txt", "'..'"),
        ("/ABSOLUTE/evil.txt", "absolute"),
        ("\\\\server\\share\\evil.txt", "absolute"),
        ("C:/evil.txt", "drive letter"),
        ("c:evil.txt", "drive letter"),
        (_symlink("MontgomerySet/link", "/etc/passwd"), "symbolic link"),
    ],
    ids=["dotdot", "nested", "backslash", "absolute", "unc", "drive", "drive2", "link"],
)
def test_safe_extract_refuses_unsafe_members_before_writing(
    member: str | zipfile.ZipInfo, reason: str, tmp_path: Path
) -> None:
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    if name.startswith("/ABSOLUTE"):
        member = name = str(tmp_path / "outside" / "evil.txt")
    archive = _zip_with(
        tmp_path / "bad.zip",
        [("first/ok.txt", b"written first if not checked up front"), (member, b"evil")],
    )
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, dest)
    assert repr(name) in str(caught.value)
    assert reason in str(caught.value)
    assert caught.value.members == [name]
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_safe_extract_skips_clutter_and_reports_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _zip_with(
        tmp_path / "set.zip",
        [("set/a.png", b"a")] + [(name, b"x") for name in CLUTTER] + [("set/desktop.ini", b"")],
    )
    with caplog.at_level("INFO", logger="cxrlib.data.archive"):
        root = safe_extract(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "set"
    assert [p.relative_to(root).as_posix() for p in _all_files(root)] == [
        EXTRACT_MARKER,
        "set/a.png",
    ]
    assert "skipped 6 clutter member(s)" in caplog.text
    assert "__MACOSX/._x.png" in caplog.text


def test_is_clutter() -> None:
    assert is_clutter("__MACOSX/._x.png")
    assert is_clutter("a/__MACOSX/b/c.png")
    assert is_clutter("Thumbs.db") and is_clutter("x/THUMBS.DB")
    assert is_clutter("x/.DS_Store") and is_clutter("x/._y.png")
    assert not is_clutter("MontgomerySet/CXR_png/MCUCXR_0001_0.png")
    assert not is_clutter("x/.hidden_but_real.txt")


def test_safe_extract_reuses_complete_folder_and_redoes_stale_one(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "set.zip", [("a.txt", b"one")])
    root = safe_extract(archive, tmp_path / "out")
    (root / "sentinel").write_text("x")
    assert safe_extract(archive, tmp_path / "out") == root
    assert (root / "sentinel").exists()

    _zip_with(tmp_path / "set.zip", [("a.txt", b"two, a new version")])
    root = safe_extract(archive, tmp_path / "out")
    assert (root / "a.txt").read_bytes() == b"two, a new version"
    assert not (root / "sentinel").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["set"]


def test_safe_extract_keeps_a_foreign_folder(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "set.zip", [("a.txt", b"one")])
    foreign = tmp_path / "out" / "set"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="no marker"):
        safe_extract(archive, tmp_path / "out")
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_interrupted_extraction_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip_with(tmp_path / "set.zip", [(f"f{i}.txt", b"data") for i in range(5)])
    calls = {"n": 0}
    real_copy = archive_module.shutil.copyfileobj

    def copy_then_fail(source, sink, length=0):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_copy(source, sink, length)

    monkeypatch.setattr(archive_module.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        safe_extract(archive, tmp_path / "out")
    assert calls["n"] == 3
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_or_missing_archive(tmp_path: Path) -> None:
    not_zip = tmp_path / "broken.zip"
    not_zip.write_bytes(b"this is not a zip file")
    with pytest.raises(ArchiveError, match="broken.zip"):
        safe_extract(not_zip, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        safe_extract(tmp_path / "absent.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------- CLI: cxrlib download


def test_cli_list_and_refusal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["download", "list"]) == 0
    out = capsys.readouterr().out
    assert "montgomery" in out and MONTGOMERY_SHA256 in out and "shenzhen-masks" in out
    assert main(["download", "shenzhen", "--dest", str(tmp_path)]) == 2
    assert "--sha256" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_download_module_has_no_command_line_of_its_own() -> None:
    assert not hasattr(download, "main") and not hasattr(download, "_build_parser")


def test_cli_fetch(
    montgomery: tuple[str, str, dict[str, np.ndarray]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, sha, _ = montgomery
    args = ["-q", "download", "montgomery", "--dest", str(tmp_path / "c"), "--url", url]
    assert main([*args, "--sha256", sha]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "NLM-MontgomeryCXRSet")
    assert main([*args, "--sha256", sha, "--no-extract"]) == 0  # reuses the verified zip
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "NLM-MontgomeryCXRSet.zip")
