"""Tests for cxrlib.tb.features: registry, hand-crafted, ImageNet CNN and encoder features."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy import ndimage

from cxrlib.errors import CxrlibError
from cxrlib.tb.features import (
    FeatureError,
    available_extractors,
    extract_features,
    get_extractor,
    register_extractor,
)
from cxrlib.tb.features.handcrafted import (
    GROUPS,
    HandcraftedFeatures,
    _glcm,
    asymmetry_pairs,
    image_features,
)
from cxrlib.tb.features.regions import lung_regions, split_lungs

SIZE = 64


def lung_mask(size: int = SIZE, gap: int = 4) -> np.ndarray:
    """Two vertical ellipses, the image-left one (patient's right) a bit larger."""
    rows, cols = np.mgrid[:size, :size]
    centre = size / 2
    right = ((rows - centre) / (0.38 * size)) ** 2 + (
        (cols - centre / 2 + gap / 2) / (0.2 * size)
    ) ** 2
    left = ((rows - centre - 2) / (0.34 * size)) ** 2 + (
        (cols - 1.5 * centre - gap / 2) / (0.18 * size)
    ) ** 2
    return (right <= 1) | (left <= 1)


def phantoms(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiny radiograph-like images whose lung texture depends on the label.

    Returns images float32 (n, 64, 64, 1) in [0, 1], masks bool (n, 64, 64, 1) and
    labels int (n,) alternating 0/1. TB images carry coarse bright mottling in the
    lungs, normal ones a fine faint noise.
    """
    rng = np.random.default_rng(seed)
    mask = lung_mask()
    images, masks = [], []
    labels = np.arange(n) % 2
    for label in labels:
        shifted = np.roll(mask, int(rng.integers(-2, 3)), axis=1)
        base = 0.75 - 0.35 * shifted + 0.05 * rng.standard_normal((SIZE, SIZE))
        if label:
            mottle = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.5)
            base = base + 0.9 * mottle * shifted
        images.append(np.clip(base, 0, 1))
        masks.append(shifted)
    images = np.stack(images).astype(np.float32)[..., None]
    return images, np.stack(masks)[..., None], labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return phantoms()


@pytest.fixture(scope="module")
def handcrafted(data) -> tuple[np.ndarray, list[str]]:
    images, masks, _ = data
    return extract_features("handcrafted", images, masks, n_jobs=1)


# ---------------------------------------------------------------------------- registry


def test_registry_lists_every_extractor():
    names = available_extractors()
    for name in ("handcrafted", "encoder", "vgg16", "vgg16_lung", "resnet50"):
        assert name in names
    assert "inceptionresnetv2_lung" in names
    assert names == sorted(names)


def test_unknown_extractor_lists_known_ones():
    with pytest.raises(FeatureError, match="unknown feature extractor 'sift'.*handcrafted"):
        extract_features("sift", np.zeros((1, 8, 8)))


def test_bad_option_is_reported():
    with pytest.raises(FeatureError, match="handcrafted.*bad option"):
        get_extractor("handcrafted", colour=True)


def test_register_custom_extractor(data, monkeypatch):
    import cxrlib.tb.features

    monkeypatch.setattr(cxrlib.tb.features, "_REGISTRY", dict(cxrlib.tb.features._REGISTRY))
    images, masks, _ = data

    class Means(HandcraftedFeatures):
        name = "means"

        def extract(self, images, masks=None, *, batch_size=16, progress=False):
            array, _ = self._inputs(images, masks)
            return array.mean(axis=(1, 2))[:, None], ["mean"]

    register_extractor("means", Means)
    X, names = extract_features("means", images, masks)
    assert names == ["mean"]
    np.testing.assert_allclose(X[:, 0], images.mean(axis=(1, 2, 3)), rtol=1e-6)


# ------------------------------------------------------------------------ input checks


def test_handcrafted_needs_masks(data):
    images, _, _ = data
    with pytest.raises(FeatureError, match="'handcrafted' needs lung masks"):
        extract_features("handcrafted", images)


def test_empty_mask_is_named(data):
    images, masks, _ = data
    masks = masks.copy()
    masks[3] = False
    with pytest.raises(FeatureError, match=r"image\(s\) 3 have an empty lung mask"):
        extract_features("handcrafted", images, masks, n_jobs=1)


def test_mask_shape_mismatch(data):
    images, masks, _ = data
    with pytest.raises(FeatureError, match="does not match the images' shape"):
        extract_features("handcrafted", images, masks[:, :32], n_jobs=1)


def test_nan_image_is_named(data):
    images, masks, _ = data
    images = images.copy()
    images[5, 10, 10] = np.nan
    with pytest.raises(FeatureError, match=r"NaN or infinite values in image\(s\) 5"):
        extract_features("handcrafted", images, masks, n_jobs=1)


def test_bad_shapes_and_batch_size(data):
    images, masks, _ = data
    with pytest.raises(FeatureError, match=r"shape \(N, H, W\)"):
        extract_features("handcrafted", images[0, ..., 0], masks[0, ..., 0])
    with pytest.raises(FeatureError, match=r"single image pass image\[None\]"):
        extract_features("handcrafted", images[0], masks[0])
    with pytest.raises(FeatureError, match=r"values in \[0, 1\], got \[0, 255\]"):
        extract_features("handcrafted", images * 255, masks)
    with pytest.raises(FeatureError, match="batch_size"):
        extract_features("handcrafted", images, masks, batch_size=0)
    assert isinstance(FeatureError("x"), CxrlibError)


# ------------------------------------------------------------------------ hand-crafted


def test_handcrafted_shapes_dtypes_names(handcrafted, data):
    X, names = handcrafted
    assert X.dtype == np.float32
    assert X.shape == (len(data[0]), len(names))
    assert len(set(names)) == len(names)
    assert np.isfinite(X).all()
    prefixes = {n.split("_")[0] for n in names}
    assert prefixes == {
        "intensity", "glcm", "lbp", "gradient", "hog", "hessian", "shape", "asymmetry"
    }  # fmt: skip
    assert "glcm_right_upper_contrast_d1" in names
    assert "shape_lungs_right_left_area_ratio" in names
    assert "asymmetry_glcm_upper_contrast_d1" in names
    assert names.index("asymmetry_glcm_upper_contrast_d1") > names.index("shape_left_area")


def test_asymmetry_is_the_absolute_difference_of_the_two_sides(handcrafted, data):
    X, names = handcrafted
    col = {n: i for i, n in enumerate(names)}
    pairs = asymmetry_pairs(names)
    assert pairs, "no feature measured on both sides"
    for right, left, name in pairs:
        assert names[right].replace("_right", "_left", 1) == names[left]
        sides = np.abs(X[:, right]) + np.abs(X[:, left])  # float32 rounding of each side
        error = np.abs(X[:, col[name]] - np.abs(X[:, right] - X[:, left]))
        assert (error <= 1e-6 * (1 + sides)).all(), name
    asym = [n for n in names if n.startswith("asymmetry_")]
    assert len(asym) == len(pairs)  # one column per pair, none without a twin
    assert "asymmetry_shape_area" in asym and "asymmetry_intensity_upper_z_mean" in asym
    assert not any("lungs" in n for n in asym)  # the whole field has no twin
    # a mask mirrored about the image centre swaps the lungs: same asymmetry
    images, masks, _ = data
    image, mask = images[0, ..., 0], masks[0, ..., 0]
    a, names_a = image_features(image, mask, groups=("intensity", "shape", "asymmetry"))
    b, _ = image_features(image[:, ::-1], mask[:, ::-1], groups=("intensity", "shape", "asymmetry"))
    only = [i for i, n in enumerate(names_a) if n.startswith("asymmetry_")]
    np.testing.assert_allclose(a[only], b[only], rtol=1e-4, atol=1e-5)


def test_handcrafted_is_deterministic_and_pool_matches_serial(handcrafted, data):
    images, masks, _ = data
    X, names = handcrafted
    X2, names2 = extract_features("handcrafted", images, masks, n_jobs=2, batch_size=5)
    assert names2 == names
    np.testing.assert_array_equal(X2, X)


def test_handcrafted_values(handcrafted, data):
    images, masks, _ = data
    X, names = handcrafted
    col = {n: i for i, n in enumerate(names)}
    image, mask = images[0, ..., 0], masks[0, ..., 0]
    lung = image[mask].astype(np.float64)
    assert X[0, col["intensity_lungs_mean"]] == pytest.approx(lung.mean(), rel=1e-5)
    assert X[0, col["intensity_lungs_p75"]] == pytest.approx(np.percentile(lung, 75), rel=1e-5)
    assert X[0, col["shape_lungs_area"]] == pytest.approx(mask.mean(), rel=1e-6)
    right, left = split_lungs(mask)
    assert X[0, col["shape_lungs_right_left_area_ratio"]] == pytest.approx(
        right.sum() / left.sum(), rel=1e-5
    )
    # the lung-standardised lung has mean 0: the two lungs' z-means balance out
    z_right = X[:, col["intensity_right_z_mean"]] * right.sum()
    z_left = X[:, col["intensity_left_z_mean"]] * left.sum()
    assert abs(z_right[0] + z_left[0]) < 1e-2 * mask.sum()
    lbp = [i for n, i in col.items() if n.startswith("lbp_r1_lungs_bin")]
    np.testing.assert_allclose(X[:, lbp].sum(axis=1), 1.0, rtol=1e-5)


def test_handcrafted_features_separate_texture(handcrafted, data):
    _, _, labels = data
    X, names = handcrafted
    # TB phantoms: coarse, strong mottling -> more gray-level spread in the lungs but,
    # on the per-image quantised scale, smoother neighbours (less contrast at 1 pixel)
    spread = X[:, names.index("intensity_lungs_std")]
    assert spread[labels == 1].min() > spread[labels == 0].max()
    contrast = X[:, names.index("glcm_lungs_contrast_d1")]
    assert contrast[labels == 1].max() < contrast[labels == 0].min()


def test_groups_subset_and_errors(data):
    images, masks, _ = data
    X, names = extract_features(
        "handcrafted", images[:2], masks[:2], n_jobs=1, groups=("shape", "intensity")
    )
    assert {n.split("_")[0] for n in names} == {"intensity", "shape"}
    assert names[0].startswith("intensity")  # columns follow GROUPS order
    assert X.shape == (2, len(names))
    with pytest.raises(FeatureError, match="groups must be"):
        HandcraftedFeatures(groups=("colour",))
    with pytest.raises(FeatureError, match="glcm_levels"):
        HandcraftedFeatures(glcm_levels=1)
    with pytest.raises(FeatureError, match="'asymmetry' group compares the lungs"):
        HandcraftedFeatures(groups=("hessian", "asymmetry"))
    assert GROUPS[0] == "intensity"


def test_missing_lung_gives_zeros_not_nan(data):
    images, masks, _ = data
    one_lung = masks[0, ..., 0].copy()
    one_lung[:, SIZE // 2 :] = False  # only the patient's right lung (image left)
    values, names = image_features(images[0, ..., 0], one_lung)
    assert np.isfinite(values).all()
    left = [i for i, n in enumerate(names) if n.startswith("glcm_left_")]
    assert left and np.all(values[left] == 0)
    assert values[names.index("shape_left_area")] == 0


def test_split_lungs_and_zones():
    mask = lung_mask()
    right, left = split_lungs(mask)
    assert np.nonzero(right)[1].max() < np.nonzero(left)[1].min()  # right lung is image-left
    assert np.array_equal(right | left, mask)
    merged = mask.copy()
    merged[30:34, :] = True  # one component spanning the centre: split at the centre column
    right, left = split_lungs(merged)
    assert not right[:, SIZE // 2 :].any() and not left[:, : SIZE // 2].any()
    regions = lung_regions(mask)
    assert list(regions)[:3] == ["lungs", "right", "left"]
    zones = [regions[f"right_{z}"] for z in ("upper", "middle", "lower")]
    assert np.array_equal(zones[0] | zones[1] | zones[2], regions["right"])
    assert not (zones[0] & zones[1]).any() and not (zones[1] & zones[2]).any()
    tops = [np.flatnonzero(z.any(axis=1)).mean() for z in zones]
    assert tops[0] < tops[1] < tops[2]


def test_glcm_matches_skimage_and_brute_force():
    from skimage.feature import graycomatrix

    rng = np.random.default_rng(1)
    q = rng.integers(0, 6, size=(12, 14))
    full = np.ones_like(q, dtype=bool)
    ours = _glcm(q, full, 6, (1, 2))
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    reference = graycomatrix(q, [1, 2], angles, levels=6, symmetric=True)
    np.testing.assert_array_equal(ours, reference)
    # with a region, only pairs whose both pixels are inside count
    region = np.zeros_like(full)
    region[2:9, 3:12] = True
    region[5, 5] = False
    masked = _glcm(q, region, 6, (1,))
    expected = np.zeros((6, 6))
    for r in range(12):
        for c in range(14):
            r2, c2 = r + 1, c + 1  # 45 degrees in skimage: offset (1, 1)
            if 0 <= r2 < 12 and 0 <= c2 < 14 and region[r, c] and region[r2, c2]:
                expected[q[r, c], q[r2, c2]] += 1
                expected[q[r2, c2], q[r, c]] += 1
    np.testing.assert_array_equal(masked[:, :, 0, 1], expected)


# -------------------------------------------------------------------------------- CNNs


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty KERAS_HOME; any attempt to download fails the test."""
    from keras.src.utils import file_utils

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:2]}")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", no_download)
    return tmp_path


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50_lung", "inceptionresnetv2"])
def test_missing_weights_give_a_clear_error(keras_home, data, backbone):
    from cxrlib.tb.features.cnn import BACKBONES, WeightsUnavailableError

    images, masks, _ = data
    spec = BACKBONES[backbone.removesuffix("_lung")]
    with pytest.raises(WeightsUnavailableError) as info:
        extract_features(backbone, images[:2], masks[:2])
    message = str(info.value)
    assert spec.weights_file in message
    assert str(keras_home / "models" / spec.weights_file) in message
    assert spec.url in message and spec.url.startswith("https://storage.googleapis.com/")
    assert isinstance(info.value, CxrlibError)
    assert info.value.searched[0] == keras_home / "models"


