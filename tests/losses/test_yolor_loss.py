"""YOLORLoss: hand-computed cases, gradients, per-sample values and config."""

import math
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.losses import YOLORLoss

# A 64 x 64 input with three levels (grids 8, 4 and 2). Level 0's anchors are
# 1x1, 2x2 and 8x8 cells; the other levels' anchors are so large that no
# small box matches them, so everything happens on level 0.
STRIDES = [8, 16, 32]
ANCHORS = np.array(
    [
        [[8, 8], [16, 16], [64, 64]],
        [[400, 400], [500, 500], [600, 600]],
        [[800, 800], [900, 900], [1000, 1000]],
    ],
    "float32",
)
IMAGE = 64


def _raw(batch, num_classes, fill=0.0, strides=STRIDES, image=IMAGE):
    return [
        np.full((batch, image // s, image // s, 3, 5 + num_classes), fill, "float32")
        for s in strides
    ]


def _numpy(components):
    return {k: keras.ops.convert_to_numpy(v) for k, v in components.items()}


def _logit(p):
    return math.log(p / (1.0 - p))


@pytest.mark.parametrize("num_levels", [3, 4])
def test_all_padding_batch_has_only_objectness(num_levels):
    strides = [8, 16, 32, 64][:num_levels]
    anchors = np.tile(ANCHORS[:1], (num_levels, 1, 1))
    loss = YOLORLoss(anchors, strides, num_classes=3)
    labels = {"boxes": np.zeros((2, 5, 4), "float32"), "classes": np.full((2, 5), -1)}
    parts = _numpy(loss.compute_components(labels, _raw(2, 3, strides=strides, image=128)))
    # Every objectness logit is 0 with target 0: BCE = ln 2 everywhere, so a
    # sample's obj loss is ln 2 * sum(balance) * obj gain * 3 / nl (* 1.4 for 4).
    if num_levels == 3:
        expected = math.log(2) * (4.0 + 1.0 + 0.4) * 1.0
    else:
        expected = math.log(2) * (4.0 + 1.0 + 0.4 + 0.1) * 0.75 * 1.4
    np.testing.assert_allclose(parts["obj"], [expected, expected], rtol=1e-6)
    np.testing.assert_array_equal(parts["box"], [0.0, 0.0])
    np.testing.assert_array_equal(parts["cls"], [0.0, 0.0])
    np.testing.assert_allclose(parts["loss"], parts["obj"], rtol=1e-6)


def test_objectness_of_an_empty_sample_from_its_own_logits():
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=r.shape).astype("float32") for r in _raw(2, 2)]
    loss = YOLORLoss(ANCHORS, STRIDES, num_classes=2)
    labels = {"boxes": np.zeros((2, 1, 4), "float32"), "classes": np.full((2, 1), -1)}
    obj = keras.ops.convert_to_numpy(loss.compute_components(labels, raw)["obj"])
    for b in range(2):
        # BCE towards 0 is softplus(logit) = log(1 + e^logit).
        expected = sum(
            w * np.logaddexp(0.0, r[b, ..., 4].astype("float64")).mean()
            for w, r in zip([4.0, 1.0, 0.4], raw)
        )
        assert obj[b] == pytest.approx(expected, rel=1e-5)


def _perfect_prediction():
    """Raw outputs that decode exactly onto one target at all its six cells.

    The target (from the assignment test) has centre (2.625, 4.375) cells and
    size 2 x 1.5 cells, and is assigned to cells (row 4, col 2), (3, 2) and
    (4, 3) with the 1x1 and 2x2 anchors. Inverting the decode:
    sigmoid(tx) = (offset + 0.5) / 2 and sigmoid(tw) = sqrt(w / anchor) / 2.
    """
    raw = _raw(1, 3, fill=-30.0)  # no objects, no classes anywhere else
    for row, col, off_x, off_y in [
        (4, 2, 0.625, 0.375),
        (3, 2, 0.625, 1.375),
        (4, 3, -0.375, 0.375),
    ]:
        for anchor, size in [(0, 1.0), (1, 2.0)]:
            raw[0][0, row, col, anchor, 0] = _logit((off_x + 0.5) / 2)
            raw[0][0, row, col, anchor, 1] = _logit((off_y + 0.5) / 2)
            raw[0][0, row, col, anchor, 2] = _logit(math.sqrt(2.0 / size) / 2)
            raw[0][0, row, col, anchor, 3] = _logit(math.sqrt(1.5 / size) / 2)
            raw[0][0, row, col, anchor, 4] = 30.0
            raw[0][0, row, col, anchor, 5 + 1] = 30.0  # class 1
    labels = {"boxes": np.array([[[13, 29, 29, 41]]], "float32"), "classes": np.array([[1]])}
    return raw, labels


