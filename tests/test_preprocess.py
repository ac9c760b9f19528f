"""Tests for cxrlib.preprocess: transforms (resize, letterbox, equalize), loader
(load_arrays) and cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlib import preprocess
from cxrlib.data.imageio import ImageReadError, write_mask_png, write_png
from cxrlib.preprocess import cache as cache_module
from cxrlib.preprocess import (
    equalize,
    letterbox,
    letterbox_box,
    letterbox_mask,
    load_arrays,
    loader,
    preprocess_image,
    preprocess_mask,
    resize_image,
    resize_mask,
    unletterbox,
)
from cxrlib.preprocess.cache import CacheWarning, clear_cache

SIZE = 32  # load_arrays output size in the tests (inputs are 64 x 64)


# ------------------------------------------------------------------ synthetic inputs


def smooth_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth float32 image in [0, 1] (gradient + blobs), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    image = 0.3 * yy / shape[0] + 0.2 * xx / shape[1]
    for _ in range(3):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        radius = rng.uniform(0.1, 0.3) * min(shape)
        image += 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    return np.clip(image, 0, 1).astype(np.float32)


def disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path, monkeypatch):
    """Never let a test write to the user's ~/.cache."""
    monkeypatch.setenv("CXRLIB_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def dataset(tmp_path) -> pd.DataFrame:
    """Eight 64x64 PNG radiographs; masks: 5 single files, 1 left+right pair, 2 none."""
    folder = tmp_path / "data"
    rows = []
    for i in range(8):
        image_path = write_png(folder / f"img_{i}.png", smooth_image((64, 64), seed=i))
        mask: str | tuple[str, ...] | None
        if i < 5:
            lung = disk((64, 64), (32 + i, 30 - i), 12 + 2 * i)
            mask = str(write_mask_png(folder / f"img_{i}_mask.png", lung))
        elif i == 5:
            left = str(write_mask_png(folder / "img_5_left.png", disk((64, 64), (32, 18), 10)))
            right = str(write_mask_png(folder / "img_5_right.png", disk((64, 64), (32, 46), 10)))
            mask = (left, right)
        else:
            mask = None
        rows.append({"id": f"img_{i}", "image_path": str(image_path), "mask_path": mask})
    table = pd.DataFrame(rows)
    table["mask_path"] = table["mask_path"].astype(object)
    return table


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir()) if cache_dir.exists() else []


# ---------------------------------------------------------------------------- resize


@pytest.mark.parametrize("method", ["area", "bilinear"])
@pytest.mark.parametrize("size", [32, (20, 40), 100, (64, 17)])
def test_resize_image_shape_dtype_range(method, size):
    image = smooth_image((64, 48))
    out = resize_image(image, size, method=method)
    expected = (size, size) if isinstance(size, int) else size
    assert out.shape == expected
    assert out.dtype == np.float32
    assert out.min() >= image.min() and out.max() <= image.max()


def test_resize_image_accepts_integer_input():
    image = (smooth_image((64, 64)) * 255).astype(np.uint8)
    out = resize_image(image, 16)
    assert out.dtype == np.float32 and out.max() > 1  # values kept, not rescaled


@pytest.mark.parametrize("size", [(17, 23), (32, 32), (100, 90)])
def test_area_resize_of_constant_image_is_constant(size):
    out = resize_image(np.full((64, 64), 0.37, np.float32), size, method="area")
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_area_resize_averages_blocks():
    image = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    block_mean = image.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(resize_image(image, 32, method="area"), block_mean, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "size", "method", "error", "pattern"),
    [
        (np.zeros((4, 4, 3)), 2, "area", ValueError, "2-D"),
        (np.zeros((0, 4)), 2, "area", ValueError, "2-D"),
        (np.zeros((4, 4)), 0, "area", ValueError, "size must be positive"),
        (np.zeros((4, 4)), (2, 2, 2), "area", TypeError, "height, width"),
        (np.zeros((4, 4)), 2.5, "area", TypeError, "size"),
        (np.zeros((4, 4)), 2, "cubic", ValueError, "method"),
        (np.zeros((4, 4), bool), 2, "area", TypeError, "resize_mask"),
    ],
)
def test_resize_image_rejects_bad_input(image, size, method, error, pattern):
    with pytest.raises(error, match=pattern):
        resize_image(image, size, method=method)


