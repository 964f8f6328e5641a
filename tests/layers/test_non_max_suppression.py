"""Tests of NMS and letterbox mapping against hand-computed and NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data.letterbox_ops import boxes_to_original
from yolor_keras.layers import non_max_suppression


def make_decoded(rows, num_classes):
    """One image of decoded predictions from `(cx, cy, w, h, obj, cls...)` rows."""
    decoded = np.asarray(rows, np.float32).reshape(1, -1, 5 + num_classes)
    return decoded


def reference_nms(decoded, conf, iou_threshold, max_det, multi_label, agnostic, max_candidates):
    """Independent greedy NMS in float64, one image, per class by explicit grouping."""
    boxes = np.concatenate(
        [decoded[:, :2] - decoded[:, 2:4] / 2, decoded[:, :2] + decoded[:, 2:4] / 2], axis=1
    ).astype(np.float64)
    scores = decoded[:, 5:].astype(np.float64) * decoded[:, 4:5]
    if multi_label:
        box_index, classes = np.nonzero(scores > -1)  # every pair; filtered below
        pair_scores = scores[box_index, classes]
    else:
        box_index = np.arange(len(boxes))
        classes = scores.argmax(1)
        pair_scores = scores.max(1)
    order = np.argsort(-pair_scores, kind="stable")[:max_candidates]
    order = order[pair_scores[order] > conf]

    def iou(a, b):
        width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = width * height
        area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    kept = []
    for candidate in order:
        same_group = [k for k in kept if agnostic or classes[k] == classes[candidate]]
        if all(
            iou(boxes[box_index[candidate]], boxes[box_index[k]]) <= iou_threshold
            for k in same_group
        ):
            kept.append(candidate)
        if len(kept) == max_det:
            break
    return boxes[box_index[kept]], pair_scores[kept], classes[kept]


def test_hand_computed_classwise_nms_and_padding():
    rows = [
        # A: class 0, score 0.9 * 0.9 = 0.81, box (30, 30, 70, 70).
        [50, 50, 40, 40, 0.9, 0.9, 0.1],
        # B: class 0, score 0.72, shifted 4 px: IoU with A = 1440 / 1760 > 0.45.
        [54, 50, 40, 40, 0.8, 0.9, 0.2],
        # C: class 1, score 0.63, overlaps A but is another class.
        [52, 50, 40, 40, 0.7, 0.1, 0.9],
        # D: score 0.2, below the threshold.
        [200, 200, 20, 20, 0.5, 0.4, 0.1],
        # E: score exactly 0.25 is not *above* the threshold.
        [300, 300, 10, 10, 0.5, 0.5, 0.0],
    ]
    out = non_max_suppression(
        make_decoded(rows, 2), conf_threshold=0.25, iou_threshold=0.45, max_detections=4
    )

    assert out["num_detections"].numpy().tolist() == [2]
    np.testing.assert_allclose(
        out["boxes"].numpy()[0],
        [[30, 30, 70, 70], [32, 30, 72, 70], [0, 0, 0, 0], [0, 0, 0, 0]],
    )
    np.testing.assert_allclose(out["scores"].numpy()[0], [0.81, 0.63, 0, 0], rtol=1e-6)
    assert out["classes"].numpy()[0].tolist() == [0, 1, -1, -1]
    assert out["classes"].dtype == tf.int32 and out["num_detections"].dtype == tf.int32

    # Without classes, A (IoU 1520 / 1680 with C) also suppresses C.
    agnostic = non_max_suppression(
        make_decoded(rows, 2),
        conf_threshold=0.25,
        iou_threshold=0.45,
        max_detections=4,
        class_agnostic=True,
    )
    assert agnostic["num_detections"].numpy().tolist() == [1]
    assert agnostic["classes"].numpy()[0].tolist() == [0, -1, -1, -1]


def test_multi_label_keeps_every_class_above_threshold():
    rows = [[100, 100, 50, 50, 1.0, 0.8, 0.7, 0.1]]
    multi = non_max_suppression(
        make_decoded(rows, 3), conf_threshold=0.25, max_detections=3, multi_label=True
    )
    assert multi["num_detections"].numpy().tolist() == [2]
    assert multi["classes"].numpy()[0].tolist() == [0, 1, -1]
    np.testing.assert_allclose(multi["scores"].numpy()[0], [0.8, 0.7, 0.0], rtol=1e-6)
    np.testing.assert_allclose(multi["boxes"].numpy()[0, :2], [[75, 75, 125, 125]] * 2)

    single = non_max_suppression(make_decoded(rows, 3), conf_threshold=0.25, max_detections=3)
    assert single["num_detections"].numpy().tolist() == [1]
    assert single["classes"].numpy()[0].tolist() == [0, -1, -1]


def test_iou_exactly_at_threshold_is_not_suppressed():
    # Boxes (0, 0, 2, 1) and (0, 0, 1, 1): IoU is exactly 0.5. As in torchvision's
    # NMS (used by the official code) only IoU *above* the threshold suppresses.
    rows = [[1.0, 0.5, 2.0, 1.0, 1.0, 0.9], [0.5, 0.5, 1.0, 1.0, 1.0, 0.8]]
    at = non_max_suppression(make_decoded(rows, 1), conf_threshold=0.1, iou_threshold=0.5)
    below = non_max_suppression(make_decoded(rows, 1), conf_threshold=0.1, iou_threshold=0.49)
    assert at["num_detections"].numpy().tolist() == [2]
    assert below["num_detections"].numpy().tolist() == [1]


def test_max_detections_keeps_the_best_and_empty_images_are_all_padding():
    scores = [0.3, 0.9, 0.5, 0.7, 0.6]
    rows = [[40 * i + 10, 10, 10, 10, 1.0, s] for i, s in enumerate(scores)]
    dead = [[40 * i + 10, 10, 10, 10, 0.01, s] for i, s in enumerate(scores)]
    decoded = np.concatenate([make_decoded(rows, 1), make_decoded(dead, 1)], axis=0)

    out = non_max_suppression(decoded, conf_threshold=0.25, max_detections=3)
    assert out["num_detections"].numpy().tolist() == [3, 0]
    np.testing.assert_allclose(out["scores"].numpy(), [[0.9, 0.7, 0.6], [0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(out["boxes"].numpy()[0, :, 0], [45, 125, 165])
    assert np.all(out["boxes"].numpy()[1] == 0)
    assert out["classes"].numpy()[1].tolist() == [-1, -1, -1]

    nothing = non_max_suppression(
        decoded[1:], conf_threshold=0.25, max_detections=3, multi_label=True
    )
    assert nothing["num_detections"].numpy().tolist() == [0]
    assert np.all(nothing["boxes"].numpy() == 0) and np.all(nothing["scores"].numpy() == 0)
    assert nothing["classes"].numpy().tolist() == [[-1, -1, -1]]


def test_images_of_a_batch_do_not_suppress_each_other_and_shapes_are_static():
    box = [50, 50, 20, 20, 0.9, 0.9]
    weaker = [50, 50, 20, 20, 0.5, 0.9]
    decoded = np.concatenate([make_decoded([box, weaker], 1), make_decoded([weaker, weaker], 1)], 0)
    nms = tf.function(
        lambda x: non_max_suppression(x, conf_threshold=0.25, max_detections=7),
        input_signature=[tf.TensorSpec([None, None, 6], tf.float32)],
    )
    shapes = {
        k: v.shape.as_list() for k, v in nms.get_concrete_function().structured_outputs.items()
    }
    assert shapes == {
        "boxes": [None, 7, 4],
        "scores": [None, 7],
        "classes": [None, 7],
        "num_detections": [None],
    }

    out = nms(decoded)
    assert out["num_detections"].numpy().tolist() == [1, 1]
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], [0.81, 0.45], rtol=1e-6)


@pytest.mark.parametrize(
    "multi_label, agnostic, max_candidates",
    [(False, False, 30000), (True, False, 30000), (False, True, 30000), (True, False, 40)],
)
def test_matches_numpy_greedy_reference_on_random_predictions(
    multi_label, agnostic, max_candidates
):
    rng = np.random.default_rng(7)
    batch, num_boxes, num_classes = 2, 300, 4
    # Boxes clustered in a 200 px square so that many overlap.
    centers = rng.uniform(20, 220, (batch, num_boxes, 2))
    sizes = rng.uniform(8, 60, (batch, num_boxes, 2))
    objectness = rng.uniform(0, 1, (batch, num_boxes, 1))
    class_scores = rng.uniform(0, 1, (batch, num_boxes, num_classes))
    decoded = np.concatenate([centers, sizes, objectness, class_scores], -1).astype(np.float32)
    settings = dict(conf_threshold=0.1, iou_threshold=0.5, max_detections=300)

    out = non_max_suppression(
        decoded,
        **settings,
        multi_label=multi_label,
        class_agnostic=agnostic,
        max_candidates=max_candidates,
    )
    for image in range(batch):
        boxes, scores, classes = reference_nms(
            decoded[image], 0.1, 0.5, 300, multi_label, agnostic, max_candidates
        )
        count = int(out["num_detections"][image])
        assert count == len(scores) > 0
        np.testing.assert_allclose(out["boxes"].numpy()[image, :count], boxes, atol=1e-4)
        np.testing.assert_allclose(out["scores"].numpy()[image, :count], scores, rtol=1e-5)
        assert out["classes"].numpy()[image, :count].tolist() == classes.tolist()


def test_converts_to_tflite_builtin_ops_and_matches():
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(3)
    decoded = rng.uniform(0, 1, (2, 200, 8)).astype(np.float32)
    decoded[..., :2] *= 160
    decoded[..., 2:4] *= 40
    nms = tf.function(
        lambda x: non_max_suppression(
            x, conf_threshold=0.05, iou_threshold=0.5, max_detections=25, multi_label=True
        ),
        input_signature=[tf.TensorSpec([2, 200, 8], tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([nms.get_concrete_function()], nms)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no select-TF ops
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], decoded)
    interpreter.invoke()

    expected = nms(decoded)
    # Outputs come back in the order of the dict's sorted keys.
    outputs = sorted(interpreter.get_output_details(), key=lambda detail: detail["name"])
    for key, detail in zip(sorted(expected), outputs):
        np.testing.assert_allclose(
            interpreter.get_tensor(detail["index"]), expected[key].numpy(), err_msg=key
        )
    assert int(expected["num_detections"][0]) > 0


def test_converts_to_onnx_and_matches():
    import onnxruntime
    import tf2onnx

    rng = np.random.default_rng(4)
    decoded = rng.uniform(0, 1, (3, 200, 7)).astype(np.float32)
    decoded[..., :2] *= 160
    decoded[..., 2:4] *= 40
    signature = [tf.TensorSpec([None, 200, 7], tf.float32, name="decoded")]
    nms = tf.function(
        lambda x: non_max_suppression(x, conf_threshold=0.05, max_detections=25),
        input_signature=signature,
    )
    model, _ = tf2onnx.convert.from_function(nms, input_signature=signature, opset=17)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    names = [output.name for output in session.get_outputs()]
    results = dict(zip(names, session.run(None, {"decoded": decoded})))

    expected = nms(decoded)
    assert sorted(results) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(results[key], value.numpy(), err_msg=key)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="decoded"):
        non_max_suppression(np.zeros((5, 6), np.float32))
    with pytest.raises(ValueError, match="decoded"):
        non_max_suppression(np.zeros((1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="conf_threshold"):
        non_max_suppression(np.zeros((1, 5, 6), np.float32), conf_threshold=25)
    with pytest.raises(ValueError, match="max_detections"):
        non_max_suppression(np.zeros((1, 5, 6), np.float32), max_detections=0)


def test_letterbox_mapping_inverts_the_letterbox_and_clips():
    # A 600x300 (w x h) image letterboxed to 640x640: scale 640/600, the
    # resized height 320 is centred with 160 px on top.
    scale = 640 / 600
    pad = (0.0, 160.0)
    original_box = np.array([60.0, 30.0, 300.0, 150.0])
    letterboxed = original_box * scale + np.array([0, 160, 0, 160])
    spill = np.array([-10.0, 100.0, 700.0, 500.0])  # reaches into the padding
    boxes = np.stack([letterboxed, spill, np.zeros(4)])

    mapped = boxes_to_original(boxes, scale, pad, (300, 600)).numpy()
    np.testing.assert_allclose(mapped[0], original_box, rtol=1e-5)
    np.testing.assert_allclose(mapped[1], [0, 0, 600, 300])  # y2 = 340 / scale = 318.75, clipped
    np.testing.assert_allclose(mapped[2], [0, 0, 0, 0])


def test_letterbox_mapping_uses_per_image_parameters_in_a_batch():
    boxes = np.array([[[10.0, 20.0, 30.0, 40.0]], [[10.0, 20.0, 30.0, 40.0]]])
    mapped = boxes_to_original(
        boxes, scale=[1.0, 0.5], pad=[[0.0, 0.0], [4.0, 10.0]], original_size=[[100, 100], [60, 50]]
    ).numpy()
    np.testing.assert_allclose(mapped[0, 0], [10, 20, 30, 40])
    # ((10 - 4) / 0.5, (20 - 10) / 0.5, (30 - 4) / 0.5, (40 - 10) / 0.5) = (12, 20, 52, 60),
    # and x2 is clipped to the width 50.
    np.testing.assert_allclose(mapped[1, 0], [12, 20, 50, 60])

    with pytest.raises(ValueError, match="pad"):
        boxes_to_original(boxes, 1.0, [1.0, 2.0, 3.0], (10, 10))
    with pytest.raises(ValueError, match="boxes"):
        boxes_to_original(np.zeros((2, 5)), 1.0, (0, 0), (10, 10))


def test_layer_applies_its_settings_and_round_trips_its_config():
    from yolor_keras.layers import NonMaxSuppression

    rng = np.random.default_rng(4)
    decoded = np.concatenate(
        [rng.uniform(20, 100, (2, 50, 4)), rng.uniform(0, 1, (2, 50, 4))], axis=-1
    ).astype("float32")
    layer = NonMaxSuppression(
        conf_threshold=0.1, iou_threshold=0.5, max_detections=7, multi_label=True
    )
    expected = non_max_suppression(
        decoded, conf_threshold=0.1, iou_threshold=0.5, max_detections=7, multi_label=True
    )
    restored = NonMaxSuppression.from_config(layer.get_config())
    for candidate in (layer, restored):
        got = candidate(decoded)
        for name in ("boxes", "scores", "classes", "num_detections"):
            np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())
    assert got["boxes"].shape == (2, 7, 4)
    with pytest.raises(ValueError, match="iou_threshold"):
        NonMaxSuppression(iou_threshold=1.5)