def test_perfect_prediction_costs_nothing():
    raw, labels = _perfect_prediction()
    parts = _numpy(YOLORLoss(ANCHORS, STRIDES, num_classes=3).compute_components(labels, raw))
    assert parts["box"][0] < 1e-6
    assert parts["obj"][0] < 1e-5
    assert parts["cls"][0] < 1e-10
    # Moving one assigned prediction off its target is noticed by every term.
    raw[0][0, 4, 2, 0, 0] += 1.0
    worse = _numpy(YOLORLoss(ANCHORS, STRIDES, num_classes=3).compute_components(labels, raw))
    assert worse["box"][0] > 1e-3
    assert worse["obj"][0] > parts["obj"][0]


def test_gradients_are_finite_and_reach_only_assigned_boxes():
    rng = np.random.default_rng(2)
    raw = [rng.normal(scale=3.0, size=r.shape).astype("float32") for r in _raw(2, 3)]
    raw[0][0, 0, 0, 0, :] = [60.0, -60.0, 60.0, -60.0, 80.0, -80.0, 50.0, 0.0]
    _, labels = _perfect_prediction()
    labels = {
        "boxes": np.concatenate([labels["boxes"], np.zeros((1, 1, 4), "float32")]),
        "classes": np.array([[1], [-1]]),
    }
    variables = [tf.Variable(r) for r in raw]
    with tf.GradientTape() as tape:
        value = YOLORLoss(ANCHORS, STRIDES, num_classes=3)(labels, variables)
    grads = [g.numpy() for g in tape.gradient(value, variables)]
    assert np.isfinite(value.numpy())
    assert all(np.isfinite(g).all() for g in grads)
    box_grad_cells = set(zip(*np.nonzero(np.abs(grads[0][..., :4]).sum(-1))))
    assert box_grad_cells == {(0, r, c, a) for r, c in [(4, 2), (3, 2), (4, 3)] for a in (0, 1)}
    assert all(not g[..., :4].any() for g in grads[1:])
    assert all(np.abs(g[..., 4]).min() > 0 for g in grads)  # objectness everywhere