def test_weight_file_names_match_keras_source():
    """The file names, URLs and hashes are those keras.applications itself uses."""
    from keras.src.applications import inception_resnet_v2, resnet, vgg16

    from cxrlib.tb.features.cnn import BACKBONES

    vgg = inspect.getsource(vgg16)
    assert f'"{BACKBONES["vgg16"].weights_file}"' in vgg
    assert BACKBONES["vgg16"].md5 in vgg and BACKBONES["vgg16"].url.endswith(
        vgg16.WEIGHTS_PATH_NO_TOP.split("/")[-1]
    )
    assert BACKBONES["vgg16"].url == vgg16.WEIGHTS_PATH_NO_TOP
    assert resnet.WEIGHTS_HASHES["resnet50"][1] == BACKBONES["resnet50"].md5
    assert (
        BACKBONES["resnet50"].url == resnet.BASE_WEIGHTS_PATH + BACKBONES["resnet50"].weights_file
    )
    irv2 = inspect.getsource(inception_resnet_v2)
    assert BACKBONES["inceptionresnetv2"].md5 in irv2
    spec = BACKBONES["inceptionresnetv2"]
    assert spec.url == inception_resnet_v2.BASE_WEIGHT_URL + spec.weights_file


def test_vgg16_loads_weights_from_keras_home(keras_home, data):
    import keras

    from cxrlib.tb.features.cnn import BACKBONES, WeightsWarning

    images, masks, _ = data
    images, masks = images[:3], masks[:3]
    size = 64
    keras.utils.set_random_seed(3)
    reference = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    (keras_home / "models").mkdir()
    reference.save(keras_home / "models" / BACKBONES["vgg16"].weights_file)  # legacy HDF5

    extractor = get_extractor("vgg16", input_size=size)
    with pytest.warns(WeightsWarning, match="does not match the published ImageNet weights"):
        X, names = extractor.extract(images, masks, batch_size=2)
    maps = keras.ops.convert_to_numpy(reference(extractor.preprocess(images[..., 0])))
    assert X.shape == (3, 512) and X.dtype == np.float32
    assert names[0] == "vgg16_0000" and len(names) == 512
    np.testing.assert_allclose(X, maps.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    # a freshly initialised network gives other features: the file was really loaded
    other = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    other_maps = keras.ops.convert_to_numpy(other(extractor.preprocess(images[..., 0])))
    assert not np.allclose(other_maps.mean(axis=(1, 2)), X)

    lung = get_extractor("vgg16_lung", input_size=size)
    assert lung.needs_mask
    with pytest.warns(WeightsWarning):
        X_lung, lung_names = lung.extract(images, masks)
    assert lung_names[0] == "vgg16_lung_0000"
    weights = masks[..., 0].reshape(3, 2, 32, 2, 32).mean(axis=(2, 4))  # area fraction per cell
    expected = np.einsum("nhwc,nhw->nc", maps, weights) / weights.sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose(X_lung, expected, rtol=1e-4, atol=1e-5)


def test_cnn_preprocess_uses_backbone_input():
    from cxrlib.tb.features.cnn import CNNFeatures

    extractor = CNNFeatures("inceptionresnetv2")
    assert extractor.input_size == 299
    x = extractor.preprocess(np.full((2, 40, 50), 1.0, np.float32))
    assert x.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)  # "tf" mode maps 255 to 1
    with pytest.raises(FeatureError, match="unknown backbone"):
        CNNFeatures("alexnet")


