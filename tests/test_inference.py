"""Tests for cxrlib.seg.inference (model checks, prediction) and cxrlib.seg.folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.imageio import read_image, read_mask, write_png
from cxrlib.seg import folder as seg_folder
from cxrlib.seg.folder import lung_areas, segment_folder
from cxrlib.seg.inference import ModelFileError, load_segmentation_model, predict_masks
from cxrlib.seg.postprocess import postprocess_mask


def _dark_is_lung_model(size: int = 32):
    """A one-layer 'segmenter': probability > 0.5 exactly where the pixel is < 0.5."""
    import keras

    inputs = keras.Input((size, size, 1))
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.full((1, 1, 1, 1), -40.0, np.float32), np.array([20.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "dark.keras"
    _dark_is_lung_model().save(path)
    return path


def _two_lungs(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright image with two dark rectangles; the left one (patient's right) is larger."""
    mask = np.zeros((height, width), bool)
    mask[height // 5 : 4 * height // 5, width // 10 : 9 * width // 20] = True
    mask[height // 4 : 3 * height // 4, 6 * width // 10 : 8 * width // 10] = True
    image = np.where(mask, 0.1, 0.9).astype(np.float32)
    return image, mask


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "images"
    truth = {}
    for name, (h, w) in {"a.png": (64, 64), "b.png": (48, 80), "c.jpg": (100, 60)}.items():
        image, mask = _two_lungs(h, w)
        truth[name] = mask
        if name.endswith(".jpg"):
            images.mkdir(exist_ok=True)
            Image.fromarray((image * 255).astype(np.uint8)).save(images / name, quality=95)
        else:
            write_png(images / name, image)
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "sub").mkdir()
    write_png(images / "sub" / "deep.png", np.zeros((8, 8)))
    return images, truth


def test_segment_folder_writes_masks_at_input_size(model_path, folder, tmp_path):
    images, truth = folder
    out = tmp_path / "out"
    report = segment_folder(model_path, images, out, batch_size=2, progress=False)
    assert report.n_images == 3
    assert report.model_size == (32, 32)
    for name, mask in truth.items():
        stem = name.rsplit(".", 1)[0]
        written = np.asarray(Image.open(out / f"{stem}.png"))
        assert written.shape == mask.shape
        assert set(np.unique(written)) <= {0, 255}
        predicted = read_mask(out / f"{stem}.png")
        dice = 2 * (predicted & mask).sum() / (predicted.sum() + mask.sum())
        assert dice > 0.9, (name, dice)
        with Image.open(out / "overlays" / f"{stem}.png") as picture:
            overlay = np.asarray(picture.convert("RGB"))
        assert overlay.shape == (*mask.shape, 3)
    assert not (out / "deep.png").exists()  # not recursive


def test_segment_folder_lists_skips_and_writes_lungs_csv(model_path, folder, tmp_path):
    images, truth = folder
    out = tmp_path / "out"
    report = segment_folder(model_path, images, out, batch_size=4, progress=False)
    skipped = dict(report.skipped)
    assert set(skipped) == {"notes.txt", "broken.png", "sub"}
    assert "not an image" in skipped["notes.txt"]
    assert "unreadable" in skipped["broken.png"]
    table = pd.read_csv(out / "lungs.csv")
    assert list(table.columns) == [
        "file",
        "lung_area_fraction",
        "right_lung_area_fraction",
        "left_lung_area_fraction",
        "quality",
        "flag",
        "flag_reason",
    ]
    assert list(table["file"]) == ["a.png", "b.png", "c.jpg"]
    row = table.set_index("file").loc["a.png"]
    mask = truth["a.png"]
    assert row["lung_area_fraction"] == pytest.approx(mask.mean(), abs=0.03)
    # the larger rectangle is on the image's left: the patient's right lung
    assert row["right_lung_area_fraction"] > row["left_lung_area_fraction"] > 0
    assert row["right_lung_area_fraction"] + row["left_lung_area_fraction"] == pytest.approx(
        row["lung_area_fraction"]
    )
    assert report.images_per_s > 0
    assert "skipped 3" in report.summary()


def test_segment_folder_refuses_to_write_into_the_input_folder(model_path, folder):
    images, _ = folder
    with pytest.raises(ValueError, match="images folder"):
        segment_folder(model_path, images, images, progress=False)


def test_segment_folder_missing_images_dir(model_path, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        segment_folder(model_path, tmp_path / "nope", tmp_path / "out", progress=False)


def test_shared_stems_get_distinct_mask_names(model_path, tmp_path):
    images = tmp_path / "images"
    write_png(images / "x.png", np.full((40, 40), 0.9))
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(images / "x.jpg")
    segment_folder(model_path, images, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "x.png.png").is_file() and (tmp_path / "out" / "x.jpg.png").is_file()


def test_lung_areas_split_by_side():
    mask = np.zeros((10, 20), bool)
    mask[2:8, 1:7] = True  # 36 px on the image left: patient's right
    mask[3:7, 12:17] = True  # 20 px on the image right: patient's left
    total, right, left = lung_areas(mask)
    assert total == pytest.approx(56 / 200)
    assert right == pytest.approx(36 / 200)
    assert left == pytest.approx(20 / 200)
    assert lung_areas(np.zeros((4, 4), bool)) == (0.0, 0.0, 0.0)


def test_predict_masks_shapes_and_precision(model_path):
    model = load_segmentation_model(model_path)
    images = np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)
    probs = predict_masks(model, images, batch_size=2)
    assert probs.shape == (5, 32, 32, 1) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs[..., 0] > 0.5, images < 0.5)
    with pytest.raises(ValueError, match="expects 32x32"):
        predict_masks(model, np.zeros((1, 16, 16)))


