"""YOLORObjectDetector: shapes, official names and counts, input checks, saving."""

import math
import os

import keras
import numpy as np
import pytest

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.models import PRESETS
from yolor_keras.models import YOLORBackbone
from yolor_keras.tasks import YOLORObjectDetector

TINY = {"num_classes": 3, "width_multiplier": 0.125, "depth_multiplier": 0.33}
# Official anchors in pixels (cfg / YAML files), per level.
P6_ANCHORS = [
    [19, 27, 44, 40, 38, 94],
    [96, 68, 86, 152, 180, 137],
    [140, 301, 303, 264, 238, 542],
    [436, 615, 739, 380, 925, 792],
]
CSP_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]


def all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def official_parameter_count(model):
    """PyTorch's ``sum(p.numel() for p in model.parameters())``: BN running stats excluded."""
    running = sum(
        int(np.prod(v.shape))
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    )
    return model.count_params() - running


@pytest.fixture(scope="module")
def p6_seven_classes():
    return YOLORObjectDetector.from_preset("yolor_p6", num_classes=7, width_multiplier=0.25)


@pytest.mark.parametrize(
    "name, expected",
    [("yolor_p6", 37_265_016), ("yolor_csp", 52_923_994), ("yolor_p6_paper", 37_270_264)],
)
def test_parameter_counts_match_official(name, expected):
    model = YOLORObjectDetector.from_preset(name)  # nc=80, full size
    count = official_parameter_count(model)
    assert count == expected
    assert count == sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# One variant per structure; test_full_size_variants.py (slow) runs all eight.
@pytest.mark.parametrize("name", ["yolor_csp_x", "yolor_p6", "yolor_e6_paper"])
def test_tiny_variant_outputs_and_structure(name):
    model = YOLORObjectDetector.from_preset(name, **TINY)
    main = PRESETS[name]["architecture"]["branch"] == "main"
    levels = 3 if name.startswith("yolor_csp") else 4
    assert model.strides == [8, 16, 32, 64][:levels]
    expected_anchors = CSP_ANCHORS if levels == 3 else P6_ANCHORS
    np.testing.assert_array_equal(
        model.anchors, np.array(expected_anchors, "float32").reshape(levels, 3, 2)
    )
    size = 64
    raw = model(np.random.default_rng(0).random((2, size, size, 3)).astype("float32"))
    assert isinstance(raw, list) and len(raw) == levels
    for output, stride in zip(raw, model.strides):
        assert tuple(output.shape) == (2, size // stride, size // stride, 3, 8)
        assert np.isfinite(keras.ops.convert_to_numpy(output)).all()

    layers = list(all_layers(model))
    epsilons = {
        layer.epsilon for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert epsilons == ({1e-4} if main else {1e-3})
    names = {layer.name for layer in layers}
    if main:
        assert {"module_list-1-Conv2d", "module_list-1-BatchNorm2d"} <= names
    else:
        assert {
            "model-1-conv",
            "model-1-bn",
            "model-3-cv1-conv",
            "model-3-cv2",
            "model-3-bn",
        } <= names
        assert {"model-41-ia-0", "model-41-m-0", "model-41-im-3"} <= names
    # Stride-2 convs pad explicitly on all sides (Keras "same" pads bottom/right only).
    pads = {layer.name: layer for layer in layers if isinstance(layer, keras.layers.ZeroPadding2D)}
    stride_two = [
        layer
        for layer in layers
        if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)
    ]
    assert len(stride_two) >= len(model.strides) + 1
    for layer in stride_two:
        assert layer.padding == "valid"
        assert pads[layer.name.rsplit("-", 1)[0] + "-pad"].padding == ((1, 1), (1, 1))


def test_implicit_widths_follow_num_classes(p6_seven_classes):
    head = p6_seven_classes.head_layers("detection")
    adds = [layer for layer in head if isinstance(layer, ImplicitAdd)]
    muls = [layer for layer in head if isinstance(layer, ImplicitMultiply)]
    assert [a.name for a in adds] == [f"module_list-{i}" for i in (203, 204, 205, 206)]
    assert [tuple(a.implicit.shape) for a in adds] == [(64,), (96,), (128,), (160,)]
    assert [m.name for m in muls] == [f"module_list-{i}" for i in (207, 208, 209, 210)]
    assert [tuple(m.implicit.shape) for m in muls] == [(3 * 12,)] * 4
    raw = p6_seven_classes(np.zeros((1, 64, 64, 3), "float32"))
    assert raw[0].shape[-1] == 12


def test_prediction_bias_starts_at_the_official_prior(p6_seven_classes):
    for conv_index, stride in ((214, 8), (220, 16), (226, 32), (232, 64)):
        layer = p6_seven_classes.get_layer(f"module_list-{conv_index}-Conv2d")
        bias = keras.ops.convert_to_numpy(layer.bias).reshape(3, 12)
        # As the official `_initialize_biases`: PyTorch's default bias,
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), plus the objectness and class priors.
        bound = 1 / math.sqrt(layer.kernel.shape[2])
        prior = np.zeros((3, 12))
        prior[:, 4] = math.log(8 / (640 / stride) ** 2)
        prior[:, 5:] = math.log(0.6 / (7 - 0.99))
        noise = bias - prior
        assert np.all(np.abs(noise) <= bound + 1e-6)
        assert np.std(noise) > bound / 10  # random, not all zero


def test_backbone_reports_pyramid():
    backbone = YOLORBackbone(PRESETS["yolor_p6"]["architecture"], width_multiplier=0.125)
    assert backbone.pyramid_strides == {"P3": 8, "P4": 16, "P5": 32, "P6": 64}
    features = backbone(np.zeros((1, 128, 128, 3), "float32"))
    assert sorted(features) == ["P3", "P4", "P5", "P6"]
    assert tuple(features["P6"].shape) == (1, 2, 2, backbone.output_channels["P6"])


def test_wrong_image_sizes_get_a_clear_error(p6_seven_classes):
    with pytest.raises(ValueError, match="Image height 96 is not a multiple of 64"):
        p6_seven_classes(np.zeros((1, 96, 128, 3), "float32"))
    with pytest.raises(ValueError, match="Image width 100 is not a multiple of 32"):
        YOLORObjectDetector.from_preset("yolor_csp", image_size=(64, 100), **TINY)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Unknown YOLOR preset 'yolor_p7'"):
        YOLORObjectDetector.from_preset("yolor_p7")
    with pytest.raises(ValueError, match="num_classes"):
        YOLORObjectDetector.from_preset("yolor_p6", num_classes=0)
    with pytest.raises(ValueError, match="width_multiplier"):
        YOLORObjectDetector.from_preset("yolor_p6", width_multiplier=0)


def test_keras_file_round_trip(tmp_path):
    model = YOLORObjectDetector.from_preset("yolor_p6_paper", image_size=64, **TINY)
    path = os.path.join(tmp_path, "tiny.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is YOLORObjectDetector
    assert restored.get_config() == model.get_config()
    assert [layer.name for layer in all_layers(restored)] == [
        layer.name for layer in all_layers(model)
    ]
    assert restored.strides == model.strides and restored.num_classes == 3
    x = np.random.default_rng(3).random((1, 64, 64, 3)).astype("float32")
    for a, b in zip(model(x), restored(x)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