def test_reductions_relate_to_the_per_sample_values():
    rng = np.random.default_rng(3)
    raw = [rng.normal(size=r.shape).astype("float32") for r in _raw(3, 3)]
    labels = {
        "boxes": np.array(
            [
                [[13, 29, 29, 41], [0, 0, 0, 0]],
                [[2, 0, 10, 6], [20, 20, 40, 30]],
                [[0, 0, 0, 0]] * 2,
            ],
            "float32",
        ),
        "classes": np.array([[1, -1], [0, 2], [-1, -1]]),
    }
    per_sample = _numpy(
        YOLORLoss(ANCHORS, STRIDES, 3, reduction=None).compute_components(labels, raw)
    )
    none = keras.ops.convert_to_numpy(YOLORLoss(ANCHORS, STRIDES, 3, reduction=None)(labels, raw))
    mean = float(YOLORLoss(ANCHORS, STRIDES, 3)(labels, raw))
    total = float(YOLORLoss(ANCHORS, STRIDES, 3, reduction="sum")(labels, raw))
    np.testing.assert_allclose(none, per_sample["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        per_sample["loss"], per_sample["box"] + per_sample["obj"] + per_sample["cls"], rtol=1e-6
    )
    assert mean == pytest.approx(none.mean(), rel=1e-6)
    assert total == pytest.approx(none.sum(), rel=1e-6)
    # The sample without targets has no box or class share.
    assert per_sample["box"][2] == 0.0 and per_sample["cls"][2] == 0.0
    # Objectness splits exactly by sample: sample 1 alone gives the same value.
    alone = _numpy(
        YOLORLoss(ANCHORS, STRIDES, 3).compute_components(
            {k: v[1:2] for k, v in labels.items()}, [r[1:2] for r in raw]
        )
    )
    assert alone["obj"][0] == pytest.approx(per_sample["obj"][1], rel=1e-6)


def test_single_class_has_no_class_loss():
    raw, labels = _perfect_prediction()
    raw = [r[..., :6] for r in raw]
    raw[0][..., 5] = 7.0
    parts = _numpy(
        YOLORLoss(ANCHORS, STRIDES, num_classes=1).compute_components(
            {"boxes": labels["boxes"], "classes": np.array([[0]])}, raw
        )
    )
    assert parts["cls"][0] == 0.0


def test_gains_are_scaled_as_the_official_code():
    three = YOLORLoss(ANCHORS, STRIDES, num_classes=20, box_gain=0.05, obj_gain=0.7, cls_gain=0.3)
    assert three.box_weight == pytest.approx(0.05)
    assert three.obj_weight == pytest.approx(0.7)
    assert three.cls_weight == pytest.approx(0.3 * 20 / 80)
    four = YOLORLoss(np.tile(ANCHORS[:1], (4, 1, 1)), [8, 16, 32, 64], num_classes=80)
    assert four.box_weight == pytest.approx(0.05 * 0.75)
    assert four.obj_weight == pytest.approx(1.0 * 0.75 * 1.4)
    assert four.cls_weight == pytest.approx(0.5 * 0.75)
    assert four.balance == [4.0, 1.0, 0.4, 0.1]


def test_xla_matches_eager():
    rng = np.random.default_rng(4)
    raw = [tf.constant(rng.normal(size=r.shape).astype("float32")) for r in _raw(2, 3)]
    labels = {
        "boxes": tf.constant(
            [[[13, 29, 29, 41], [2, 0, 10, 6]], [[20, 20, 40, 30], [0, 0, 0, 0]]], tf.float32
        ),
        "classes": tf.constant([[1, 0], [2, -1]], tf.int32),
    }
    loss = YOLORLoss(ANCHORS, STRIDES, 3)

    def value_and_grad(labels, raw):
        with tf.GradientTape() as tape:
            tape.watch(raw)
            value = loss(labels, raw)
        return value, tape.gradient(value, raw)

    eager_value, eager_grads = value_and_grad(labels, raw)
    xla_value, xla_grads = tf.function(value_and_grad, jit_compile=True)(labels, raw)
    assert float(xla_value) == pytest.approx(float(eager_value), rel=1e-5)
    for a, b in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_half_precision_outputs_are_scored_in_float32():
    rng = np.random.default_rng(5)
    raw = [rng.normal(size=r.shape).astype("float16") for r in _raw(1, 3)]
    labels = {"boxes": np.array([[[13, 29, 29, 41]]], "float32"), "classes": np.array([[1]])}
    loss = YOLORLoss(ANCHORS, STRIDES, 3)
    half = loss(labels, raw)
    full = loss(labels, [r.astype("float32") for r in raw])
    assert half.dtype == tf.float32
    assert float(half) == pytest.approx(float(full), rel=1e-6)


def test_config_round_trip():
    loss = YOLORLoss(
        ANCHORS,
        STRIDES,
        7,
        box_gain=0.1,
        anchor_t=3.0,
        balance=[2.0, 1.0, 0.5],
        label_smoothing=0.1,
        neighbor_rule="paper",
        reduction="sum",
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, YOLORLoss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_array_equal(restored.anchors, ANCHORS)
    rng = np.random.default_rng(6)
    raw = [rng.normal(size=r.shape).astype("float32") for r in _raw(1, 7)]
    labels = {"boxes": np.array([[[13, 29, 29, 41]]], "float32"), "classes": np.array([[5]])}
    assert float(restored(labels, raw)) == float(loss(labels, raw))


def test_from_detector_reads_its_attributes():
    detector = types.SimpleNamespace(anchors=ANCHORS, strides=STRIDES, num_classes=5)
    loss = YOLORLoss.from_detector(detector, obj_gain=0.7)
    assert loss.num_classes == 5 and loss.strides == STRIDES and loss.obj_gain == 0.7
    np.testing.assert_array_equal(loss.anchors, ANCHORS)


@pytest.mark.parametrize(
    "labels, raw, message",
    [
        ({"boxes": np.zeros((1, 1, 4))}, _raw(1, 3), "'classes'"),
        ((np.zeros((1, 1, 4)), np.zeros((1, 1))), _raw(1, 3), "must be a dict"),
        (
            {"boxes": np.zeros((1, 4)), "classes": np.zeros((1, 1))},
            _raw(1, 3),
            r"y_true\['boxes'\]",
        ),
        (None, _raw(1, 3)[:2], "list of 3"),
        (None, _raw(1, 4), r"y_pred\[0\] \(stride 8\)"),
        (None, _raw(1, 3, strides=[8, 8, 32]), "do not match `strides`"),
    ],
)
def test_bad_inputs_are_named(labels, raw, message):
    labels = labels or {"boxes": np.zeros((1, 1, 4)), "classes": np.zeros((1, 1))}
    loss = YOLORLoss(ANCHORS, STRIDES, 3)
    with pytest.raises(ValueError, match=message):
        loss(labels, raw)
    with pytest.raises(ValueError, match=message):
        loss.compute_components(labels, raw)


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="strides"):
        YOLORLoss(ANCHORS, [8, 16], 3)
    with pytest.raises(ValueError, match="balance"):
        YOLORLoss(ANCHORS, STRIDES, 3, balance=[1.0])
    with pytest.raises(ValueError, match="anchors"):
        YOLORLoss(ANCHORS[..., :1], STRIDES, 3)
