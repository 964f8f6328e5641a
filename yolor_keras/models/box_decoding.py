"""`decode_predictions`: raw head outputs -> boxes in input pixels and scores."""

from keras import ops


def decode_predictions(raw_outputs, anchors, strides):
    """Decodes YOLOR's raw outputs like the official inference code.

    For a level with stride s, anchor (A_w, A_h), grid cell (col, row) and
    sigma the logistic sigmoid:

    * centre: ``x = (2 sigma(t_x) - 0.5 + col) * s``, ``y = (2 sigma(t_y) - 0.5 + row) * s``
    * size: ``w = (2 sigma(t_w))^2 * A_w``, ``h = (2 sigma(t_h))^2 * A_h``
    * objectness and class scores: ``sigma(t)`` (not multiplied together).

    Args:
        raw_outputs: list of ``(batch, H, W, A, 5 + C)`` tensors, stride
            ascending, as returned by `YOLORObjectDetector`.
        anchors: ``(levels, A, 2)`` anchor (w, h) in input pixels.
        strides: the stride of each level.

    Returns:
        float32 tensor ``(batch, N, 5 + C)`` with ``[cx, cy, w, h, obj,
        cls...]``, flattened in the official order: level, then anchor, then
        row, then column.
    """
    if len(raw_outputs) != len(strides) or len(raw_outputs) != len(anchors):
        raise ValueError(
            f"decode_predictions got {len(raw_outputs)} outputs, {len(anchors)} anchor "
            f"levels and {len(strides)} strides; they must match."
        )
    decoded = []
    for raw, level_anchors, stride in zip(raw_outputs, anchors, strides):
        if len(raw.shape) != 5:
            raise ValueError(
                f"Each raw output must be (batch, H, W, anchors, 5 + classes); got {raw.shape}."
            )
        shape = ops.shape(raw)
        height, width, num_anchors, fields = shape[1], shape[2], shape[3], raw.shape[4]
        sigma = ops.sigmoid(ops.cast(raw, "float32"))
        cols = ops.reshape(ops.cast(ops.arange(width), "float32"), (1, 1, -1, 1))
        rows = ops.reshape(ops.cast(ops.arange(height), "float32"), (1, -1, 1, 1))
        stride = float(stride)
        centre_x = (2.0 * sigma[..., 0] - 0.5 + cols) * stride
        centre_y = (2.0 * sigma[..., 1] - 0.5 + rows) * stride
        anchor_wh = ops.reshape(
            ops.cast(ops.convert_to_tensor(level_anchors), "float32"), (1, 1, 1, -1, 2)
        )
        size = ops.square(2.0 * sigma[..., 2:4]) * anchor_wh
        level = ops.concatenate(
            [centre_x[..., None], centre_y[..., None], size, sigma[..., 4:]], axis=-1
        )
        # (batch, H, W, A, F) -> (batch, A, H, W, F): the official flattening order.
        level = ops.transpose(level, (0, 3, 1, 2, 4))
        decoded.append(ops.reshape(level, (shape[0], num_anchors * height * width, fields)))
    return ops.concatenate(decoded, axis=1)
