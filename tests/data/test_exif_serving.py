"""A phone photo (stored turned, with an EXIF Orientation) is detected upright
by `detect`'s reader and by the SavedModel's bytes signature, identically."""

import io

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import match_rate
from deployment_helper import scene
from deployment_helper import tiny_detector
from PIL import Image
from PIL import ImageOps

from yolor_keras.export.saved_model import export_saved_model
from yolor_keras.inference import Predictor
from yolor_keras.inference import read_image

IMAGE_SIZE = 128


def _orientation_exif(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _phone_photo(tmp_path):
    displayed = scene(170, 70, seed=12)  # a tall photo ...
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # ... stored 170 wide
    jpeg = encode(stored, "JPEG", quality=95, exif=_orientation_exif(6))
    # Pillow's exif_transpose, the independent reference.
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB"))
    assert upright.shape == (170, 70, 3)
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg)
    return jpeg, upright, path


def test_detect_reads_the_photo_upright(tmp_path):
    jpeg, upright, path = _phone_photo(tmp_path)
    for source in (str(path), jpeg):
        pixels = read_image(source)
        assert pixels.shape == (170, 70, 3)
        assert np.abs(pixels.astype(int) - upright).mean() < 3.0


@pytest.mark.slow  # exports a model; test_exif.py checks the decoder in a SavedModel
def test_detect_and_serving_see_the_photo_upright(tmp_path):
    jpeg, upright, path = _phone_photo(tmp_path)

    detector = tiny_detector(image_size=IMAGE_SIZE)
    predictor = Predictor(detector, image_size=IMAGE_SIZE, max_detections=50)
    from_file, from_upright = predictor.predict([str(path), upright])
    assert len(from_file["boxes"]) > 0
    assert match_rate(from_upright, from_file) >= 0.8

    export_dir = tmp_path / "model" / "1"
    export_saved_model(detector, str(export_dir), image_size=IMAGE_SIZE, max_detections=50)
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant([jpeg])
    )
    count = int(served["num_detections"][0])
    # Serving gives (y1, x1, y2, x2) boxes, in the displayed image's pixels.
    boxes = served["detection_boxes"][0, :count].numpy()[:, [1, 0, 3, 2]]
    np.testing.assert_allclose(boxes, from_file["boxes"], atol=0.05)
    np.testing.assert_allclose(
        served["detection_scores"][0, :count].numpy(), from_file["scores"], atol=1e-4
    )
