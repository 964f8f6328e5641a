"""Tests of `letterbox`, `read_image` and the end-to-end `Predictor`."""

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.inference import Predictor
from yolor_keras.inference import letterbox
from yolor_keras.layers import non_max_suppression
from yolor_keras.inference import read_image
from yolor_keras.models import decode_predictions

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def predictor(detector):
    return Predictor(detector, image_size=IMAGE_SIZE, class_names=["a", "b", "c"])


def test_letterbox_geometry_by_hand():
    # 100 x 200 into 128: scale 0.64 -> 64 x 128, padded 32 rows top and bottom.
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :] = (10, 200, 30)
    image[20:40, 50:100] = 255  # a white block
    letterboxed, scale, pad = (value.numpy() for value in letterbox(image, 128))
    assert letterboxed.shape == (128, 128, 3)
    assert scale == pytest.approx(0.64)
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


def test_letterbox_scales_small_images_up_and_centres_them():
    letterboxed, scale, pad = letterbox(np.full((32, 16, 3), 7, np.uint8), 64)
    assert float(scale) == 2.0
    np.testing.assert_array_equal(pad.numpy(), [16, 0])
    np.testing.assert_allclose(letterboxed.numpy()[:, 16:48], 7 / 255, atol=1e-7)
    np.testing.assert_allclose(letterboxed.numpy()[:, :16], 114 / 255, atol=1e-7)


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

    # Independent path: the public pieces, and the letterbox inverse by hand.
    scale = min(IMAGE_SIZE / 90, IMAGE_SIZE / 150)
    new_h, new_w = round(90 * scale), round(150 * scale)
    pad = np.array([(IMAGE_SIZE - new_w) // 2, (IMAGE_SIZE - new_h) // 2], np.float32)
    inputs = letterbox(image, IMAGE_SIZE)[0][None]
    decoded = decode_predictions(detector(inputs), detector.anchors, detector.strides)
    expected = non_max_suppression(decoded, 0.25, 0.45, 300)
    count = int(expected["num_detections"][0])
    boxes = (expected["boxes"][0, :count].numpy() - np.tile(pad, 2)) / scale
    boxes = np.clip(boxes, 0, [150, 90, 150, 90])

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
    with pytest.raises(ValueError, match="multiple of the detector's largest stride 64.*128 and 192"):
        Predictor(detector, image_size=130)
    with pytest.raises(ValueError, match="2 names but the detector predicts 3"):
        Predictor(detector, image_size=IMAGE_SIZE, class_names=["x", "y"])
    with pytest.raises(ValueError, match="conf_threshold"):
        Predictor(detector, image_size=IMAGE_SIZE, conf_threshold=1.5)
    with pytest.raises(ValueError, match="lacks the detector attribute"):
        Predictor(tf.keras.Sequential([tf.keras.layers.Dense(1)]), image_size=IMAGE_SIZE)