@pytest.mark.parametrize("size", [32, 23, 128])
def test_resize_mask_stays_binary_and_keeps_area(size):
    mask = disk((64, 64), (30, 34), 20)
    out = resize_mask(mask, size)
    assert out.dtype == np.bool_ and out.shape == (size, size)
    assert out.mean() == pytest.approx(mask.mean(), rel=0.05)
    # the boundary stays in place: same centroid (in relative coordinates)
    centroid = np.argwhere(out).mean(axis=0) + 0.5
    np.testing.assert_allclose(centroid / size, (30.5 / 64, 34.5 / 64), atol=0.5 / size + 1e-3)


def test_resize_mask_averages_areas():
    mask = np.zeros((64, 64), bool)
    mask[:, 30:32] = True  # a 2-pixel-wide line: nearest sampling may skip it
    out = resize_mask(mask, 32)
    assert out[:, 15].all() and out.sum() == 32


# ------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("shape", "box"),
    [((40, 80), (16, 0, 0.8)), ((80, 40), (0, 16, 0.8)), ((64, 64), (0, 0, 1.0))],
)
def test_letterbox_keeps_aspect_and_pads(shape, box):
    image = smooth_image(shape) * 0.5 + 0.4  # values in [0.4, 0.9], distinct from the fill
    out, got = letterbox(image, 64, fill=0.1)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert got == pytest.approx(box)
    content = out > 0.3
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert height / width == pytest.approx(shape[0] / shape[1], rel=0.05)
    assert (rows[0], cols[0]) == (got.top, got.left)
    np.testing.assert_allclose(out[~content], 0.1)


def test_letterbox_non_square_frame():
    out, box = letterbox(np.ones((50, 50)), (40, 80))
    assert out.shape == (40, 80) and box == (0, 20, 0.8)
    assert out[:, 20:60].min() == 1 and out[:, :20].max() == 0 and out[:, 60:].max() == 0


def test_letterbox_box_matches_letterbox():
    _, box = letterbox(np.zeros((123, 77)), (64, 48))
    assert letterbox_box((123, 77), (64, 48)) == box


@pytest.mark.parametrize("shape", [(48, 96), (96, 48), (70, 70)])
def test_unletterbox_round_trips_image_and_mask(shape):
    image = smooth_image(shape)
    boxed, box = letterbox(image, 64)
    back = unletterbox(boxed, box, shape)
    assert back.shape == shape and back.dtype == np.float32
    assert np.abs(back - image).mean() < 0.01

    mask = disk(shape, (shape[0] / 2, shape[1] / 2), min(shape) / 3)
    boxed_mask, mask_box = letterbox_mask(mask, 64)
    assert mask_box == box and boxed_mask.dtype == np.bool_
    restored = unletterbox(boxed_mask, mask_box, shape)
    assert restored.dtype == np.bool_ and restored.shape == shape
    iou = (restored & mask).sum() / (restored | mask).sum()
    assert iou > 0.9  # a 2/3 downscale of a small disk: about 1 px of boundary error


def test_unletterbox_keeps_a_channel_axis_and_checks_the_box():
    boxed, box = letterbox(smooth_image((40, 80)), 64)
    back = unletterbox(boxed[..., np.newaxis], box, (40, 80))
    assert back.shape == (40, 80, 1)
    with pytest.raises(ValueError, match="does not fit"):
        unletterbox(boxed[:32, :32], box, (40, 80))


# -------------------------------------------------------------------------- equalize


@pytest.mark.parametrize("method", ["hist", "clahe"])
def test_equalize_range_and_contrast(method):
    low_contrast = 0.4 + 0.1 * smooth_image((64, 64))
    out = equalize(low_contrast, method=method)
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert out.min() >= 0 and out.max() <= 1
    assert np.ptp(out) > 0.6 > np.ptp(low_contrast)


