"""The recipe's ``fl_gamma``: the official FocalLoss around the objectness and class BCE."""

import math

import keras
import numpy as np
import pytest

from yolor_keras.losses import YOLORLoss

ANCHORS = np.array([[[10, 13], [16, 30], [33, 23]]] * 3, "float32")
STRIDES = [8, 16, 32]


def _empty_labels(batch=1):
    return {"boxes": np.zeros((batch, 1, 4), "float32"), "classes": -np.ones((batch, 1), "int32")}


def _constant_outputs(value, image=32, nc=2):
    return [np.full((1, image // s, image // s, 3, 5 + nc), value, "float32") for s in STRIDES]


def test_objectness_focal_loss_by_hand():
    # No targets: every objectness target is 0, so each element's loss is
    # softplus(x) * (1 - alpha) * sigmoid(x) ** gamma, and obj = sum of
    # balance [4, 1, 0.4] times that (the mean of identical elements).
    x, gamma = 0.5, 1.5
    loss = YOLORLoss(ANCHORS, STRIDES, 2, focal_gamma=gamma)
    parts = loss.compute_components(_empty_labels(), _constant_outputs(x))
    p = 1 / (1 + math.exp(-x))  # 0.6224593
    element = math.log1p(math.exp(x)) * 0.75 * p**gamma  # 0.9740770 * 0.75 * 0.4910978
    assert float(parts["obj"][0]) == pytest.approx(5.4 * element, rel=1e-6)
    assert float(parts["box"][0]) == 0.0 and float(parts["cls"][0]) == 0.0


def test_focal_factor_on_a_positive_element_by_hand():
    # One positive class element with target 1: BCE = softplus(-x) and the
    # factor is alpha * (1 - sigmoid(x)) ** gamma.
    loss = YOLORLoss(ANCHORS, STRIDES, 2, focal_gamma=2.0)
    logits = np.array([[-1.0, 2.0]], "float32")
    targets = np.array([[1.0, 0.0]], "float32")
    got = keras.ops.convert_to_numpy(loss._criterion(logits, targets, 1.0))
    s_neg, s_pos = 1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-2.0))
    expected = [
        math.log1p(math.exp(1.0)) * 0.25 * (1 - s_neg) ** 2,  # 1.3132617 * 0.25 * 0.5344466
        math.log1p(math.exp(2.0)) * 0.75 * s_pos**2,  # 2.1269280 * 0.75 * 0.7763184
    ]
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_zero_gamma_is_exactly_the_plain_bce():
    rng = np.random.default_rng(0)
    raw = [rng.normal(size=(2, 96 // s, 96 // s, 3, 8)).astype("float32") for s in STRIDES]
    labels = {
        "boxes": np.array(
            [[[10, 12, 50, 60], [30, 30, 90, 70]], [[0, 0, 40, 40], [0, 0, 0, 0]]], "float32"
        ),
        "classes": np.array([[0, 2], [1, -1]], "int32"),
    }
    plain = YOLORLoss(ANCHORS * 2, STRIDES, 3)
    zero = YOLORLoss(ANCHORS * 2, STRIDES, 3, focal_gamma=0.0)
    focal = YOLORLoss(ANCHORS * 2, STRIDES, 3, focal_gamma=1.5)
    a = {k: keras.ops.convert_to_numpy(v) for k, v in plain.compute_components(labels, raw).items()}
    b = {k: keras.ops.convert_to_numpy(v) for k, v in zero.compute_components(labels, raw).items()}
    c = {k: keras.ops.convert_to_numpy(v) for k, v in focal.compute_components(labels, raw).items()}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # The focal loss changes objectness and classes, not the box term.
    np.testing.assert_array_equal(a["box"], c["box"])
    assert np.all(c["obj"] < a["obj"]) and np.all(c["cls"] < a["cls"])


def test_focal_settings_round_trip_and_are_checked():
    loss = YOLORLoss(ANCHORS, STRIDES, 2, focal_gamma=1.5, focal_alpha=0.3)
    restored = YOLORLoss.from_config(loss.get_config())
    assert (restored.focal_gamma, restored.focal_alpha) == (1.5, 0.3)
    with pytest.raises(ValueError, match="fl_gamma"):
        YOLORLoss(ANCHORS, STRIDES, 2, focal_gamma=-1.0)
    with pytest.raises(ValueError, match="focal_alpha"):
        YOLORLoss(ANCHORS, STRIDES, 2, focal_alpha=1.5)
