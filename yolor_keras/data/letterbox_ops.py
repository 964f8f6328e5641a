"""The letterbox: fit an image into a canvas without distorting it, and back.

This module is the project's only letterbox. Evaluation batches (square and
the official rect batches), the `Predictor`, the exported SavedModel and the
`YOLORImageConverter` layer all resize and pad through `letterbox`, and all
map boxes back through `boxes_to_original`, so every path feeds the network
the same pixels for the same image.

The geometry is the official `letterbox` (`utils/datasets.py`):

    r = min(S / height, S / width)
    new size = round(side * r)            (half to even, like Python's round)
    top = (canvas height - new height) // 2, left likewise

so the odd pixel of padding goes to the bottom / right, and the padding is
the official grey 114 (114 / 255 on the [0, 1] scale).
"""

import tensorflow as tf

# The official padding grey, on the 0-255 scale (114 / 255 in [0, 1] images).
PAD_VALUE = 114


def fit_size(height, width, image_size):
    """Size of an image scaled to long side S, as the official `letterbox`.

    Args:
        height: image height (int or int32 scalar tensor).
        width: image width.
        image_size: S, a Python int.

    Returns:
        (new_height, new_width) int32 scalar tensors, each in [1, S].
    """
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    side = float(image_size)
    ratio = tf.minimum(side / height, side / width)
    # The clip guards against float error pushing a side past S (or to 0
    # for extreme aspect ratios).
    new_height = tf.clip_by_value(tf.cast(tf.round(height * ratio), tf.int32), 1, image_size)
    new_width = tf.clip_by_value(tf.cast(tf.round(width * ratio), tf.int32), 1, image_size)
    return new_height, new_width


def centre_offsets(height, width, canvas_height, canvas_width):
    """(top, left) at which an image sits centred on a canvas.

    The official code rounds `dh / 2 - 0.1`, which is `(canvas - size) // 2`:
    the odd pixel of padding goes to the bottom / right. Works on Python
    ints (planning) and on int tensors (in the graph) alike.
    """
    return (canvas_height - height) // 2, (canvas_width - width) // 2


def letterbox(
    image,
    image_size,
    canvas_size=None,
    resized_size=None,
    antialias=False,
    pad_value=PAD_VALUE,
    dtype="float32",
):
    """Resizes an image (or a batch of same-size images) and pads it onto a canvas.

    Args:
        image: `(height, width, 3)` or `(batch, height, width, 3)`, uint8 or
            float in [0, 255].
        image_size: S, a Python int: the long side of the resized image.
        canvas_size: `(height, width)` of the output (ints or int32
            tensors); `(S, S)` by default. The official evaluation uses a
            per-batch rect canvas (see `yolor_keras.evaluation.rect_batches`).
        resized_size: `(height, width)` the image is resized to; by default
            `fit_size(height, width, S)`. The rect evaluation passes the size
            of the official `load_image` (truncated, not rounded).
        antialias: low-pass when shrinking. The official `test.py` shrinks
            with `cv2.INTER_AREA` (evaluation: True); `detect.py` resizes
            with `cv2.INTER_LINEAR` (inference: False). Enlarging is plain
            bilinear either way.
        pad_value: grey level of the padding on the 0-255 scale.
        dtype: "float32" for [0, 1] output (the network input), or "uint8"
            for [0, 255] pixels (what an in-memory cache holds; 4x smaller).

    Returns:
        `(letterboxed, scale, pad)`:
        - `letterboxed`: `(..., canvas height, canvas width, 3)`.
        - `scale`: `(..., 2)` float32 `(x, y)`, resized / original size per
          axis, the exact factor the pixels were resampled by.
        - `pad`: `(..., 2)` float32 `(x, y)`, the left and top padding.
        An original pixel coordinate `p` lands at `p * scale + pad`;
        `boxes_to_original` inverts that.
    """
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"`dtype` must be 'float32' or 'uint8'; got {dtype!r}.")
    image = tf.convert_to_tensor(image)
    batched = image.shape.rank == 4
    if image.shape.rank not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(
            "letterbox expects (height, width, 3) or (batch, height, width, 3) images; "
            f"got shape {image.shape}."
        )
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    if resized_size is None:
        new_height, new_width = fit_size(height, width, image_size)
    else:
        new_height = tf.cast(resized_size[0], tf.int32)
        new_width = tf.cast(resized_size[1], tf.int32)
    if canvas_size is None:
        canvas_height = canvas_width = tf.constant(image_size, tf.int32)
    else:
        canvas_height = tf.cast(canvas_size[0], tf.int32)
        canvas_width = tf.cast(canvas_size[1], tf.int32)

    pixels = tf.cast(image, tf.float32)
    unchanged = tf.logical_and(tf.equal(height, new_height), tf.equal(width, new_width))
    # Skipping the identity resize saves its cost; the pixels are the same.
    pixels = tf.cond(
        unchanged,
        lambda: pixels,
        lambda: tf.image.resize(
            pixels, tf.stack([new_height, new_width]), method="bilinear", antialias=antialias
        ),
    )
    # Integer pixels, as the official uint8 pipeline has, so every runtime
    # that resizes sees the same network input.
    pixels = tf.clip_by_value(tf.round(pixels), 0.0, 255.0)

    top, left = centre_offsets(new_height, new_width, canvas_height, canvas_width)
    paddings = [
        [top, canvas_height - new_height - top],
        [left, canvas_width - new_width - left],
        [0, 0],
    ]
    if batched:
        paddings = [[0, 0]] + paddings
    pixels = tf.pad(pixels, paddings, constant_values=float(pad_value))
    static_canvas = [None, None] if canvas_size is not None else [image_size, image_size]
    pixels = tf.ensure_shape(pixels, ([None] if batched else []) + static_canvas + [3])
    if dtype == "uint8":
        pixels = tf.cast(pixels, tf.uint8)
    else:
        pixels = pixels / 255.0

    scale = tf.cast(tf.stack([new_width, new_height]), tf.float32) / tf.cast(
        tf.stack([width, height]), tf.float32
    )
    pad = tf.cast(tf.stack([left, top]), tf.float32)
    if batched:
        repeats = tf.stack([shape[0], 1])
        scale, pad = tf.tile(scale[None], repeats), tf.tile(pad[None], repeats)
    return pixels, scale, pad


