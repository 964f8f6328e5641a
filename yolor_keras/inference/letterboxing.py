"""The inference letterbox: the project's one letterbox, as predictors call it.

The pixels come from `yolor_keras.data.letterbox_ops.letterbox` (shared with
evaluation and `YOLORImageConverter`); this module adds the input-size
check and the scalar scale that the `Predictor` and the exported graphs
map boxes back with.
"""

import tensorflow as tf

from yolor_keras.data import letterbox_ops
from yolor_keras.data.letterbox_ops import PAD_VALUE

__all__ = ["PAD_VALUE", "check_image_size", "letterbox"]


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
    """Letterboxes one image into an S x S square, as the official `detect.py`.

    Bilinear without antialiasing (the official `cv2.INTER_LINEAR`); see
    `yolor_keras.data.letterbox_ops.letterbox` for the geometry.

    Args:
        image: `(height, width, 3)` uint8 (or float in [0, 255]) tensor.
        image_size: side of the output square, a Python int.
        pad_value: grey level of the padding, in [0, 255].

    Returns:
        A tuple `(letterboxed, scale, pad)`:
        - `letterboxed`: `(image_size, image_size, 3)` float32 in [0, 1].
        - `scale`: float32 scalar, r = min(S / height, S / width), the gain
          the official `scale_coords` divides by.
        - `pad`: float32 `(2,)`, the `(left, top)` padding in pixels.
        An input pixel `p` maps to `p * scale + pad` in the output.
    """
    image = tf.ensure_shape(tf.convert_to_tensor(image), [None, None, 3])
    letterboxed, _, pad = letterbox_ops.letterbox(image, image_size, pad_value=pad_value)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    side = float(image_size)
    scale = tf.minimum(side / shape[0], side / shape[1])
    return letterboxed, scale, pad
