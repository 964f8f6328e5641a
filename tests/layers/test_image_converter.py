"""`YOLORImageConverter` and the one letterbox, against hand-computed geometry and the official formulas."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from yolor_keras.data import PAD_VALUE
from yolor_keras.data import boxes_to_original
from yolor_keras.data import letterbox
from yolor_keras.layers import YOLORImageConverter

GREY = 114 / 255  # the official padding, written out independently


def official_geometry(height, width, side):
    """The official `letterbox` geometry (utils/datasets.py), in float64 Python.

    r = min(S/h, S/w); new_unpad = round(w r), round(h r); the padding is
    halved and split with round(d - 0.1) / round(d + 0.1).
    """
    ratio = min(side / height, side / width)
    new_width, new_height = int(round(width * ratio)), int(round(height * ratio))
    dw, dh = (side - new_width) / 2, (side - new_height) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return new_height, new_width, top, bottom, left, right


def content_box(letterboxed):
    """(top, bottom, left, right) of the non-grey region, measured from pixels."""
    content = (np.abs(letterboxed - GREY) > 1e-6).any(-1)
    rows, columns = np.flatnonzero(content.any(1)), np.flatnonzero(content.any(0))
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def test_pad_value_is_the_official_grey():
    assert PAD_VALUE == 114


def test_hand_computed_geometry_with_an_odd_padding():
    # 101 x 200 (h x w) into 128: r = 0.64, height 64.64 -> 65, so 63 rows
    # of padding: 31 on top, 32 below (the odd one at the bottom).
    image = np.full((101, 200, 3), 7, np.uint8)
    converter = YOLORImageConverter(128)
    letterboxed, scale, pad = (value.numpy() for value in converter(image[None]))
    assert letterboxed.shape == (1, 128, 128, 3) and letterboxed.dtype == np.float32
    np.testing.assert_allclose(scale, [[128 / 200, 65 / 101]], rtol=1e-6)
    np.testing.assert_array_equal(pad, [[0, 31]])
    np.testing.assert_allclose(letterboxed[0, :31], GREY, atol=1e-7)
    np.testing.assert_allclose(letterboxed[0, 96:], GREY, atol=1e-7)
    np.testing.assert_allclose(letterboxed[0, 31:96], 7 / 255, atol=1e-7)


@pytest.mark.parametrize(
    "height, width, side",
    [(480, 640, 320), (640, 480, 320), (101, 200, 128), (37, 53, 64), (3, 300, 64), (333, 333, 96)],
)
def test_geometry_matches_the_official_letterbox(height, width, side):
    new_height, new_width, top, bottom, left, right = official_geometry(height, width, side)
    rng = np.random.default_rng(height * width)
    # Content distinct from the grey, so its extent can be measured.
    image = rng.integers(0, 100, (height, width, 3)).astype(np.uint8)
    letterboxed, scale, pad = letterbox(image, side)
    assert content_box(letterboxed.numpy()) == (top, side - bottom, left, side - right)
    assert (top + new_height + bottom, left + new_width + right) == (side, side)
    np.testing.assert_allclose(scale, [new_width / width, new_height / height], rtol=1e-6)
    np.testing.assert_array_equal(pad, [left, top])


def test_a_sliver_keeps_one_row():
    # 1 x 300 into 64 rounds to 0 rows officially (cv2 would fail); the
    # letterbox keeps 1 row, centred: 31 grey rows above, 32 below.
    letterboxed, scale, pad = letterbox(np.zeros((1, 300, 3), np.uint8), 64)
    assert content_box(letterboxed.numpy()) == (31, 32, 0, 64)
    np.testing.assert_array_equal(pad, [0, 31])
    np.testing.assert_allclose(scale, [64 / 300, 1.0], rtol=1e-6)


def test_pixels_are_a_bilinear_resize_rounded_to_integers():
    # Upscaling, where the half-pixel bilinear of PIL is an independent reference.
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    letterboxed = letterbox(image, 60)[0].numpy()
    inner = letterboxed[10:50] * 255
    np.testing.assert_allclose(inner, np.round(inner), atol=1e-4)  # integer pixels
    reference = np.asarray(Image.fromarray(image).resize((60, 40), Image.BILINEAR), np.float64)
    assert np.abs(inner - reference).mean() < 1.0


def test_layer_equals_the_letterbox_function_for_batches_and_dtypes():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 90, 50, 3)).astype(np.uint8)
    converter = YOLORImageConverter(64)
    got, scale, pad = converter(images)
    assert scale.shape == (3, 2) and pad.shape == (3, 2)
    for index, image in enumerate(images):
        want, want_scale, want_pad = letterbox(image, 64)
        np.testing.assert_array_equal(got[index], want)
        np.testing.assert_array_equal(scale[index], want_scale)
        np.testing.assert_array_equal(pad[index], want_pad)
    # Float pixels in [0, 255] give the same input as uint8.
    np.testing.assert_array_equal(converter(images.astype(np.float32))[0], got)
    # One unbatched image works too.
    np.testing.assert_array_equal(converter(images[0])[0], got[0])


def test_antialias_is_the_evaluation_resize():
    # One bright pixel at the corner of every 4 x 4 block, shrunk 4x. The
    # plain bilinear (official inference, INTER_LINEAR) samples between
    # pixels 1 and 2 of each block and misses them all; the antialiased
    # resize (official evaluation, INTER_AREA) averages them: 200 / 16.
    image = np.zeros((64, 64, 3), np.uint8)
    image[::4, ::4] = 200
    sampled = YOLORImageConverter(16)(image[None])[0].numpy()
    np.testing.assert_array_equal(sampled, 0.0)
    averaged = YOLORImageConverter(16, antialias=True)(image[None])[0].numpy() * 255
    assert 11.0 < averaged.mean() < 14.0


def test_boxes_round_trip_and_clip():
    image = np.zeros((101, 200, 3), np.uint8)
    converter = YOLORImageConverter(128)
    _, scale, pad = converter(np.stack([image, image]))
    original = np.array([[[10, 20, 50, 80], [0, 0, 200, 101]]] * 2, np.float32)
    # Forward by hand: p * scale + pad, with the per-axis scale.
    sx, sy = 128 / 200, 65 / 101
    forward = original * [sx, sy, sx, sy] + [0, 31, 0, 31]
    np.testing.assert_allclose(
        converter.boxes_to_original(forward, scale, pad, [[101, 200]] * 2), original, atol=1e-4
    )
    # A box spilling into the padding is clipped to the image.
    spill = np.array([[[-5, 0, 130, 128]]], np.float32)
    np.testing.assert_allclose(
        converter.boxes_to_original(spill, scale[:1], pad[:1], [[101, 200]]),
        [[[0, 0, 200, 101]]],
        atol=1e-4,
    )
    # One scale for both axes (the official gain) and unbatched boxes.
    np.testing.assert_allclose(
        boxes_to_original([[32, 40, 64, 72]], 0.5, [0, 8], [150, 200]), [[64, 64, 128, 128]]
    )
    with pytest.raises(ValueError, match="pad"):
        boxes_to_original(np.zeros((1, 2, 4)), [1.0, 1.0], [0, 0])


def test_config_round_trip_and_tf_data():
    converter = YOLORImageConverter(96, pad_value=0, antialias=True, name="letterbox")
    restored = keras.layers.deserialize(keras.layers.serialize(converter))
    assert isinstance(restored, YOLORImageConverter)
    assert restored.get_config() == converter.get_config()
    assert (restored.image_size, restored.pad_value, restored.antialias) == (96, 0, True)
    images = np.full((2, 48, 96, 3), 255, np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(images[None]).map(restored)
    letterboxed, _, pad = next(iter(dataset))
    assert letterboxed.shape == (2, 96, 96, 3)
    np.testing.assert_array_equal(pad, [[0, 24], [0, 24]])
    np.testing.assert_array_equal(letterboxed[:, :24], 0.0)  # pad_value 0
    np.testing.assert_array_equal(letterboxed[:, 24:72], 1.0)


def test_unknown_sizes_in_a_graph():
    converter = YOLORImageConverter(64)
    run = tf.function(converter, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    letterboxed, scale, pad = run(tf.zeros((1, 16, 32, 3), tf.uint8))
    assert letterboxed.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(scale, [[2.0, 2.0]])
    np.testing.assert_array_equal(pad, [[0, 16]])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="image_size"):
        YOLORImageConverter(0)
    with pytest.raises(ValueError, match="pad_value"):
        YOLORImageConverter(64, pad_value=300)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
        YOLORImageConverter(64)(np.zeros((2, 8, 8, 4), np.uint8))
