"""The deterministic transforms against hand-computed values."""

import math

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import transforms


def _params(**overrides):
    params = {
        "angle": 0.0,
        "scale": 1.0,
        "shear_x": 0.0,
        "shear_y": 0.0,
        "perspective_x": 0.0,
        "perspective_y": 0.0,
        "translate_x": 0.5,
        "translate_y": 0.5,
    }
    params.update(overrides)
    return {key: tf.constant(value, tf.float32) for key, value in params.items()}


def test_perspective_matrix_matches_the_official_composition():
    params = _params(
        angle=30.0,
        scale=1.2,
        shear_x=5.0,
        shear_y=-3.0,
        translate_x=0.4,
        translate_y=0.7,
        perspective_x=1e-4,
        perspective_y=-2e-4,
    )
    matrix = transforms.perspective_matrix(params, 200.0, 100.0, 64).numpy()
    # T @ S @ R @ P @ C written out with NumPy, R as cv2.getRotationMatrix2D.
    center = np.array([[1, 0, -50], [0, 1, -100], [0, 0, 1]], float)
    perspective = np.array([[1, 0, 0], [0, 1, 0], [1e-4, -2e-4, 1]])
    a, s = math.radians(30.0), 1.2
    rotation = np.array(
        [
            [s * math.cos(a), s * math.sin(a), 0],
            [-s * math.sin(a), s * math.cos(a), 0],
            [0, 0, 1],
        ]
    )
    shear = np.array(
        [
            [1, math.tan(math.radians(5.0)), 0],
            [math.tan(math.radians(-3.0)), 1, 0],
            [0, 0, 1],
        ]
    )
    move = np.array([[1, 0, 0.4 * 64], [0, 1, 0.7 * 64], [0, 0, 1]])
    expected = move @ shear @ rotation @ perspective @ center
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-4)


def test_transform_boxes_takes_the_corner_bounding_box_and_clips():
    # Rotate 90 degrees about the origin: (x, y) -> (y, -x), then shift by 50.
    matrix = tf.constant([[0, 1, 50], [-1, 0, 50], [0, 0, 1]], tf.float32)
    boxes = tf.constant([[10, 20, 30, 25], [-100, 0, 10, 10]], tf.float32)
    out = transforms.transform_boxes(boxes, matrix, 64).numpy()
    # Corners of box 0 map to x in [70, 75] -> clipped to 64, y in [20, 40].
    np.testing.assert_allclose(out[0], [64, 20, 64, 40])
    # Box 1: x = y + 50 in [50, 60]; y = 50 - x in [40, 150] -> clipped 64.
    np.testing.assert_allclose(out[1], [50, 40, 60, 64])


def test_box_candidates_rules():
    before = tf.constant([[0, 0, 10, 10]] * 5, tf.float32)
    after = tf.constant(
        [
            [0, 0, 10, 10],  # unchanged: kept
            [0, 0, 2, 10],  # 2 px wide: not > 2
            [0, 0, 3, 3],  # 9% of the area: not > 10%
            [0, 0, 100, 4.9],  # aspect 20.4
            [0, 0, 4, 3],  # 12% area, 4 x 3: kept
        ],
        tf.float32,
    )
    keep = transforms.box_candidates(before, after).numpy()
    np.testing.assert_array_equal(keep, [True, False, False, False, True])


@pytest.mark.parametrize("seed", range(3))
def test_hsv_matches_tensorflow_conversions(seed):
    rng = np.random.default_rng(seed)
    image = rng.random((16, 16, 3)).astype(np.float32)
    image[0, :3] = [[1, 0, 0], [0.5, 0.5, 0.5], [0, 0, 0]]  # pure, grey, black
    gains = rng.uniform(0.3, 1.7, 3).astype(np.float32)
    hsv = tf.image.rgb_to_hsv(image).numpy()
    hsv[..., 0] = np.mod(hsv[..., 0] * gains[0], 1.0)
    hsv[..., 1:] = np.clip(hsv[..., 1:] * gains[1:], 0.0, 1.0)
    expected = tf.image.hsv_to_rgb(hsv).numpy()
    actual = transforms.adjust_hsv(tf.constant(image), tf.constant(gains)).numpy()
    np.testing.assert_allclose(actual, expected, atol=2e-6)


def test_hsv_hand_values():
    # Pure red has hue 0: any hue gain keeps it red; value 0.5 halves it.
    red = tf.constant([[[1.0, 0.0, 0.0]]])
    out = transforms.adjust_hsv(red, tf.constant([1.3, 1.0, 0.5])).numpy()
    np.testing.assert_allclose(out[0, 0], [0.5, 0.0, 0.0], atol=1e-6)
    # Green (hue 1/3) with hue gain 1.5 becomes hue 1/2: cyan.
    green = tf.constant([[[0.0, 1.0, 0.0]]])
    out = transforms.adjust_hsv(green, tf.constant([1.5, 1.0, 1.0])).numpy()
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 1.0], atol=1e-6)
    # Saturation gain 0 turns any colour grey at its value.
    out = transforms.adjust_hsv(tf.constant([[[0.8, 0.2, 0.4]]]), tf.constant([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(out.numpy()[0, 0], [0.8, 0.8, 0.8], atol=1e-6)


def test_photometric_flips_pixels_and_flip_boxes_agree():
    image = np.zeros((8, 8, 3), np.float32)
    image[1:3, 5:8] = 255.0  # x in [5, 8), y in [1, 3)
    box = tf.constant([[5.0, 1.0, 8.0, 3.0]])
    for up_down in (False, True):
        for left_right in (False, True):
            out = transforms.photometric(
                tf.constant(image),
                tf.ones([3]),
                tf.constant(up_down),
                tf.constant(left_right),
                apply_hsv=False,
            ).numpy()
            ys, xs = np.nonzero(out[..., 0] > 0.5)
            flipped = transforms.flip_boxes(box, 8, tf.constant(up_down), tf.constant(left_right))
            np.testing.assert_allclose(
                flipped.numpy()[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            )
            assert out.max() == pytest.approx(1.0)


def test_warp_image_moves_pixels_like_the_boxes():
    image = np.full((40, 40, 3), 10, np.uint8)
    image[8:16, 20:32] = 250  # box (20, 8, 32, 16)
    matrix = tf.constant([[2, 0, -10], [0, 2, 4], [0, 0, 1]], tf.float32)
    warped = transforms.warp_image(tf.constant(image), matrix, 64).numpy()
    ys, xs = np.nonzero(warped[..., 0] > 130)  # halfway from 10 to 250
    found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    expected = transforms.transform_boxes(tf.constant([[20.0, 8, 32, 16]]), matrix, 64)
    np.testing.assert_allclose(found, expected.numpy()[0], atol=1.0)
    # Outside the source the fill is the official grey.
    assert (warped[:3] == transforms.GREY).all()  # y < 4 maps above the source


def test_paste_tile_crops_and_pads_grey():
    image = tf.reshape(tf.range(4 * 5 * 3, dtype=tf.int32), [4, 5, 3])
    image = tf.cast(image, tf.uint8)
    # The image at (-2, 1) on a 6 x 6 region: columns 2..4 land at x 0..2.
    tile = transforms.paste_tile(image, 4, 5, -2, 1, (0, 0, 6, 6)).numpy()
    assert tile.shape == (6, 6, 3)
    np.testing.assert_array_equal(tile[1:5, 0:3], image.numpy()[:, 2:5])
    assert (tile[0] == transforms.GREY).all() and (tile[:, 3:] == transforms.GREY).all()
