"""Tests of `read_image` and the end-to-end `Predictor`: its letterbox, `task.detect`
and the mapping back, against the public pieces and the letterbox geometry by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.inference import Predictor
from yolor_keras.inference import read_image
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import YOLORImageConverter
from yolor_keras.layers import non_max_suppression
from yolor_keras.models import ClassificationHead
from yolor_keras.models import DetectionHead
from yolor_keras.models import EmbeddingHead
from yolor_keras.models import decode_predictions
from yolor_keras.tasks import YOLORObjectDetector

IMAGE_SIZE = 128


def rebuilt(task, **changes):
    """A copy of `task` with some constructor arguments changed, same weights."""
    config = {**task.get_config(), **changes}
    for key in ("preprocessor", "prediction_decoder"):
        if isinstance(config[key], keras.layers.Layer):
            config[key] = keras.saving.serialize_keras_object(config[key])
    copy = type(task).from_config(config)
    copy.set_weights(task.get_weights())
    return copy


def hand_mapping(boxes, height, width, side=IMAGE_SIZE):
    """Letterboxed boxes -> original pixels by the official geometry, by hand.

    r = min(S / h, S / w); the image is resized to round(side * r) and
    centred, the odd padding pixel at the bottom / right; each axis is
    scaled back by the factor its pixels were resampled by.
    """
    ratio = min(side / height, side / width)
    new_h, new_w = round(height * ratio), round(width * ratio)
    pad = np.array([(side - new_w) // 2, (side - new_h) // 2] * 2, np.float32)
    scale = np.array([new_w / width, new_h / height] * 2, np.float32)
    return np.clip((np.asarray(boxes) - pad) / scale, 0, [width, height, width, height])


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def predictor(detector):
    return Predictor(detector, image_size=IMAGE_SIZE, class_names=["a", "b", "c"])


def test_letterbox_geometry_by_hand(predictor):
    # 100 x 200 into 128: scale 0.64 -> 64 x 128, padded 32 rows top and bottom.
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :] = (10, 200, 30)
    image[20:40, 50:100] = 255  # a white block
    letterboxed, scale, pad = predictor.letterbox(image)
    assert letterboxed.shape == (128, 128, 3)
    np.testing.assert_allclose(scale, [0.64, 0.64], rtol=1e-6)
    np.testing.assert_array_equal(pad, [0, 32])
    np.testing.assert_allclose(letterboxed[:32], 114 / 255, atol=1e-7)
    np.testing.assert_allclose(letterboxed[96:], 114 / 255, atol=1e-7)
    np.testing.assert_allclose(letterboxed[60, 5], np.array([10, 200, 30]) / 255, atol=1e-7)
    # The block's interior lands at original * scale + pad.
    y1, x1, y2, x2 = 20 * 0.64 + 32, 50 * 0.64, 40 * 0.64 + 32, 100 * 0.64
    inside = letterboxed[int(y1) + 2 : int(y2) - 1, int(x1) + 2 : int(x2) - 1]
    np.testing.assert_allclose(inside, 1.0)
    assert letterboxed[int(y1) - 2, int(x1) + 5, 0] < 0.1
    assert letterboxed[int(y2) + 2, int(x1) + 5, 0] < 0.1


def test_letterbox_scales_small_images_up_and_centres_them(predictor):
    # 64 x 32 into 128: scale 2 -> 128 x 64, 32 columns of padding each side.
    letterboxed, scale, pad = predictor.letterbox(np.full((64, 32, 3), 7, np.uint8))
    np.testing.assert_array_equal(scale, [2.0, 2.0])
    np.testing.assert_array_equal(pad, [32, 0])
    np.testing.assert_allclose(letterboxed[:, 32:96], 7 / 255, atol=1e-7)
    np.testing.assert_allclose(letterboxed[:, :32], 114 / 255, atol=1e-7)
    np.testing.assert_allclose(letterboxed[:, 96:], 114 / 255, atol=1e-7)


def test_read_image_decodes_every_input_kind_alike(tmp_path):
    image = scene(37, 53, seed=3)
    path = tmp_path / "scene.png"
    path.write_bytes(encode(image))
    np.testing.assert_array_equal(read_image(str(path)), image)
    np.testing.assert_array_equal(read_image(encode(image)), image)
    np.testing.assert_array_equal(read_image(image), image)


def test_read_image_errors_name_the_image(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(str(broken))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match=r"images\[1\].*\(height, width, 3\) uint8"):
        read_image(np.zeros((4, 4), np.uint8), name="images[1]")


def test_predict_matches_decode_nms_and_hand_mapping(detector, predictor):
    image = scene(90, 150, seed=11)
    [result] = predictor.predict([image])
    assert len(result["scores"]) > 0

    # Independent path: the raw network, the public decode and NMS, and the
    # letterbox inverse by hand (90 x 150 -> 77 x 128, 25 rows on top).
    inputs = YOLORImageConverter(IMAGE_SIZE)(image)[0][None]
    decoded = decode_predictions(detector(inputs), detector.anchors, detector.strides)
    expected = non_max_suppression(decoded, 0.25, 0.45, 300)
    count = int(expected["num_detections"][0])
    boxes = hand_mapping(expected["boxes"][0, :count].numpy(), 90, 150)

    np.testing.assert_allclose(result["boxes"], boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(result["scores"], expected["scores"][0, :count].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(result["classes"], expected["classes"][0, :count].numpy())
    assert result["class_names"] == [["a", "b", "c"][c] for c in result["classes"]]
    assert np.all(result["scores"] > 0.25) and np.all(np.diff(result["scores"]) <= 0)


def test_batches_do_not_change_results_or_retrace(predictor):
    images = [scene(90, 150, seed=11), scene(150, 60, seed=12), scene(128, 128, seed=13)]
    together = predictor.predict(images)
    alone = [predictor.predict([image])[0] for image in images]
    for batched, single in zip(together, alone):
        np.testing.assert_allclose(batched["boxes"], single["boxes"], rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(batched["classes"], single["classes"])
    # One trace serves every batch size and every original image size.
    assert predictor.detect_letterboxed.experimental_get_tracing_count() == 1


def test_paths_bytes_and_arrays_give_the_same_detections(predictor, tmp_path):
    image = scene(90, 150, seed=11)
    path = tmp_path / "scene.png"
    path.write_bytes(encode(image))
    from_path, from_bytes, from_array = predictor.predict([str(path), encode(image), image])
    for other in (from_bytes, from_array):
        np.testing.assert_array_equal(from_path["boxes"], other["boxes"])
        np.testing.assert_array_equal(from_path["scores"], other["scores"])


def test_boxes_stay_inside_their_image(predictor):
    for seed, (height, width) in enumerate([(40, 200), (200, 40), (300, 310)]):
        [result] = predictor.predict([scene(height, width, seed=seed)])
        boxes = result["boxes"]
        assert np.all(boxes >= 0)
        assert np.all(boxes[:, [0, 2]] <= width) and np.all(boxes[:, [1, 3]] <= height)
        assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])


def test_bad_settings_are_refused_with_clear_errors(detector):
    with pytest.raises(
        ValueError, match="multiple of the detector's largest stride 64.*128 and 192"
    ):
        Predictor(detector, image_size=130)
    with pytest.raises(ValueError, match="2 names but the detector predicts 3"):
        Predictor(detector, image_size=IMAGE_SIZE, class_names=["x", "y"])
    with pytest.raises(ValueError, match="conf_threshold"):
        Predictor(detector, image_size=IMAGE_SIZE, conf_threshold=1.5)
    with pytest.raises(ValueError, match="lacks the detector attribute"):
        Predictor(tf.keras.Sequential([tf.keras.layers.Dense(1)]), image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="max_detections"):
        Predictor(detector, image_size=IMAGE_SIZE, max_detections=0)


def test_nms_settings_come_from_the_task_unless_given(detector, predictor):
    image = scene(90, 150, seed=11)
    [reference] = predictor.predict([image])  # the task's decoder: 0.25, 0.45, 300
    assert len(reference["scores"]) > 6
    # Halfway between two scores of the default run, so no score sits on it.
    conf = float(reference["scores"][4] + reference["scores"][5]) / 2
    strict = NonMaxSuppression(conf_threshold=conf, iou_threshold=0.45, max_detections=3)
    task = rebuilt(detector, prediction_decoder=strict)
    [from_task] = Predictor(task, image_size=IMAGE_SIZE).predict([image])
    [from_arguments] = Predictor(
        detector, image_size=IMAGE_SIZE, conf_threshold=conf, max_detections=3
    ).predict([image])
    # The stricter settings keep the best 3 detections of the default run
    # (greedy NMS visits boxes by score, so the first ones are the same).
    expected = {key: reference[key][:3] for key in ("boxes", "scores", "classes")}
    for result in (from_task, from_arguments):
        np.testing.assert_allclose(result["boxes"], expected["boxes"], atol=1e-4)
        np.testing.assert_allclose(result["scores"], expected["scores"], rtol=1e-6)
        np.testing.assert_array_equal(result["classes"], expected["classes"])


def test_the_tasks_preprocessor_letterboxes_and_maps_back(detector):
    # A black-padding converter at 192: the predictor takes its size and pad.
    task = rebuilt(detector, preprocessor=YOLORImageConverter(192, pad_value=0))
    predictor = Predictor(task)
    assert predictor.image_size == 192
    image = scene(90, 150, seed=11)
    letterboxed, _, pad = predictor.letterbox(image)
    np.testing.assert_array_equal(pad, [0, 38])  # 90 x 150 -> 115 x 192: (192 - 115) // 2
    assert np.all(letterboxed[:38] == 0) and np.all(letterboxed[-39:] == 0)
    [result] = predictor.predict([image])
    # The boxes in input pixels of the same compiled `task.detect`, mapped
    # back by hand (a random network has near-tied scores, whose order
    # eager and graph runs need not share).
    detected = predictor.detect_letterboxed(letterboxed[None])
    count = int(detected["num_detections"][0])
    assert count > 0
    boxes = hand_mapping(detected["boxes"][0, :count].numpy(), 90, 150, side=192)
    np.testing.assert_allclose(result["boxes"], boxes, rtol=1e-5, atol=1e-3)
    # An explicit size keeps the task's letterbox settings (black padding).
    letterboxed = Predictor(task, image_size=IMAGE_SIZE).letterbox(image)[0]
    assert letterboxed.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and np.all(letterboxed[:12] == 0)


@pytest.fixture(scope="module")
def multi_head_task():
    keras.utils.set_random_seed(1)
    return YOLORObjectDetector.from_preset(
        "yolor_p6",
        width_multiplier=0.125,
        depth_multiplier=0.33,
        heads=[
            DetectionHead(3),
            ClassificationHead(4, hidden_units=16),
            EmbeddingHead(8, hidden_units=16),
        ],
    )


def test_multi_head_results_carry_label_probabilities_and_embeddings(multi_head_task):
    predictor = Predictor(multi_head_task, image_size=IMAGE_SIZE, conf_threshold=0.001)
    images = [scene(90, 150, seed=11), scene(128, 128, seed=13)]
    results = predictor.predict(images)
    assert predictor.detect_letterboxed.experimental_get_tracing_count() == 1
    for image, result in zip(images, results):
        inputs = YOLORImageConverter(IMAGE_SIZE)(image)[0][None]
        raw = multi_head_task(inputs, training=False)
        # Independent: the raw logits through a NumPy sigmoid; the embedding as is.
        logits = np.asarray(raw["classification"], np.float64)[0]
        np.testing.assert_allclose(
            result["label_probabilities"], 1 / (1 + np.exp(-logits)), rtol=1e-5
        )
        np.testing.assert_allclose(
            result["embedding"], np.asarray(raw["embedding"])[0], rtol=1e-5, atol=1e-6
        )
        assert result["label_probabilities"].shape == (4,) and result["embedding"].shape == (8,)
        # The detections are those of the public decode and NMS on the raw
        # outputs; a random network has near-tied scores, whose order eager
        # and graph runs need not share, so the scores are compared sorted.
        decoded = decode_predictions(
            raw["detection"], multi_head_task.anchors, multi_head_task.strides
        )
        expected = non_max_suppression(decoded, 0.001, 0.45, 300)
        count = int(expected["num_detections"][0])
        assert count > 0 and len(result["scores"]) == count
        np.testing.assert_allclose(
            np.sort(result["scores"]), np.sort(expected["scores"][0, :count]), rtol=1e-5
        )
        height, width = image.shape[:2]
        assert np.all(result["boxes"] >= 0) and np.all(result["boxes"] <= [width, height] * 2)