def test_predict_masks_in_bfloat16_matches_float32(tmp_path):
    from cxrlib.seg.models import build_resunet

    model = build_resunet(input_shape=(32, 32, 1), filters=(16, 16, 32))
    path = tmp_path / "resunet.keras"
    model.save(path)
    loaded = load_segmentation_model(path)
    images = np.random.default_rng(1).random((4, 32, 32, 1), dtype=np.float32)
    full = predict_masks(loaded, images, precision="float32")
    half = predict_masks(loaded, images, precision="mixed_bfloat16")
    assert loaded.layers[2].compute_dtype == "bfloat16"
    assert loaded.layers[-1].compute_dtype == "float32"
    np.testing.assert_allclose(half, full, atol=0.05)


def test_not_a_keras_file_is_a_clear_error(tmp_path):
    fake = tmp_path / "model.keras"
    fake.write_text("hello")
    with pytest.raises(ModelFileError, match="model.keras: not a readable Keras model file"):
        load_segmentation_model(fake)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_segmentation_model(tmp_path / "missing.keras")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0")
    with pytest.raises(ModelFileError, match="not a Keras model file"):
        load_segmentation_model(other)


def test_a_classifier_is_not_a_segmentation_model(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = tmp_path / "classifier.keras"
    classifier.save(path)
    with pytest.raises(ModelFileError, match="classifier.keras: not a segmentation model"):
        load_segmentation_model(path)

    relu_out = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="relu")(inputs))
    path = tmp_path / "relu.keras"
    relu_out.save(path)
    with pytest.raises(ModelFileError, match="expected a sigmoid"):
        load_segmentation_model(path)


def test_segment_folder_postprocesses_the_masks(model_path, tmp_path):
    """A speck is dropped and a hole filled (postprocess_mask), unless postprocess=False."""
    images = tmp_path / "images"
    image, mask = _two_lungs(64, 64)
    image[36:44, 10:18] = 0.9  # a hole in the larger lung
    image[2:6, 56:60] = 0.1  # a third, small dark component
    write_png(images / "one.png", image)
    segment_folder(model_path, images, tmp_path / "clean", progress=False)
    segment_folder(model_path, images, tmp_path / "raw", postprocess=False, progress=False)
    clean, raw = read_mask(tmp_path / "clean" / "one.png"), read_mask(tmp_path / "raw" / "one.png")
    assert raw[2:6, 56:60].any() and not raw[40, 14]
    assert not clean[2:6, 56:60].any() and clean[40, 14]
    np.testing.assert_array_equal(clean, postprocess_mask(raw))


def test_overlay_png_is_a_palette_image(model_path, tmp_path):
    images = tmp_path / "images"
    image, mask = _two_lungs(64, 64)
    write_png(images / "one.png", image)
    segment_folder(model_path, images, tmp_path / "out", progress=False)
    with Image.open(tmp_path / "out" / "overlays" / "one.png") as picture:
        assert picture.mode == "P"
        rgb = np.asarray(picture.convert("RGB"))
    expected = seg_folder.overlay_image(
        read_image(images / "one.png"), read_mask(tmp_path / "out" / "one.png")
    )
    np.testing.assert_array_equal(rgb, expected)


def test_overlay_image_marks_the_mask():
    image, mask = _two_lungs(40, 40)
    rgb = seg_folder.overlay_image(image, mask)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    outside = rgb[~mask]
    assert np.all(outside[:, 0] == outside[:, 1])  # grey outside the lungs
    inside = rgb[mask]
    assert np.any(inside[:, 1] > inside[:, 0])  # tinted inside