def boxes_to_original(boxes, scale, pad, original_size=None):
    """Maps xyxy boxes from letterboxed pixels back to original pixels, clipped.

    The inverse of `letterbox`: `original = (letterboxed - pad) / scale`,
    then clipped to the image, like the official `scale_coords`.

    Args:
        boxes: `(N, 4)` boxes of one image, or `(B, N, 4)` of a batch.
        scale: the letterbox scale: `(2,)` `(x, y)` (or a scalar) for one
            image, `(B, 2)` (or `(B,)`) for a batch.
        pad: `(2,)` or `(B, 2)` `(x, y)` left and top padding.
        original_size: optional `(2,)` or `(B, 2)` `(height, width)` to clip
            to. Without it boxes are not clipped.

    Returns:
        float32 tensor shaped like `boxes`, in original pixels. With
        `original_size`, all-zero padding rows stay all zero (they map to
        negative corners, clipped to 0).
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scale = tf.cast(tf.convert_to_tensor(scale), tf.float32)
    pad = tf.cast(tf.convert_to_tensor(pad), tf.float32)
    if boxes.shape.rank not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must be (N, 4) or (batch, N, 4); got shape {boxes.shape}.")
    if pad.shape.rank != boxes.shape.rank - 1 or pad.shape[-1] != 2:
        raise ValueError(
            f"`pad` must be (2,) for (N, 4) boxes or (batch, 2) for (batch, N, 4); "
            f"got shape {pad.shape} for boxes {boxes.shape}."
        )
    if scale.shape.rank == pad.shape.rank - 1:  # one factor for both axes
        scale = tf.stack([scale, scale], axis=-1)
    if scale.shape.rank != pad.shape.rank or scale.shape[-1] != 2:
        raise ValueError(
            f"`scale` must be shaped like `pad` {pad.shape} (x, y) or one value per "
            f"image; got shape {scale.shape}."
        )
    # (x, y) -> (x, y, x, y), with an axis for the N boxes of each image.
    scale = tf.concat([scale, scale], axis=-1)[..., None, :]
    pad = tf.concat([pad, pad], axis=-1)[..., None, :]
    original = (boxes - pad) / scale
    if original_size is None:
        return original
    size = tf.cast(tf.convert_to_tensor(original_size), tf.float32)
    if size.shape.rank != pad.shape.rank - 1 or size.shape[-1] != 2:
        raise ValueError(
            f"`original_size` must be (height, width) per image, shaped like `pad`; "
            f"got shape {size.shape}."
        )
    limit = tf.concat([size[..., ::-1], size[..., ::-1]], axis=-1)[..., None, :]
    return tf.clip_by_value(original, 0.0, limit)
