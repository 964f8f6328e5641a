"""CIoU against values worked out by hand and against Keras' own CIoU."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.losses import complete_iou

K = 4.0 / math.pi**2  # the constant of the aspect-ratio term v


def _ciou(box1, box2):
    return float(keras.ops.convert_to_numpy(complete_iou([box1], [box2]))[0])


def test_identical_boxes_give_one():
    assert _ciou([5.0, 5.0, 10.0, 4.0], [5.0, 5.0, 10.0, 4.0]) == pytest.approx(1.0, abs=1e-6)


def test_disjoint_boxes_of_equal_shape():
    # xyxy [0,0,2,2] and [4,0,6,2]: no overlap, same aspect (v = 0), centres
    # 4 apart, enclosing box 6 x 2: CIoU = -16 / 40.
    assert _ciou([1.0, 1.0, 2.0, 2.0], [5.0, 1.0, 2.0, 2.0]) == pytest.approx(-0.4, abs=1e-6)


def test_nested_boxes_pay_only_the_aspect_term():
    # xyxy [0,0,4,2] holds [1,0,3,2]: IoU 4/8, same centre, aspects 2 and 1.
    v = K * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1.0 - 0.5 + v)
    assert _ciou([2.0, 1.0, 4.0, 2.0], [2.0, 1.0, 2.0, 2.0]) == pytest.approx(
        0.5 - alpha * v, abs=1e-6
    )


def test_overlap_distance_and_aspect_together():
    # xyxy [0,0,2,2] vs [1,1,4,2]: intersection 1, union 4 + 3 - 1 = 6,
    # centres (1,1) and (2.5,1.5) -> rho² = 2.5, enclosing [0,4]x[0,2] -> c² = 20.
    iou = 1.0 / 6.0
    v = K * (math.atan(3.0) - math.atan(1.0)) ** 2
    alpha = v / (1.0 - iou + v)
    expected = iou - 2.5 / 20.0 - alpha * v
    assert _ciou([1.0, 1.0, 2.0, 2.0], [2.5, 1.5, 3.0, 1.0]) == pytest.approx(expected, abs=1e-6)


def test_matches_keras_compute_ciou_on_random_boxes():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 50, (2, 200, 2))
    sizes = rng.uniform(0.5, 30, (2, 200, 2))
    xywh = np.concatenate([centres, sizes], -1).astype("float32")
    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], -1).astype("float32")
    ours = keras.ops.convert_to_numpy(complete_iou(xywh[0], xywh[1]))
    theirs = keras.ops.convert_to_numpy(
        keras.utils.bounding_boxes.compute_ciou(xyxy[0], xyxy[1], "xyxy")
    )
    # Keras uses eps 1e-7 where YOLOR uses 1e-9.
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    assert ours.min() < 0.0 < ours.max()  # the sample covers both signs


def test_centre_gradient_by_hand():
    # Box 1 xyxy [d, 0, 2 + d, 2] against [4, 0, 6, 2]: v stays 0 and
    # CIoU(d) = -(4 - d)² / ((6 - d)² + 4); its derivative at d = 0 is 0.08.
    # Widening box 1 by dw (centre fixed) widens the enclosing box by dw / 2:
    # dCIoU/dw = rho² / c⁴ * d(c²)/dw = 16 / 1600 * 6 = 0.06.
    box1 = tf.Variable([[1.0, 1.0, 2.0, 2.0]])
    with tf.GradientTape() as tape:
        value = complete_iou(box1, [[5.0, 1.0, 2.0, 2.0]])
    grad = tape.gradient(value, box1).numpy()[0]
    np.testing.assert_allclose(grad[:3], [0.08, 0.0, 0.06], atol=1e-6)


def test_alpha_is_a_constant_for_the_gradient():
    # Nested case with box 1 of width w around the 2x2 box 2: IoU = 2 / w and
    # v = K (pi/4 - atan(w/2))². With alpha held constant,
    # dCIoU/dw = -2 / w² - alpha * dv/dw; at w = 4 this is the value below.
    w = 4.0
    v = K * (math.pi / 4 - math.atan(w / 2)) ** 2
    alpha = v / (1.0 - 2.0 / w + v)
    dv_dw = 2 * K * (math.pi / 4 - math.atan(w / 2)) * -(0.5 / (1 + (w / 2) ** 2))
    expected = -2.0 / w**2 - alpha * dv_dw
    box1 = tf.Variable([[2.0, 1.0, w, 2.0]])
    with tf.GradientTape() as tape:
        value = complete_iou(box1, [[2.0, 1.0, 2.0, 2.0]])
    grad = tape.gradient(value, box1).numpy()[0]
    assert grad[2] == pytest.approx(expected, abs=1e-6)


def test_graph_gradient_stays_finite_for_a_collapsed_prediction():
    """A prediction whose height rounds to ~0 (sigmoid of a very negative logit)
    once gave NaN gradients inside tf.function (not eagerly)."""
    import tensorflow as tf

    raw = tf.constant([[0.679799, 3.9910297, -7.3529, -9.046487]], tf.float32)
    anchor = tf.constant([[1.5, 2.0]])
    target = tf.constant([[0.4544406, 0.70355797, 2.9088812, 2.592884]])

    def gradient(raw):
        with tf.GradientTape() as tape:
            tape.watch(raw)
            xy = tf.sigmoid(raw[:, :2]) * 2.0 - 0.5
            wh = (tf.sigmoid(raw[:, 2:]) * 2.0) ** 2 * anchor
            loss = tf.reduce_sum(1.0 - complete_iou(tf.concat([xy, wh], -1), target))
        return tape.gradient(loss, raw)

    eager, graph = gradient(raw).numpy(), tf.function(gradient)(raw).numpy()
    assert np.isfinite(graph).all(), graph
    np.testing.assert_allclose(graph[:, :2], eager[:, :2], rtol=1e-3)
