"""Tests of reading image sizes from encoded headers inside a graph."""

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import png_header_only
from deployment_helper import scene

from yolor_keras.export.image_header import check_encoded_image_size
from yolor_keras.export.image_header import encoded_image_shape

shape_in_graph = tf.function(encoded_image_shape, input_signature=[tf.TensorSpec([], tf.string)])


@pytest.mark.parametrize(
    "image_format, options, mode",
    [
        ("JPEG", {}, "RGB"),
        ("PNG", {}, "RGB"),
        ("GIF", {}, "RGB"),
        ("BMP", {}, "RGB"),
        ("WEBP", {"lossless": False}, "RGB"),  # VP8 chunk
        ("WEBP", {"lossless": True}, "RGB"),  # VP8L chunk
        ("WEBP", {"lossless": False}, "RGBA"),  # VP8X chunk (alpha)
    ],
)
def test_header_size_matches_the_image(image_format, options, mode):
    image = scene(37, 1053, seed=1)
    if mode == "RGBA":
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 200, np.uint8)], axis=-1)
    data = encode(image, image_format, **options)
    np.testing.assert_array_equal(shape_in_graph(data).numpy(), [37, 1053])


def test_unknown_bytes_give_minus_one_and_short_input_is_safe():
    np.testing.assert_array_equal(shape_in_graph(b"hello").numpy(), [-1, -1])
    np.testing.assert_array_equal(shape_in_graph(b"").numpy(), [-1, -1])
    # A PNG cut inside its header still parses (zeros), without an error.
    np.testing.assert_array_equal(shape_in_graph(png_header_only(9, 7)[:18]).numpy(), [0, 0])


def test_check_refuses_oversized_and_non_images_before_decoding():
    check = tf.function(
        lambda data: check_encoded_image_size(data, max_pixels=1000),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    np.testing.assert_array_equal(check(png_header_only(40, 25)).numpy(), [25, 40])
    with pytest.raises(tf.errors.InvalidArgumentError, match="Image too large.*20000.*x.*20000"):
        check(png_header_only(20000, 20000))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Not an image"):
        check(b"GET / HTTP/1.1")