def test_equalize_edge_cases():
    np.testing.assert_array_equal(equalize(np.full((8, 8), 0.5)), 0.5)  # nothing to spread
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        equalize(np.full((8, 8), 3.0))
    with pytest.raises(ValueError, match="method"):
        equalize(np.zeros((8, 8)), method="gamma")
    with pytest.raises(ValueError, match="clip_limit"):
        equalize(smooth_image((16, 16)), method="clahe", clip_limit=0)


def test_clahe_clip_limit_changes_output():
    image = smooth_image((64, 64))
    assert not np.allclose(equalize(image, "clahe", 0.01), equalize(image, "clahe", 0.05))


# ----------------------------------------------------------------------- whole chain


@pytest.mark.parametrize("boxed", [False, True])
@pytest.mark.parametrize("eq", [None, "hist", "clahe"])
def test_preprocess_image_and_mask_share_geometry(boxed, eq):
    mask = disk((48, 96), (20, 40), 15)
    image = np.where(mask, 0.8, 0.2).astype(np.float32)
    out = preprocess_image(image, size=32, letterbox=boxed, equalize=eq)
    out_mask = preprocess_mask(mask, size=32, letterbox=boxed)
    assert out.shape == out_mask.shape == (32, 32)
    assert out.dtype == np.float32 and out_mask.dtype == np.bool_
    assert 0 <= out.min() and out.max() <= 1
    # the mask lands where the bright disk of the image lands
    assert out[out_mask].mean() > out[~out_mask & (out > 0)].mean() + 0.1
    if boxed:  # rows outside the fitted 16-row band are padding (0)
        assert out[:8].max() == 0 and out[24:].max() == 0 and not out_mask[:8].any()


def test_preprocess_image_equalizes_before_padding():
    image = smooth_image((48, 96))
    out = preprocess_image(image, size=64, letterbox=True, equalize="hist")
    content = out[16:48]
    # equalized content spans [0, 1] by itself; the padding did not enter its histogram
    assert content.max() == pytest.approx(1.0) and content.mean() == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------------- load_arrays


def test_load_arrays_shapes_masks_and_ids(dataset):
    loaded = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=False, progress=False)
    n = len(dataset)
    assert loaded.images.shape == (n, SIZE, SIZE, 1) and loaded.images.dtype == np.float32
    assert loaded.masks.shape == (n, SIZE, SIZE, 1) and loaded.masks.dtype == np.bool_
    assert loaded.ids == list(dataset["id"]) and len(loaded) == n
    np.testing.assert_array_equal(loaded.has_mask, [True] * 6 + [False] * 2)
    assert not loaded.masks[6:].any()
    assert all(loaded.masks[i].any() for i in range(6))
    np.testing.assert_array_equal(loaded.original_shapes, [[64, 64]] * n)
    assert 0 <= loaded.images.min() and loaded.images.max() <= 1
    # matches the single-image functions
    image = loader.read_image(dataset["image_path"][2])
    np.testing.assert_array_equal(loaded.images[2, ..., 0], preprocess_image(image, size=SIZE))
    # the left+right pair is OR-merged: two separate lungs
    pair = loaded.masks[5, ..., 0]
    assert pair[:, : SIZE // 2].any() and pair[:, SIZE // 2 :].any()
    assert not pair[SIZE // 2, SIZE // 2 - 1 : SIZE // 2 + 1].any()


def test_load_arrays_accepts_nan_and_empty_mask_cells(dataset):
    table = dataset.copy()
    table.loc[0, "mask_path"] = np.nan
    table.loc[1, "mask_path"] = ""
    loaded = load_arrays(table, size=SIZE, n_jobs=1, cache_dir=False, progress=False)
    assert not loaded.has_mask[:2].any() and loaded.has_mask[2:6].all()


def test_load_arrays_follows_table_order(dataset):
    reference = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=False, progress=False)
    order = np.random.default_rng(3).permutation(len(dataset))
    shuffled = dataset.iloc[order].reset_index(drop=True)
    loaded = load_arrays(shuffled, size=SIZE, n_jobs=2, cache_dir=False, progress=False)
    assert loaded.ids == [reference.ids[i] for i in order]
    np.testing.assert_array_equal(loaded.images, reference.images[order])
    np.testing.assert_array_equal(loaded.masks, reference.masks[order])
    np.testing.assert_array_equal(loaded.has_mask, reference.has_mask[order])


@pytest.mark.parametrize("options", [{}, {"letterbox": True, "equalize": "clahe"}])
def test_load_arrays_serial_and_parallel_agree(dataset, options):
    serial = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=False, progress=False, **options)
    parallel = load_arrays(dataset, size=SIZE, n_jobs=2, cache_dir=False, progress=False, **options)
    for name in ("images", "masks", "has_mask", "original_shapes"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name))
    assert serial.ids == parallel.ids


