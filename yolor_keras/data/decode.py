"""Decoding encoded samples into pixels, for training and for evaluation."""

import numpy as np
import tensorflow as tf

from yolor_keras.data import exif
from yolor_keras.data import transforms


def read_image(image, is_path):
    """Reads and decodes an image to RGB uint8.

    Grayscale, palette, RGBA and CMYK images come out as RGB (channels=3),
    turned the way their EXIF orientation says (see `exif.decode_image`).

    Args:
        image: tf.string, a file path or encoded bytes.
        is_path: tf.bool, whether `image` is a path.

    Returns:
        (H, W, 3) uint8.
    """
    data = tf.cond(is_path, lambda: tf.io.read_file(image), lambda: image)
    return exif.decode_image(data)


_JPEG_SCALES = (1, 2, 4, 8)  # the DCT scalings libjpeg decodes directly


def read_image_for_size(image, is_path, long_side):
    """Decodes an image at the smallest JPEG scale that still covers a size.

    libjpeg can decode at 1/2, 1/4 or 1/8 scale straight from the DCT
    coefficients, which costs less than a full decode and yields fewer
    pixels to resample. The scale is the smallest whose long side is still
    at least `long_side`, so no detail the output can hold is lost. Other
    formats are decoded at full size. The EXIF orientation is applied, so
    pixels and size are those of the displayed image.

    Args:
        image: tf.string, a file path or encoded bytes.
        is_path: tf.bool, whether `image` is a path.
        long_side: the long side the image will be resampled to.

    Returns:
        (pixels (h, w, 3) uint8, original (2,) int32 height and width of
        the displayed image).
    """
    data = tf.cond(is_path, lambda: tf.io.read_file(image), lambda: image)

    def scaled_jpeg():
        stored = tf.image.extract_jpeg_shape(data)[:2]
        orientation = exif.exif_orientation(data)
        longest = tf.reduce_max(stored)
        # Number of halvings (at most 3) that keep the long side covered.
        index = tf.add_n(
            [tf.cast(longest // r >= long_side, tf.int32) for r in (2, 4, 8)]
        )
        branches = [
            lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r)
            for r in _JPEG_SCALES
        ]
        pixels = exif.apply_orientation(tf.switch_case(index, branches), orientation)
        original = tf.where(exif.swaps_axes(orientation), stored[::-1], stored)
        return pixels, original

    def any_format():
        decoded = exif.decode_image(data)
        return decoded, tf.shape(decoded)[:2]

    pixels, original = tf.cond(tf.io.is_jpeg(data), scaled_jpeg, any_format)
    return tf.ensure_shape(pixels, [None, None, 3]), original


def decode_for_training(element, image_size, resize=True):
    """Decodes a sample and sizes it for the mosaic: long side S.

    This is the official `load_image`: aspect kept, bilinear, no padding
    (mosaic places the image itself). With `resize=False` the pixels are
    not resized (only JPEG-downscaled, see `read_image_for_size`) and only
    the tile size is computed; the axis-aligned mosaic then resamples them
    once, straight into the output.

    Args:
        element: an encoded sample (see `DetectionSource`).
        image_size: S.
        resize: resize the pixels to the tile size now.

    Returns:
        dict with "image" (h, w, 3) uint8, "source_size" (2,) int32 (its h,
        w), "size" (2,) int32 (the tile's h, w, long side S), "boxes"
        (n, 4) float32 xyxy in tile pixels and "classes" (n,) int32.
    """
    image, original = read_image_for_size(
        element["image"], element["is_path"], image_size
    )
    new_height, new_width, _, _ = transforms.letterbox_geometry(
        original[0], original[1], image_size
    )
    if resize:
        image = transforms.resize_image(image, new_height, new_width, antialias=False)
    scale = tf.cast(
        tf.stack([new_width, new_height, new_width, new_height]), tf.float32
    )
    return {
        "image": image,
        "source_size": tf.shape(image)[:2],
        "size": tf.stack([new_height, new_width]),
        "boxes": _dense(element["boxes"]) * scale,
        "classes": _dense(element["classes"]),
    }


def decode_for_evaluation(element, image_size):
    """Decodes a sample and letterboxes it into an S x S grey square.

    Args:
        element: an encoded sample (see `DetectionSource`).
        image_size: S.

    Returns:
        dict with "image" (S, S, 3) uint8, "boxes" (n, 4) float32 xyxy in
        letterboxed pixels, "classes" (n,) int32, "image_id" int64,
        "original_size" (2,) int32 (height, width), "scale" (2,) float32
        (x, y) and "pad" (2,) float32 (x, y): a letterboxed point p maps
        back to the original image as (p - pad) / scale.
    """
    image = read_image(element["image"], element["is_path"])
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    new_height, new_width, pad_x, pad_y = transforms.letterbox_geometry(
        height, width, image_size
    )
    resized = transforms.resize_image(image, new_height, new_width, antialias=True)
    letterboxed = tf.pad(
        resized,
        [
            [pad_y, image_size - new_height - pad_y],
            [pad_x, image_size - new_width - pad_x],
            [0, 0],
        ],
        constant_values=transforms.GREY,
    )
    letterboxed = tf.ensure_shape(letterboxed, [image_size, image_size, 3])
    size = tf.cast(tf.stack([new_width, new_height, new_width, new_height]), tf.float32)
    pad = tf.cast(tf.stack([pad_x, pad_y]), tf.float32)
    return {
        "image": letterboxed,
        "boxes": _dense(element["boxes"]) * size + tf.tile(pad, [2]),
        "classes": _dense(element["classes"]),
        "image_id": element["image_id"],
        "original_size": tf.stack([height, width]),
        "scale": tf.cast(
            tf.stack([new_width / width, new_height / height]), tf.float32
        ),
        "pad": pad,
    }


def letterbox_to_original(boxes, scale, pad, original_size=None):
    """Maps xyxy boxes from letterboxed pixels back to original pixels.

    Args:
        boxes: (N, 4) boxes of one image, or (B, N, 4) of a batch.
        scale: (2,) or (B, 2) (x, y) letterbox scale, from the labels dict.
        pad: (2,) or (B, 2) (x, y) letterbox padding, from the labels dict.
        original_size: optional (2,) or (B, 2) (height, width) to clip to.

    Returns:
        NumPy float32 boxes of the same shape, in original pixels.
    """
    boxes = np.asarray(boxes, np.float32)
    # (x, y) -> (x, y, x, y), with an axis for the N boxes of each image.
    scale = np.tile(np.asarray(scale, np.float32), 2)[..., None, :]
    pad = np.tile(np.asarray(pad, np.float32), 2)[..., None, :]
    original = (boxes - pad) / scale
    if original_size is not None:
        height_width = np.asarray(original_size, np.float32)
        limit = np.tile(height_width[..., ::-1], 2)[..., None, :]
        original = np.clip(original, 0.0, limit)
    return original.reshape(boxes.shape)


def _dense(value):
    if isinstance(value, tf.RaggedTensor):
        return value.to_tensor()
    return value