# ----------------------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def small_unet():
    from cxrlib.seg.models import build_unet

    return build_unet((32, 32, 1), filters=(4, 8, 16), dropout=0.1)


def test_find_bottleneck(small_unet):
    from cxrlib.seg.models import build_resunet
    from cxrlib.tb.features.encoder import find_bottleneck

    name = find_bottleneck(small_unet)
    assert name == "bottleneck_dropout"
    assert tuple(small_unet.get_layer(name).output.shape[1:]) == (8, 8, 16)
    resunet = build_resunet((32, 32, 1), filters=(4, 8, 16))
    assert find_bottleneck(resunet) == "bridge2_conv"


def test_encoder_features(small_unet, data, tmp_path):
    import keras

    from cxrlib.tb.features.encoder import EncoderFeatures

    images, masks, _ = data
    images, masks = images[:4], masks[:4]
    full = np.ones_like(masks)
    X, names = extract_features("encoder", images, full, model=small_unet, batch_size=3)
    assert X.shape == (4, 32) and X.dtype == np.float32
    assert names[0] == "encoder_gap_0000" and names[16] == "encoder_lung_0000"
    reader = keras.Model(small_unet.inputs[0], small_unet.get_layer("bottleneck_dropout").output)
    from cxrlib.preprocess import resize_image

    small = np.stack([resize_image(im[..., 0], (32, 32)) for im in images])[..., None]
    maps = keras.ops.convert_to_numpy(reader(small))
    np.testing.assert_allclose(X[:, :16], maps.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(X[:, 16:], X[:, :16], rtol=1e-4, atol=1e-6)  # full mask = global

    X_lung, _ = extract_features("encoder", images, masks, model=small_unet)
    assert not np.allclose(X_lung[:, 16:], X_lung[:, :16])

    path = tmp_path / "unet.keras"
    small_unet.save(path)
    X_loaded, _ = EncoderFeatures(str(path)).extract(images, full)
    np.testing.assert_allclose(X_loaded, X, rtol=1e-5, atol=1e-6)

    with pytest.warns(UserWarning, match="no lung pixels"):  # own prediction, impossible cut
        EncoderFeatures(small_unet, threshold=0.999999).extract(images[:1])
    with pytest.raises(FeatureError, match="does not exist"):
        EncoderFeatures(str(tmp_path / "missing.keras"))
    with pytest.raises(FeatureError, match="no layer 'nope'"):
        EncoderFeatures(small_unet, layer="nope")
