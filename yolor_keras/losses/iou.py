"""Complete IoU (CIoU) of box pairs, the overlap measure of YOLOR's box loss."""

import math

from keras import ops


def complete_iou(boxes1, boxes2, eps=1e-9):
    """Element-wise Complete IoU of two sets of boxes (Zheng et al., 2020).

    CIoU = IoU - rho² / c² - alpha · v, where rho is the distance between the
    box centres, c the diagonal of the smallest box enclosing both,
    v = 4/pi² · (atan(w2/h2) - atan(w1/h1))² the aspect-ratio mismatch and
    alpha = v / (1 - IoU + v) its weight. It equals 1 for identical boxes and
    can go down to -1.5 for distant ones.

    The constants follow YOLOR's box loss: ``eps`` is added to both heights,
    to the union and to c², and alpha is a constant for the gradient (it is
    computed under ``no_grad`` in the official code), so only IoU, the centre
    distance and v are differentiated. Unlike the official float32 code,
    identical boxes give exactly 1 rather than NaN.

    Args:
        boxes1: ``(..., 4)`` boxes as centre x, centre y, width, height; in
            the loss these are the predictions.
        boxes2: ``(..., 4)`` boxes in the same format and units, broadcastable
            against ``boxes1``; in the loss these are the targets.
        eps: small constant keeping the divisions finite for empty boxes.

    Returns:
        A ``(...)`` tensor of CIoU values.

    Example:

    ```python
    complete_iou([[5.0, 5.0, 10.0, 10.0]], [[5.0, 5.0, 10.0, 10.0]])  # [1.0]
    ```
    """
    boxes1 = ops.convert_to_tensor(boxes1)
    boxes2 = ops.cast(ops.convert_to_tensor(boxes2), boxes1.dtype)
    # Through the corners, as the reference does, so that widths and heights
    # carry the same rounding as the official numbers.
    left1, right1 = _edges(boxes1[..., 0], boxes1[..., 2])
    top1, bottom1 = _edges(boxes1[..., 1], boxes1[..., 3])
    left2, right2 = _edges(boxes2[..., 0], boxes2[..., 2])
    top2, bottom2 = _edges(boxes2[..., 1], boxes2[..., 3])

    overlap_w = ops.maximum(ops.minimum(right1, right2) - ops.maximum(left1, left2), 0.0)
    overlap_h = ops.maximum(ops.minimum(bottom1, bottom2) - ops.maximum(top1, top2), 0.0)
    intersection = overlap_w * overlap_h
    width1, height1 = right1 - left1, bottom1 - top1 + eps
    width2, height2 = right2 - left2, bottom2 - top2 + eps
    union = width1 * height1 + width2 * height2 - intersection + eps
    iou = intersection / union

    enclosing_w = ops.maximum(right1, right2) - ops.minimum(left1, left2)
    enclosing_h = ops.maximum(bottom1, bottom2) - ops.minimum(top1, top2)
    diagonal_sq = enclosing_w**2 + enclosing_h**2 + eps
    centre_dist_sq = (
        (left2 + right2 - left1 - right1) ** 2 + (top2 + bottom2 - top1 - bottom1) ** 2
    ) / 4.0

    # atan2(w, h) is atan(w / h) for h > 0, with a gradient that stays finite
    # when a predicted height collapses to ~eps; TensorFlow's graph rewrites
    # of the w / h gradient turned such cases into NaN.
    aspect = (4.0 / math.pi**2) * (ops.arctan2(width2, height2) - ops.arctan2(width1, height1)) ** 2
    # For identical boxes in float32, 1 + eps rounds to 1 and this is 0 / 0
    # (NaN in the official code); the aspect term is 0 there anyway.
    alpha = ops.stop_gradient(ops.divide_no_nan(aspect, (1.0 + eps) - iou + aspect))
    return iou - (centre_dist_sq / diagonal_sq + aspect * alpha)


def _edges(centre, size):
    half = size / 2.0
    return centre - half, centre + half
