"""Tests for cxrlib.synthetic: procedural chest X-ray phantoms and their writers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from cxrlib.data.imageio import read_image, read_mask
from cxrlib.synthetic import (
    LAYOUTS,
    MANIFEST_NAME,
    SynthManifest,
    dicom_bytes,
    generate_arrays,
    make_phantom,
    write_dataset,
)

NAME = re.compile(r"^(MCUCXR|CHNCXR)_\d{4}_[01]$")
SITES = ("montgomery", "shenzhen")


def _upper_zone_mean(phantom) -> float:
    """Mean image intensity in the upper third (by rows) of each lung."""
    values = []
    for lung in (phantom.left_mask, phantom.right_mask):
        rows = np.flatnonzero(lung.any(axis=1))
        top = rows.min() + (rows.max() - rows.min()) // 3
        zone = lung.copy()
        zone[top + 1 :] = False
        values.append(phantom.image[zone])
    return float(np.concatenate(values).mean())


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


# --------------------------------------------------------------------------- make_phantom


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("label", [0, 1])
def test_phantom_types_ranges_and_fields(site, label):
    p = make_phantom(3, site=site, label=label, size=64)
    assert p.image.shape == (64, 64) and p.image.dtype == np.float32
    assert p.mask.shape == (64, 64) and p.mask.dtype == np.bool_
    assert float(p.image.min()) == 0.0 and float(p.image.max()) == 1.0
    assert np.isfinite(p.image).all()
    assert p.site == site and p.label == label
    assert p.sex in ("F", "M") and 0 < p.age < 100
    assert p.left_mask is not None and not (p.left_mask & ~p.mask).any()
    assert all(isinstance(f, str) for f in p.findings)
    if label == 1:
        assert p.findings and p.severity > 0
        assert any("calcified" not in f for f in p.findings)
    else:
        assert all("granuloma" in f for f in p.findings)


def test_same_seed_same_phantom_different_seed_different():
    a = make_phantom(11, site="shenzhen", label=1, size=64)
    b = make_phantom(11, site="shenzhen", label=1, size=64)
    c = make_phantom(12, site="shenzhen", label=1, size=64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.reading == b.reading and a.findings == b.findings
    assert not np.array_equal(a.image, c.image)
    seq = np.random.SeedSequence(5)
    d = make_phantom(np.random.default_rng(np.random.SeedSequence(5)), size=64)
    e = make_phantom(seq, size=64)
    assert np.array_equal(d.image, e.image)


def test_mask_geometry_two_lungs_heart_on_the_left():
    left_smaller, contrast = [], []
    for seed in range(8):
        p = make_phantom(seed, site=SITES[seed % 2], size=128)
        _, count = ndi.label(p.mask)
        assert count == 2, f"seed {seed}: {count} lung components"
        right, left = p.right_mask, p.left_mask
        # Radiological convention: the patient's left lung is on the image's right.
        assert np.nonzero(left)[1].mean() > np.nonzero(right)[1].mean()
        left_smaller.append(left.sum() < right.sum())
        # Lungs are dark: darker than the rest of the radiograph.
        contrast.append(p.image[~p.mask].mean() - p.image[p.mask].mean())
        assert contrast[-1] > 0
        # Apices in the upper part of the frame, bases below the middle.
        rows = np.flatnonzero(p.mask.any(axis=1))
        assert rows.min() < 0.3 * 128 and rows.max() > 0.6 * 128
    assert np.mean(left_smaller) >= 0.75
    assert np.mean(contrast) > 0.05


def test_site_shift_lung_size_and_exposure():
    stats = {}
    for site in SITES:
        ps = [make_phantom(seed, site=site, size=64) for seed in range(8)]
        stats[site] = (
            np.mean([p.mask.mean() for p in ps]),
            np.mean([p.image[p.mask].mean() for p in ps]),
        )
    # Shenzhen: smaller lungs in the frame and brighter, flatter exposure.
    assert stats["shenzhen"][0] < stats["montgomery"][0]
    assert stats["shenzhen"][1] > stats["montgomery"][1] + 0.05


def test_tuberculosis_raises_upper_zone_density_and_keeps_anatomy():
    diffs = []
    for seed in range(8):
        normal = make_phantom(seed, site=SITES[seed % 2], label=0, size=96)
        tb = make_phantom(seed, site=SITES[seed % 2], label=1, size=96)
        # Same seed: same anatomy; findings only remove lung (effusion), never add.
        assert not (tb.mask & ~normal.mask).any()
        diffs.append(_upper_zone_mean(tb) - _upper_zone_mean(normal))
    assert np.mean(diffs) > 0.01


def test_effusion_is_excluded_from_the_mask():
    for seed in range(80):
        tb = make_phantom(seed, site="shenzhen", label=1, size=64)
        if any("effusion" in f for f in tb.findings):
            normal = make_phantom(seed, site="shenzhen", label=0, size=64)
            assert tb.mask.sum() < normal.mask.sum()
            assert "pleural effusion" in tb.reading
            return
    pytest.fail("no pleural effusion among 80 TB phantoms")


def test_readings_follow_the_real_formats():
    from cxrlib.data.readings import parse_reading

    mc = re.compile(r"^Patient's Sex: [FM]\nPatient's Age: \d{3}Y\n(?P<finding>.+)\n$")
    chn = re.compile(r"^(male|female),? \d{1,3}yrs?\n(?P<finding>.+)\n$")
    for seed in range(6):
        for site, pattern in (("montgomery", mc), ("shenzhen", chn)):
            for label in (0, 1):
                p = make_phantom(seed, site=site, label=label, size=48)
                match = pattern.match(p.reading)
                assert match, p.reading
                finding = match["finding"]
                assert (finding == "normal") == (label == 0)
                if label == 1:
                    assert ("PTB" in finding) if site == "shenzhen" else "tuberculosis" in finding
                parsed = parse_reading(p.reading)
                assert parsed.sex == p.sex and parsed.age == p.age


def test_aspect_draws_portrait_and_landscape_frames():
    portrait = make_phantom(1, size=64, aspect=4892 / 4020)
    landscape = make_phantom(1, size=64, aspect=0.8)
    assert portrait.image.shape == (64, 53) and portrait.mask.shape == (64, 53)
    assert landscape.image.shape == (51, 64)
    assert portrait.mask.any() and landscape.mask.any()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"site": "boston"}, "site"),
        ({"label": 2}, "label"),
        ({"size": 16}, "size"),
        ({"size": 0}, "size"),
        ({"size": 64.0}, "size"),
        ({"aspect": -1.0}, "aspect"),
    ],
)
def test_make_phantom_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_phantom(0, **kwargs)


def test_make_phantom_rejects_bad_seed():
    with pytest.raises(ValueError, match="rng_or_seed"):
        make_phantom("seed", size=64)


# --------------------------------------------------------------------------- arrays


def test_generate_arrays_shapes_table_and_determinism():
    images, masks, table = generate_arrays(6, size=48, seed=4, site_fraction=0.5)
    assert images.shape == (6, 48, 48) and images.dtype == np.float32
    assert masks.shape == (6, 48, 48) and masks.dtype == np.bool_
    assert list(table.columns[:6]) == ["id", "site", "label", "sex", "age", "reading"]
    assert (table.site == "montgomery").sum() == 3 and (table.site == "shenzhen").sum() == 3
    assert all(NAME.match(i) for i in table.id)
    assert all(int(i[-1]) == label for i, label in zip(table.id, table.label, strict=True))
    again, _, _ = generate_arrays(6, size=48, seed=4, site_fraction=0.5)
    other, _, _ = generate_arrays(6, size=48, seed=5, site_fraction=0.5)
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    only, _, t2 = generate_arrays(3, size=48, seed=4, site="shenzhen")
    assert set(t2.site) == {"shenzhen"} and only.shape[0] == 3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 2, "size": 31}, "size"),
        ({"n": 2, "site": "mars"}, "site"),
        ({"n": 2, "site_fraction": 1.5}, "site_fraction"),
        ({"n": 2, "tb_fraction": -0.1}, "tb_fraction"),
        ({"n": 2, "n_jobs": 0}, "n_jobs"),
    ],
)
def test_generate_arrays_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_arrays(**kwargs)


# --------------------------------------------------------------------------- writers


def _check_common(root: Path, manifest: SynthManifest, n: int) -> None:
    saved = json.loads((root / MANIFEST_NAME).read_text())
    assert saved == manifest.to_dict()
    assert manifest.n_images == n
    assert sum(c["normal"] + c["tb"] for c in manifest.by_site.values()) == n
    for rel in manifest.files:
        assert (root / rel).is_file(), rel
    # Quirks of the real zips.
    assert any(root.rglob("Thumbs.db")) and any(root.rglob(".DS_Store"))
    assert any(p.name.startswith("._") for p in (root / "__MACOSX").rglob("*"))


def test_compilation_layout(tmp_path):
    m = write_dataset(tmp_path, n=12, size=48, seed=1, n_jobs=1, progress=False)
    _check_common(tmp_path, m, 12)
    base = tmp_path / "Lung Segmentation"
    images = sorted(p.stem for p in (base / "CXR_png").glob("*.png"))
    masks = sorted(p.name for p in (base / "masks").glob("*.png"))
    tests = sorted(p.stem for p in (base / "test").glob("*.png"))
    assert len(images) == 12 and all(NAME.match(s) for s in images)
    assert {s[:6] for s in images} == {"MCUCXR", "CHNCXR"}
    assert len(masks) == m.n_masks == 12 - len(m.images_without_mask)
    assert m.images_without_mask and tests == sorted(m.images_without_mask)
    assert all(s.startswith("CHNCXR") for s in tests)
    for stem in images:
        expected = f"{stem}.png" if stem.startswith("MCU") else f"{stem}_mask.png"
        assert (expected in masks) == (stem not in tests)
    # Counters per site start at 0001 and labels match the manifest.
    assert "MCUCXR_0001" in {s[:11] for s in images} and "CHNCXR_0001" in {s[:11] for s in images}
    counts = {(s, lab): 0 for s in ("MCUCXR", "CHNCXR") for lab in (0, 1)}
    for stem in images:
        counts[(stem[:6], int(stem[-1]))] += 1
    assert counts[("MCUCXR", 1)] == m.by_site["montgomery"]["tb"]
    assert counts[("CHNCXR", 0)] == m.by_site["shenzhen"]["normal"]
    image = read_image(base / "CXR_png" / f"{images[0]}.png")
    assert image.shape == (48, 48)


def test_montgomery_layout_left_right_masks_and_readings(tmp_path):
    m = write_dataset(tmp_path, n=5, size=64, seed=2, layout="montgomery", n_jobs=1, progress=False)
    _check_common(tmp_path, m, 5)
    base = tmp_path / "MontgomerySet"
    stems = sorted(p.stem for p in (base / "CXR_png").glob("*.png"))
    assert len(stems) == 5 and all(s.startswith("MCUCXR_") for s in stems)
    assert m.n_masks == 10 and not m.images_without_mask and set(m.by_site) == {"montgomery"}
    for stem in stems:
        left = read_mask(base / "ManualMask" / "leftMask" / f"{stem}.png")
        right = read_mask(base / "ManualMask" / "rightMask" / f"{stem}.png")
        assert left.any() and right.any() and not (left & right).any()
        assert np.nonzero(left)[1].mean() > np.nonzero(right)[1].mean()
        text = (base / "ClinicalReadings" / f"{stem}.txt").read_text()
        assert text.startswith("Patient's Sex: ")
        assert ("normal" in text) == stem.endswith("_0")


def test_native_aspect_keeps_the_montgomery_portrait_frame(tmp_path):
    write_dataset(
        tmp_path, n=2, size=64, layout="montgomery", native_aspect=True, n_jobs=1, progress=False
    )
    for path in (tmp_path / "MontgomerySet" / "CXR_png").glob("*.png"):
        assert read_image(path).shape == (64, 53)
        left = tmp_path / "MontgomerySet" / "ManualMask" / "leftMask" / path.name
        assert read_mask(left).shape == (64, 53)


def test_shenzhen_layout_masks_and_readings(tmp_path):
    m = write_dataset(tmp_path, n=12, size=48, seed=3, layout="shenzhen", n_jobs=1, progress=False)
    _check_common(tmp_path, m, 12)
    stems = sorted(p.stem for p in (tmp_path / "ChinaSet_AllFiles" / "CXR_png").glob("*.png"))
    masks = sorted(p.name for p in (tmp_path / "shcxr-lung-mask" / "mask").glob("*.png"))
    assert len(stems) == 12 and all(s.startswith("CHNCXR_") for s in stems)
    assert len(masks) == m.n_masks == 12 - len(m.images_without_mask) >= 10
    assert masks == sorted(f"{s}_mask.png" for s in stems if s not in m.images_without_mask)
    readings = sorted((tmp_path / "ChinaSet_AllFiles" / "ClinicalReadings").glob("*.txt"))
    assert [p.stem for p in readings] == stems
    assert re.match(r"^(male|female)", readings[0].read_text())


def test_plain_layout_without_quirks(tmp_path):
    m = write_dataset(
        tmp_path, n=4, size=48, seed=4, layout="plain", quirks=False, n_jobs=1, progress=False
    )
    images = sorted(p.name for p in (tmp_path / "images").glob("*"))
    masks = sorted(p.name for p in (tmp_path / "masks").glob("*"))
    assert images == masks and len(images) == 4 == m.n_masks
    assert not list(tmp_path.rglob("Thumbs.db")) and not (tmp_path / "__MACOSX").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks", MANIFEST_NAME]
    # The plain layout holds the phantoms of generate_arrays (8-bit quantised).
    arrays, masks_mem, table = generate_arrays(4, size=48, seed=4)
    for k, stem in enumerate(table.id):
        assert (
            np.abs(read_image(tmp_path / "images" / f"{stem}.png") - arrays[k]).max()
            <= 0.5 / 255 + 1e-6
        )
        assert np.array_equal(read_mask(tmp_path / "masks" / f"{stem}.png"), masks_mem[k])


def test_layouts_constant():
    assert LAYOUTS == ("compilation", "montgomery", "shenzhen", "plain")


def test_same_seed_gives_identical_bytes_also_in_parallel(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(a, n=6, size=48, seed=9, n_jobs=1, progress=False)
    write_dataset(b, n=6, size=48, seed=9, n_jobs=2, progress=False)
    write_dataset(c, n=6, size=48, seed=10, n_jobs=1, progress=False)
    files_a, files_b = _files(a), _files(b)
    assert files_a == files_b
    files_c = _files(c)
    images = [k for k in files_a if "/CXR_png/" in k and k.endswith(".png")]
    assert any(files_a[k] != files_c.get(k) for k in images)


def test_dicom_round_trip_matches_png(tmp_path):
    png, dcm = tmp_path / "png", tmp_path / "dcm"
    write_dataset(png, n=5, size=48, seed=6, layout="plain", quirks=False, n_jobs=1, progress=False)
    m = write_dataset(
        dcm,
        n=5,
        size=48,
        seed=6,
        layout="plain",
        dicom=True,
        quirks=False,
        n_jobs=1,
        progress=False,
    )
    files = sorted((dcm / "images").glob("*.dcm"))
    assert len(files) == 5 and m.dicom
    for path in files:
        from_dicom = read_image(path)
        from_png = read_image(png / "images" / f"{path.stem}.png")
        assert from_dicom.shape == (48, 48)
        assert np.abs(from_dicom - from_png).max() < 0.003
        assert (dcm / "masks" / f"{path.stem}.png").is_file()


@pytest.mark.parametrize("monochrome1", [False, True])
def test_dicom_bytes_file_meta_and_inversion(tmp_path, monochrome1):
    import pydicom

    image = make_phantom(2, size=48).image
    path = tmp_path / "x.dcm"
    path.write_bytes(
        dicom_bytes(image, patient_id="X", monochrome1=monochrome1, slope=0.5, intercept=-1024)
    )
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.BitsAllocated == 16 and "WindowCenter" in ds and float(ds.RescaleSlope) == 0.5
    assert ds.PhotometricInterpretation == ("MONOCHROME1" if monochrome1 else "MONOCHROME2")
    stored = ds.pixel_array.astype(float) / (2**ds.BitsStored - 1)
    assert (stored.mean() > 0.5) == (monochrome1 == (image.mean() < 0.5))
    assert np.abs(read_image(path) - image).max() < 1e-3
    assert dicom_bytes(image, patient_id="X") == dicom_bytes(image, patient_id="X")


def test_refuses_foreign_folder_and_other_phantoms_without_overwrite(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(foreign, n=2, size=48, n_jobs=1, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    write_dataset(foreign, n=2, size=48, n_jobs=1, progress=False, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    previous = tmp_path / "previous"
    write_dataset(previous, n=8, size=48, layout="plain", n_jobs=1, progress=False)
    with pytest.raises(FileExistsError, match="other settings.*n_images: the folder has 8"):
        write_dataset(previous, n=3, size=48, layout="plain", n_jobs=1, progress=False)
    assert SynthManifest.load(previous).n_images == 8
    m = write_dataset(
        previous, n=3, size=48, layout="plain", n_jobs=1, progress=False, overwrite=True
    )
    assert m.action == "replaced"
    assert len(list((previous / "images").glob("*.png"))) == 3 == m.n_images
    # Nothing stale is left behind: the folder holds exactly the new files.
    on_disk = sorted(p.relative_to(previous).as_posix() for p in previous.rglob("*") if p.is_file())
    assert on_disk == m.files
    assert SynthManifest.load(previous).n_images == 3


def _mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_same_settings_reuse_the_folder_and_missing_files_are_rewritten(tmp_path):
    out = tmp_path / "ph"
    first = write_dataset(out, n=5, size=48, seed=4, n_jobs=1, progress=False)
    assert first.action == "written"
    before = _mtimes(out)
    again = write_dataset(out, n=5, size=48, seed=4, n_jobs=1, progress=False)
    assert again.action == "reused" and again == first and _mtimes(out) == before
    # other fractions are other phantoms, even with the same n, size and seed
    with pytest.raises(FileExistsError, match="site or label split"):
        write_dataset(out, n=5, size=48, seed=4, tb_fraction=0.0, n_jobs=1, progress=False)
    (out / first.files[0]).unlink()
    repaired = write_dataset(out, n=5, size=48, seed=4, n_jobs=1, progress=False)
    assert repaired.action == "repaired"
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == repaired.files


def test_interrupted_write_is_recovered_without_overwrite(tmp_path, monkeypatch):
    from cxrlib.synthetic import outdir, writers

    out = tmp_path / "ph"
    first = write_dataset(out, n=3, size=48, layout="plain", n_jobs=1, progress=False)
    image = Path(next(f for f in first.files if f.startswith("images/") and f.endswith(".png")))
    real = writers._write_chunk
    calls: list[int] = []

    def dies_on_the_second_chunk(args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        # a temporary file of an atomic write that was killed
        (out / image.parent).mkdir(exist_ok=True)
        (out / image.parent / f".{image.name}.abc123.part").write_bytes(b"half")
        return real(args)

    monkeypatch.setattr(writers, "_write_chunk", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, n=6, size=48, layout="plain", n_jobs=1, progress=False, overwrite=True)
    assert (out / outdir.PARTIAL_NAME).is_file() and not (out / MANIFEST_NAME).exists()
    monkeypatch.setattr(writers, "_write_chunk", real)
    m = write_dataset(out, n=2, size=48, layout="plain", n_jobs=1, progress=False)
    assert m.action == "recovered"
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == m.files


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 2, "size": 8}, "size"),
        ({"n": 2, "layout": "kaggle"}, "layout"),
        ({"n": 2, "site_fraction": 2.0}, "site_fraction"),
        ({"n": 2, "seed": -1}, "seed"),
    ],
)
def test_write_dataset_rejects_bad_parameters(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        write_dataset(tmp_path / "out", progress=False, n_jobs=1, **kwargs)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- real data


def _real_dir() -> Path:
    value = os.environ.get("CXR_REAL_DIR")
    if not value:
        pytest.skip("CXR_REAL_DIR is not set (folder containing 'Lung Segmentation/')")
    root = Path(value) / "Lung Segmentation"
    if not (root / "CXR_png").is_dir() or not (root / "masks").is_dir():
        pytest.skip(f"CXR_REAL_DIR={value} has no 'Lung Segmentation/CXR_png' and 'masks'")
    return root


def test_phantom_statistics_resemble_the_real_sets():
    root = _real_dir()
    real = {}
    for site, prefix in (("montgomery", "MCUCXR"), ("shenzhen", "CHNCXR")):
        fractions, inside = [], []
        for path in sorted((root / "CXR_png").glob(f"{prefix}_*.png"))[:40]:
            name = path.name if prefix == "MCUCXR" else f"{path.stem}_mask.png"
            if not (root / "masks" / name).is_file():
                continue
            mask = read_mask(root / "masks" / name)
            image = read_image(path)
            fractions.append(mask.mean())
            inside.append(image[mask].mean())
        real[site] = (np.mean(fractions), np.mean(inside))
    for site in SITES:
        ps = [make_phantom(seed, site=site, size=128) for seed in range(8)]
        fraction = np.mean([p.mask.mean() for p in ps])
        inside = np.mean([p.image[p.mask].mean() for p in ps])
        assert abs(fraction - real[site][0]) < 0.05, (site, fraction, real[site])
        assert abs(inside - real[site][1]) < 0.12, (site, inside, real[site])
