"""Letterboxing: fit an image into a fixed square without distorting it.

One implementation, in TensorFlow ops, is shared by the in-process
`Predictor`, the SavedModel serving graph and the calibration data of the
TFLite export, so that all of them feed the network exactly the same pixels.
"""

import tensorflow as tf

# The official YOLOR pads with this grey.
PAD_VALUE = 114


def check_image_size(image_size, stride):
    """Checks that a square input size suits a detector's largest stride.

    Args:
        image_size: side of the square network input, in pixels.
        stride: the detector's largest stride (64 for the P6 family).

    Returns:
        `image_size` as an int.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"`image_size` must be a positive int; got {image_size!r}.")
    if image_size % stride:
        raise ValueError(
            f"`image_size` must be a multiple of the detector's largest stride "
            f"{stride}; got {image_size}. The nearest valid sizes are "
            f"{max(stride, image_size // stride * stride)} and "
            f"{(image_size // stride + 1) * stride}."
        )
    return image_size


def letterbox(image, image_size, pad_value=PAD_VALUE):
    """Resizes an image to fit a square, keeping its aspect ratio, and pads it.

    The long side becomes `image_size` (small images are scaled up, as in the
    official detector); the short side is centred and padded with grey. The
    resized pixels are rounded to integers, as the official uint8 pipeline
    does, so that the network input is the same whichever runtime resizes.

    Args:
        image: `(height, width, 3)` uint8 (or float in [0, 255]) tensor.
        image_size: side of the output square, a Python int.
        pad_value: grey level of the padding, in [0, 255].

    Returns:
        A tuple `(letterboxed, scale, pad)`:
        - `letterboxed`: `(image_size, image_size, 3)` float32 in [0, 1].
        - `scale`: float32 scalar, letterboxed size / original size.
        - `pad`: float32 `(2,)`, the `(left, top)` padding in pixels.
        An input pixel `p` maps to `p * scale + pad` in the output.
    """
    image = tf.convert_to_tensor(image)
    image = tf.ensure_shape(image, [None, None, 3])
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    side = float(image_size)
    scale = tf.minimum(side / height, side / width)
    new_height = tf.clip_by_value(tf.cast(tf.round(height * scale), tf.int32), 1, image_size)
    new_width = tf.clip_by_value(tf.cast(tf.round(width * scale), tf.int32), 1, image_size)

    resized = tf.image.resize(
        tf.cast(image, tf.float32), tf.stack([new_height, new_width]), method="bilinear"
    )
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)

    top = (image_size - new_height) // 2
    left = (image_size - new_width) // 2
    paddings = [[top, image_size - new_height - top], [left, image_size - new_width - left], [0, 0]]
    padded = tf.pad(resized, paddings, constant_values=float(pad_value))
    padded = tf.ensure_shape(padded, [image_size, image_size, 3])
    pad = tf.cast(tf.stack([left, top]), tf.float32)
    return padded / 255.0, scale, pad