def test_load_arrays_while_other_threads_run(dataset, tmp_path):
    """joblib's loky workers are fresh interpreters: a caller with running threads (a
    Jupyter kernel, TensorFlow) can use them, and read errors still name the file."""
    import threading

    serial = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=False, progress=False)
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)
    busy.start()
    try:
        parallel = load_arrays(
            dataset, size=SIZE, n_jobs=2, cache_dir=tmp_path / "c", progress=False
        )
        np.testing.assert_array_equal(serial.images, parallel.images)
        np.testing.assert_array_equal(serial.masks, parallel.masks)
        broken = Path(dataset["image_path"][6])
        broken.write_bytes(b"")
        with pytest.raises(ImageReadError, match=re.escape(str(broken))):
            load_arrays(dataset, size=SIZE, n_jobs=2, cache_dir=False, progress=False)
    finally:
        stop.set()
        busy.join()


def test_parallel_load_uses_joblib(dataset, monkeypatch):
    import joblib

    made = []

    class Recording(joblib.Parallel):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", Recording)
    load_arrays(dataset, size=SIZE, n_jobs=2, cache_dir=False, progress=False)
    assert made and made[0]["backend"] == "loky" and made[0]["n_jobs"] == 2


def test_load_arrays_validates_arguments(dataset):
    with pytest.raises(ValueError, match="mask_path"):
        load_arrays(dataset.drop(columns="mask_path"), cache_dir=False)
    with pytest.raises(ValueError, match="n_jobs"):
        load_arrays(dataset, n_jobs=0, cache_dir=False)
    with pytest.raises(ValueError, match="equalize"):
        load_arrays(dataset, equalize="gamma", cache_dir=False)
    with pytest.raises(TypeError, match="cache_dir"):
        load_arrays(dataset, cache_dir=3.5)
    bad = dataset.copy()
    bad.loc[0, "mask_path"] = 17
    with pytest.raises(TypeError, match="img_0"):
        load_arrays(bad, cache_dir=False, n_jobs=1)


def test_load_arrays_empty_table(tmp_path):
    empty = pd.DataFrame({"id": [], "image_path": [], "mask_path": []})
    loaded = load_arrays(empty, size=SIZE, cache_dir=tmp_path / "c", progress=False)
    assert loaded.images.shape == (0, SIZE, SIZE, 1) and loaded.ids == []


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_corrupt_png_error_names_the_file(dataset, tmp_path, n_jobs):
    broken = Path(dataset["image_path"][3])
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(ImageReadError, match=re.escape(str(broken))):
        load_arrays(dataset, size=SIZE, n_jobs=n_jobs, cache_dir=False, progress=False)
    cache_dir = tmp_path / "cache"
    with pytest.raises(ImageReadError, match=re.escape(str(broken))):
        load_arrays(dataset, size=SIZE, n_jobs=n_jobs, cache_dir=cache_dir, progress=False)
    assert list(cache_dir.iterdir()) == []  # no entry, no temporary folder


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_mismatched_mask_error_names_mask_and_shapes(dataset, n_jobs):
    mask_path = Path(dataset["mask_path"][4])
    write_mask_png(mask_path, np.ones((48, 64), bool))
    with pytest.raises(ImageReadError) as caught:
        load_arrays(dataset, size=SIZE, n_jobs=n_jobs, cache_dir=False, progress=False)
    message = str(caught.value)
    assert str(mask_path) in message and "(48, 64)" in message and "(64, 64)" in message


