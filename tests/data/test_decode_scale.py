"""The reduced-scale JPEG decode of training images against a full decode.

`read_image_for_size` decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's
DCT-domain scaling) when the image is that much larger than its mosaic
tile. The reference here is independent of it: the full-size decode, then
the two standard resizes to the same size (bilinear as the official
`cv2.INTER_LINEAR`, and antialiased as `cv2.INTER_AREA`).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import image_decoding
from yolor_keras.data import synthetic
from yolor_keras.data import transforms


@functools.cache
def picture(width, height, seed):
    """A synthetic scene (textured background, objects with edges) as RGB."""
    rng = np.random.default_rng([7, seed])
    image, _ = synthetic.render_image(rng, synthetic.make_instances(0), width, 8, False)
    return np.asarray(image)[:height]


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_reduced_scale_decode_is_as_close_as_the_choice_of_resize(encode, scale):
    for seed in range(2):
        array = picture(768, 432, seed)
        data = encode(array, "JPEG", quality=90)
        long_side = 768 // scale
        pixels, original = image_decoding.read_image_for_size(
            tf.constant(data), tf.constant(False), long_side
        )
        # The size the boxes are scaled by is the full image's.
        assert tuple(original.numpy()) == (432, 768)
        assert tuple(pixels.shape) == (-(-432 // scale), 768 // scale, 3)
        full = tf.io.decode_jpeg(data, channels=3)
        height, width = pixels.shape[0], pixels.shape[1]
        bilinear, area = (
            transforms.resize_image(full, height, width, antialias=antialias).numpy()
            for antialias in (False, True)
        )
        fast = pixels.numpy().astype(np.float32)
        to_nearer = min(np.abs(fast - bilinear).mean(), np.abs(fast - area).mean())
        between_references = np.abs(bilinear.astype(np.float32) - area).mean()
        # Measured on these scenes: 0.6-1.9 levels of 255 to the nearer
        # reference, while the two references differ by 1.0-3.7 between
        # themselves. So the shortcut moves pixels less than picking the
        # other standard resize would.
        assert to_nearer < 2.5, (scale, seed, to_nearer)
        assert to_nearer < between_references, (scale, seed, to_nearer, between_references)


def test_training_decode_gives_the_same_tile_and_boxes_as_a_full_decode(encode):
    # The same pixels as a JPEG (decoded at 1/2 scale) and as a PNG (always
    # decoded in full): the tile size and boxes must be identical, the
    # tile pixels close.
    array = picture(768, 432, 3)
    jpeg = encode(array, "JPEG", quality=95)
    full_pixels = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.9], [0.6, 0.05, 0.95, 0.4]], tf.float32)

    def decode(data, resize):
        element = {
            "image": tf.constant(data),
            "is_path": tf.constant(False),
            "boxes": boxes,
            "classes": tf.constant([1, 2], tf.int32),
        }
        return image_decoding.decode_for_training(element, 320, resize=resize)

    png = encode(full_pixels, "PNG")
    # Decoded sizes: the JPEG at 1/2 scale (its long side 384 still covers
    # the tile's 320), the PNG in full.
    assert decode(jpeg, False)["source_size"].numpy().tolist() == [216, 384]
    assert decode(png, False)["source_size"].numpy().tolist() == [432, 768]
    reduced, full = decode(jpeg, True), decode(png, True)
    np.testing.assert_array_equal(reduced["size"].numpy(), [180, 320])
    np.testing.assert_array_equal(full["size"].numpy(), [180, 320])
    np.testing.assert_array_equal(reduced["boxes"].numpy(), full["boxes"].numpy())
    # Boxes in tile pixels: normalised corners times the tile size.
    np.testing.assert_allclose(
        reduced["boxes"].numpy(), [[32, 36, 160, 162], [192, 9, 304, 72]], atol=1e-4
    )
    # A 2.4x bilinear shrink of the full decode (what cv2.INTER_LINEAR does)
    # skips pixels; the 1/2-scale decode averages them first. Both are
    # compared with the antialiased shrink of the full decode.
    area = transforms.resize_image(full_pixels, 180, 320, antialias=True).numpy()

    def to_area(image):
        return np.abs(image.numpy().astype(np.float32) - area).mean()

    # Measured: 2.1 levels of 255 for the shortcut, 3.9 for the full
    # decode's bilinear shrink.
    assert to_area(reduced["image"]) < 2.5
    assert to_area(reduced["image"]) < to_area(full["image"])
