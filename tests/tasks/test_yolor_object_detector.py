"""The Task contract of `YOLORObjectDetector`: heads, compile defaults, detect, presets."""

import keras
import numpy as np
import pytest

from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import non_max_suppression
from yolor_keras.losses import MultiLabelBinaryCrossentropy
from yolor_keras.losses import YOLORLoss
from yolor_keras.models import ClassificationHead
from yolor_keras.models import DetectionHead
from yolor_keras.models import EmbeddingHead
from yolor_keras.models import YOLORBackbone
from yolor_keras.models import decode_predictions
from yolor_keras.tasks import YOLORObjectDetector

TINY = {"width_multiplier": 0.125, "depth_multiplier": 0.33}
IMAGES = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
LABELS = {
    "boxes": np.array([[[4.0, 6.0, 30.0, 40.0]], [[20.0, 10.0, 60.0, 50.0]]], "float32"),
    "classes": np.array([[1], [2]], "int32"),
}


@pytest.fixture(scope="module")
def task():
    keras.utils.set_random_seed(1)
    backbone = YOLORBackbone.from_preset("yolor_p6", **TINY)
    return YOLORObjectDetector(backbone, heads=[DetectionHead(3)], class_names=["a", "b", "c"])


def test_hand_built_task_trains_at_the_official_gradient_scale(task):
    # The official loss is the batch mean times the batch size, summed over
    # the batches accumulated to the nominal 64 images: 64 x the mean.
    task.compile(optimizer="sgd")
    raw = task(IMAGES)
    by_hand = YOLORLoss(task.anchors, task.strides, 3)(LABELS, raw)
    value = task.compute_loss(y=LABELS, y_pred=raw)
    np.testing.assert_allclose(float(value), 64.0 * float(by_hand), rtol=1e-6)
    assert task.loss_settings["loss_scale"] == 64.0
    # Non-default settings reach the loss.
    task.compile(optimizer="sgd", box_gain=0.1, cls_gain=0.2, loss_scale=2.0)
    by_hand = YOLORLoss(task.anchors, task.strides, 3, box_gain=0.1, cls_gain=0.2)(LABELS, raw)
    np.testing.assert_allclose(
        float(task.compute_loss(y=LABELS, y_pred=raw)), 2 * float(by_hand), rtol=1e-6
    )


def test_fit_traces_its_train_step_once():
    # A variable created while the step is traced (the optimizer's, when it
    # is built on the first step) makes TensorFlow trace the step again.
    keras.utils.set_random_seed(2)
    backbone = YOLORBackbone.from_preset("yolor_p6", **TINY)
    fresh = YOLORObjectDetector(backbone, heads=[DetectionHead(3)], class_names=["a", "b", "c"])
    fresh.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9), loss_scale=2.0)
    assert fresh.optimizer.built
    traces = []
    train_step = fresh.train_step
    fresh.train_step = lambda data: (traces.append(1), train_step(data))[1]
    fresh.fit(IMAGES, LABELS, batch_size=1, epochs=2, verbose=0)
    assert len(traces) == 1
    assert int(fresh.optimizer.iterations) == 4


def test_training_without_compile_is_refused(task):
    fresh = YOLORObjectDetector.from_config(task.get_config())
    with pytest.raises(ValueError, match="compile"):
        fresh.compute_loss(y=LABELS, y_pred=fresh(IMAGES))


def test_predict_returns_final_detections_of_the_prediction_decoder(task):
    decoder = NonMaxSuppression(conf_threshold=0.0, iou_threshold=0.5, max_detections=7)
    model = YOLORObjectDetector(task.backbone, heads=task.heads, prediction_decoder=decoder)
    predicted = model.predict(IMAGES, verbose=0)
    # Independently: the decode formula and the NMS function on the raw outputs.
    decoded = decode_predictions(model(IMAGES), model.anchors, model.strides)
    expected = non_max_suppression(decoded, conf_threshold=0.0, iou_threshold=0.5, max_detections=7)
    assert set(predicted) == {"boxes", "scores", "classes", "num_detections"}
    for name in expected:
        np.testing.assert_allclose(
            predicted[name], np.asarray(expected[name]), rtol=1e-5, atol=1e-4
        )
    assert predicted["boxes"].shape == (2, 7, 4)
    # The decoder's settings survive the config.
    restored = YOLORObjectDetector.from_config(model.get_config())
    assert restored.prediction_decoder.get_config()["max_detections"] == 7


def test_presets_load_weights_on_backbone_and_task(task, tmp_path):
    folder = task.save_to_preset(tmp_path / "preset")
    loaded = YOLORObjectDetector.from_preset(folder)
    assert loaded.class_names == ["a", "b", "c"]
    for a, b in zip(task(IMAGES), loaded(IMAGES)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    backbone = YOLORBackbone.from_preset(folder)
    for level, value in task.backbone(IMAGES).items():
        np.testing.assert_array_equal(np.asarray(backbone(IMAGES)[level]), np.asarray(value))
    # A named preset is randomly initialised: its outputs differ.
    fresh = YOLORObjectDetector.from_preset("yolor_p6", num_classes=3, **TINY)
    assert not np.allclose(np.asarray(fresh(IMAGES)[0]), np.asarray(task(IMAGES)[0]))
    with pytest.raises(ValueError, match="not a preset folder"):
        YOLORObjectDetector.from_preset(tmp_path)


def test_more_heads_are_the_same_task(task):
    model = YOLORObjectDetector(
        task.backbone,
        heads=[
            EmbeddingHead(16, implicit="factorization"),
            DetectionHead(3),
            ClassificationHead(4),
        ],
    )
    assert model.head_names == ("detection", "classification", "embedding")
    outputs = model(IMAGES)
    assert sorted(outputs) == ["classification", "detection", "embedding"]
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(outputs["embedding"]), axis=-1), 1.0, rtol=1e-5
    )
    results = model.detect(IMAGES)
    np.testing.assert_allclose(
        results["label_probabilities"],
        1 / (1 + np.exp(-np.asarray(outputs["classification"]))),
        rtol=1e-5,
    )
    # One compile, one summed loss: detection + weight x classification (+ embedding).
    model.compile(
        optimizer="sgd", loss_scale=1.0, loss_weights={"classification": 0.5, "embedding": 0.0}
    )
    labels = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], "float32")
    targets = {"detection": LABELS, "classification": labels, "embedding": np.array([0, 0])}
    value = float(model.compute_loss(y=targets, y_pred=outputs))
    detection = float(YOLORLoss(model.anchors, model.strides, 3)(LABELS, outputs["detection"]))
    classification = float(MultiLabelBinaryCrossentropy()(labels, outputs["classification"]))
    np.testing.assert_allclose(value, detection + 0.5 * classification, rtol=1e-5)
    with pytest.raises(ValueError, match="'classification' entry"):
        model.compute_loss(y={"detection": LABELS}, y_pred=outputs)
    with pytest.raises(ValueError, match="more than once"):
        YOLORObjectDetector(task.backbone, heads=[DetectionHead(3), DetectionHead(4)])


def test_detect_output_names_list_what_detect_returns(task):
    assert task.detect_output_names() == ["boxes", "scores", "classes", "num_detections"]
    assert task.detect_output_names(nms=False) == ["predictions"]
    assert sorted(task.detect(IMAGES, nms=False)) == ["predictions"]