def test_missing_file_is_named_before_any_work(dataset, tmp_path):
    os.remove(dataset["image_path"][1])
    with pytest.raises(ImageReadError, match=r"img_1\.png.*does not exist"):
        load_arrays(dataset, size=SIZE, cache_dir=tmp_path / "c", progress=False)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_does_not_read_images(dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    [entry] = entries(cache_dir)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["settings"]["size"] == [SIZE, SIZE] and meta["n_rows"] == len(dataset)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was read although the cache should have been hit")

    monkeypatch.setattr(loader, "read_image", refuse)
    monkeypatch.setattr(loader, "read_mask", refuse)
    second = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    for name in ("images", "masks", "has_mask", "original_shapes"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        assert getattr(second, name).flags.writeable
    assert second.ids == first.ids and second.masks.dtype == np.bool_


def test_parallel_cache_matches_serial_load(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    serial = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=False, progress=False)
    cold = load_arrays(dataset, size=SIZE, n_jobs=2, cache_dir=cache_dir, progress=False)
    warm = load_arrays(dataset, size=SIZE, n_jobs=2, cache_dir=cache_dir, progress=False)
    [entry] = entries(cache_dir)
    assert sorted(p.name for p in entry.iterdir()) == [
        "has_mask.npy",
        "images.npy",
        "masks.npy",
        "meta.json",
        "original_shapes.npy",
    ]
    for loaded in (cold, warm):
        for name in ("images", "masks", "has_mask", "original_shapes"):
            array = getattr(loaded, name)
            assert type(array) is np.ndarray  # not a memory map of a cache file
            np.testing.assert_array_equal(array, getattr(serial, name))


def test_cache_auto_uses_environment_folder(dataset, tmp_path, monkeypatch):
    folder = tmp_path / "from-env"
    monkeypatch.setenv("CXRLIB_CACHE_DIR", str(folder))
    load_arrays(dataset, size=SIZE, n_jobs=1, progress=False)  # cache_dir="auto"
    assert len(entries(folder)) == 1
    assert preprocess.clear_cache("auto") == 1 and entries(folder) == []


def test_cache_invalidated_by_rewritten_file(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    before = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    path = dataset["image_path"][0]
    write_png(path, 1.0 - smooth_image((64, 64), seed=0))  # new content, same size
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # clock granularity
    after = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    assert len(entries(cache_dir)) == 2
    np.testing.assert_allclose(after.images[0], 1.0 - before.images[0], atol=2 / 255)
    np.testing.assert_array_equal(after.images[1:], before.images[1:])


def test_cache_invalidated_by_touched_mask(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    left_lung = dataset["mask_path"][5][0]
    stat = os.stat(left_lung)
    os.utime(left_lung, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    assert len(entries(cache_dir)) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"size": 24},
        {"letterbox": True},
        {"equalize": "hist"},
        {"method": "bilinear"},
        {"equalize": "clahe", "clip_limit": 0.02},
    ],
)
def test_cache_invalidated_by_parameter_change(dataset, tmp_path, change):
    cache_dir = tmp_path / "cache"
    base = {"size": SIZE, "n_jobs": 1, "cache_dir": cache_dir, "progress": False}
    if change.get("clip_limit"):
        load_arrays(dataset, **{**base, "equalize": "clahe"})  # same, default clip limit
    else:
        load_arrays(dataset, **base)
    changed = load_arrays(dataset, **{**base, **change})
    uncached = load_arrays(dataset, **{**base, **change, "cache_dir": False})
    assert len(entries(cache_dir)) == 2
    np.testing.assert_array_equal(changed.images, uncached.images)


def test_cache_key_covers_ids_and_order(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    options = {"size": SIZE, "n_jobs": 1, "cache_dir": cache_dir, "progress": False}
    renamed = dataset.assign(id=[f"other_{i}" for i in range(len(dataset))])
    assert load_arrays(renamed, **options).ids[0] == "other_0"
    reversed_table = dataset.iloc[::-1].reset_index(drop=True)
    assert load_arrays(reversed_table, **options).ids[0] == "img_7"
    assert len(entries(cache_dir)) == 3


@pytest.mark.parametrize(
    "damage", ["truncate", "garbage_meta", "wrong_shape", "huge_header", "missing"]
)
def test_corrupt_cache_entry_is_rebuilt(dataset, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    good = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    [entry] = entries(cache_dir)
    images_file = entry / "images.npy"
    size_before = images_file.stat().st_size
    if damage == "truncate":
        with images_file.open("r+b") as handle:
            handle.truncate(size_before // 2)
    elif damage == "garbage_meta":
        (entry / "meta.json").write_text("{ not json")
    elif damage == "wrong_shape":
        np.save(images_file, np.zeros((2, 2), np.float32))
    elif damage == "huge_header":  # must not make the loader allocate terabytes
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**6)}
        with images_file.open("r+b") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
    else:
        (entry / "masks.npy").unlink()
    with pytest.warns(CacheWarning, match="discarding"):
        rebuilt = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(rebuilt.images, good.images)
    np.testing.assert_array_equal(rebuilt.masks, good.masks)
    assert entries(cache_dir) == [entry] and images_file.stat().st_size == size_before


def test_interrupted_cache_write_leaves_no_entry(dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    real_save = np.save
    calls = []

    def save_then_fail(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the first array is already on disk
            with open(path, "wb") as handle:
                handle.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        real_save(path, array, **kwargs)

    monkeypatch.setattr(cache_module.np, "save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    assert len(calls) == 2
    assert list(cache_dir.iterdir()) == []  # no entry, no temporary folder


def test_failed_cache_write_warns_and_returns_arrays(dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.np, "save", disk_full)
    with pytest.warns(UserWarning, match="No space left"):
        loaded = load_arrays(dataset, size=SIZE, n_jobs=1, cache_dir=cache_dir, progress=False)
    assert loaded.images.shape == (len(dataset), SIZE, SIZE, 1)
    assert list(cache_dir.iterdir()) == []


def test_clear_cache(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    for size in (16, 24):
        load_arrays(dataset, size=size, n_jobs=1, cache_dir=cache_dir, progress=False)
    (cache_dir / "keep-me").mkdir()  # not a cache entry: left alone
    assert clear_cache(cache_dir) == 2
    assert [p.name for p in cache_dir.iterdir()] == ["keep-me"]
    assert clear_cache(tmp_path / "nowhere") == 0


# ------------------------------------------------------------------------- real data


def real_table(root: Path, per_site: int) -> pd.DataFrame:
    """Rows with masks from the 'Lung Segmentation' compilation, paired by name."""
    folder = root / "Lung Segmentation"
    rows = []
    for site in ("MCUCXR", "CHNCXR"):
        for image in sorted((folder / "CXR_png").glob(f"{site}_*.png")):
            name = f"{image.stem}_mask.png" if site == "CHNCXR" else image.name
            mask = folder / "masks" / name
            if mask.is_file():
                rows.append({"id": image.stem, "image_path": str(image), "mask_path": str(mask)})
            if sum(r["id"].startswith(site) for r in rows) == per_site:
                break
    return pd.DataFrame(rows)


def test_real_data_loads_with_plausible_lung_masks(real_dir, tmp_path):
    table = real_table(real_dir, per_site=10)
    assert len(table) == 20
    loaded = load_arrays(table, size=128, cache_dir=tmp_path / "cache", progress=False)
    assert loaded.images.shape == (20, 128, 128, 1) and loaded.has_mask.all()
    assert 0.1 < loaded.images.mean() < 0.9
    coverage = loaded.masks.mean(axis=(1, 2, 3))
    assert ((coverage > 0.15) & (coverage < 0.60)).all(), coverage
