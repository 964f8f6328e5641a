"""Letterbox mapping of detections back to the original image's pixels.

TensorFlow, so that it can live inside exported graphs.
"""

import tensorflow as tf


def scale_boxes_to_original(boxes, scale, pad, original_size):
    """Maps boxes from letterboxed input pixels back to original image pixels.

    A letterbox resizes the original image by `scale` and pads it by
    `pad = (left, top)`, so ``input = original * scale + pad``. This inverts
    that map and clips to the original image, like the official
    `scale_coords`.

    Args:
        boxes: `(num_boxes, 4)` or `(batch, num_boxes, 4)` `[x1, y1, x2, y2]`
            in letterboxed input pixels.
        scale: resize factor (letterboxed / original size): a scalar, or
            `(batch,)` for batched boxes.
        pad: `(pad_x, pad_y)` added on the left and top: shape `(2,)`, or
            `(batch, 2)` for batched boxes.
        original_size: `(height, width)` of the original image: shape `(2,)`,
            or `(batch, 2)` for batched boxes.

    Returns:
        float32 tensor shaped like `boxes`, in original pixels. All-zero padding
        rows stay all zero.
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scale = tf.cast(tf.convert_to_tensor(scale), tf.float32)
    pad = tf.cast(tf.convert_to_tensor(pad), tf.float32)
    original_size = tf.cast(tf.convert_to_tensor(original_size), tf.float32)

    if boxes.shape.rank not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(
            f"`boxes` must have shape (num_boxes, 4) or (batch, num_boxes, 4); got {boxes.shape}."
        )
    batched = boxes.shape.rank == 3
    if scale.shape.rank not in ((0, 1) if batched else (0,)):
        raise ValueError(
            "`scale` must be a scalar"
            + (" or have shape (batch,)" if batched else "")
            + f"; got shape {scale.shape}."
        )
    for name, value in (("pad", pad), ("original_size", original_size)):
        allowed = (1, 2) if batched else (1,)
        if value.shape.rank not in allowed or value.shape[-1] != 2:
            raise ValueError(
                f"`{name}` must have shape (2,)"
                + (" or (batch, 2)" if batched else "")
                + f"; got {value.shape}."
            )

    # Per-image parameters broadcast over the box axis.
    if batched and scale.shape.rank == 1:
        scale = scale[:, None, None]
    pad_xyxy = tf.concat([pad, pad], axis=-1)
    height, width = original_size[..., 0:1], original_size[..., 1:2]
    limit_xyxy = tf.concat([width, height, width, height], axis=-1)
    if batched and pad_xyxy.shape.rank == 2:
        pad_xyxy = pad_xyxy[:, None, :]
    if batched and limit_xyxy.shape.rank == 2:
        limit_xyxy = limit_xyxy[:, None, :]

    original = (boxes - pad_xyxy) / scale
    return tf.clip_by_value(original, 0.0, limit_xyxy)
