"""Convolutions start from PyTorch's default initialisation, as in the official code.

Neither official branch re-initialises its convolutions, so each starts from
`nn.Conv2d`'s default: kernel ``kaiming_uniform_(a=sqrt(5))`` = U(-b, b) with
``b = 1 / sqrt(fan_in)`` (variance ``1 / (3 fan_in)``), bias U(-b, b); the
prediction convs then add the prior to their bias (``_initialize_biases``).
Keras' glorot_uniform would give 2 to 4 times that kernel variance.
"""

import math

import keras
import numpy as np
import pytest

from yolor_keras.models.graph_plan import keras_name
from yolor_keras.models.heads import prior_bias
from yolor_keras.models.yolor_presets import make_plan
from yolor_keras.tasks import YOLORObjectDetector


@pytest.fixture(scope="module")
def full_p6():
    keras.utils.set_random_seed(0)
    return YOLORObjectDetector.from_preset("yolor_p6", num_classes=80)


def _convs(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]


def test_every_conv_kernel_has_pytorch_variance_and_bound(full_p6):
    convs = _convs(full_p6)
    plan = make_plan(full_p6.architecture, 80, 1.0, 1.0)
    nodes = plan.backbone_nodes + plan.neck_nodes + [level.conv for level in plan.head_levels]
    # Every conv of the plan, plus the prediction convs.
    assert len(convs) == sum(node["op"] == "conv" for node in nodes) + len(plan.head_levels)
    ratios = []
    for conv in convs:
        kernel = np.array(conv.kernel, "float64")
        kh, kw, cin, _ = kernel.shape
        fan_in = kh * kw * cin
        expected = 1.0 / (3.0 * fan_in)
        # Sample variance of a uniform: relative standard error sqrt(0.8 / n).
        tolerance = 6.0 * math.sqrt(0.8 / kernel.size)
        ratio = kernel.var() / expected
        assert abs(ratio - 1.0) < tolerance, (conv.name, ratio)
        assert np.abs(kernel).max() <= 1.0 / math.sqrt(fan_in) * (1 + 1e-6), conv.name
        ratios.append(ratio)
    # Over the whole model the mean ratio is 1 to well under a percent
    # (glorot_uniform would give 2 to 4).
    assert abs(np.mean(ratios) - 1.0) < 0.01


def test_prediction_biases_are_uniform_plus_the_official_prior(full_p6):
    plan = make_plan(full_p6.architecture, 80, 1.0, 1.0)
    for level in plan.head_levels:
        conv = full_p6.get_layer(keras_name(level.output_conv_name))
        fan_in = conv.kernel.shape[2]
        bound = 1.0 / math.sqrt(fan_in)
        noise = np.array(conv.bias, "float64") - prior_bias(plan.num_anchors, 80, level.stride)
        assert np.abs(noise).max() <= bound * (1 + 1e-5)
        # U(-b, b) has variance b^2 / 3; 255 samples: within 35 %.
        assert noise.var() == pytest.approx(bound**2 / 3, rel=0.35)
        assert abs(noise.mean()) < 4 * bound / math.sqrt(3 * noise.size)


def test_convs_followed_by_batchnorm_have_no_bias(full_p6):
    # As in both official branches (bias=False before BatchNorm); only the
    # prediction convs carry one.
    with_bias = [conv.name for conv in _convs(full_p6) if conv.use_bias]
    assert len(with_bias) == len(full_p6.strides)
