"""Post-processing of decoded YOLOR predictions: NMS and letterbox mapping.

Everything here is TensorFlow so that it can live inside exported graphs
(SavedModel, TFLite, ONNX). The NMS uses only ops that the TFLite converter
maps to built-in kernels (`TopKV2`, `GatherV2`, `NonMaxSuppressionV4`): the
`CombinedNonMaxSuppression` op would need select-TF ops, which the LiteRT
runtime cannot run.
"""

import tensorflow as tf

# At the official evaluation threshold (0.001) an image can have millions of
# (box, class) pairs above it, so only the best-scoring `max_candidates` pairs
# enter the greedy NMS (as in later YOLO releases). Greedy NMS visits
# candidates in score order, so the cap changes nothing unless fewer than
# `max_detections` boxes survive among those pairs.
DEFAULT_MAX_CANDIDATES = 30000

# Padding value of `classes` past `num_detections`, as in the ground-truth
# format of `yolor_keras.data`.
PADDING_CLASS = -1


def non_max_suppression(
    decoded,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=300,
    multi_label=False,
    class_agnostic=False,
    max_candidates=DEFAULT_MAX_CANDIDATES,
):
    """Filters decoded predictions by score and removes overlapping boxes.

    The semantics follow the official YOLOR: the score of a (box, class) pair
    is ``objectness * class_probability``; pairs with ``score > conf_threshold``
    are candidates; with `multi_label` every such pair of a box is a candidate,
    otherwise only the box's best class. Greedy NMS runs per class (a box
    suppresses another when their IoU is above `iou_threshold`) through one
    NMS call on boxes shifted by ``class * offset``, so that boxes of different
    classes never overlap.

    Args:
        decoded: float tensor `(batch, num_boxes, 5 + num_classes)` with
            `[cx, cy, w, h, objectness, class scores...]`, box in input pixels
            and scores in [0, 1], as returned by
            `yolor_keras.models.decode_predictions`.
        conf_threshold: keep pairs whose score is strictly above this.
        iou_threshold: suppress a box whose IoU with a kept box of the same
            class is strictly above this.
        max_detections: detections kept per image; the outputs are padded to
            this length.
        multi_label: keep every class of a box whose score passes
            `conf_threshold` (the official evaluation setting), instead of only
            the best class.
        class_agnostic: run NMS over all boxes regardless of class.
        max_candidates: at most this many of the best-scoring (box, class)
            pairs per image enter NMS.

    Returns:
        A dict of tensors with static trailing shapes:
        - `"boxes"`: `(batch, max_detections, 4)` float32 `[x1, y1, x2, y2]`
          in input pixels, zeros past `num_detections`.
        - `"scores"`: `(batch, max_detections)` float32, sorted descending,
          zeros past `num_detections`.
        - `"classes"`: `(batch, max_detections)` int32 class indices, -1 past
          `num_detections`.
        - `"num_detections"`: `(batch,)` int32.

    Example:
    ```python
    raw = detector(images)
    decoded = decode_predictions(raw, detector.anchors, detector.strides)
    detections = non_max_suppression(decoded, conf_threshold=0.25)
    ```
    """
    _check_threshold("conf_threshold", conf_threshold)
    _check_threshold("iou_threshold", iou_threshold)
    for name, value in (("max_detections", max_detections), ("max_candidates", max_candidates)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")

    decoded = tf.convert_to_tensor(decoded)
    if decoded.shape.rank != 3 or (decoded.shape[-1] is not None and decoded.shape[-1] < 6):
        raise ValueError(
            "`decoded` must have shape (batch, num_boxes, 5 + num_classes) with at "
            f"least one class; got shape {decoded.shape}."
        )
    if decoded.shape[-1] is None:
        raise ValueError("`decoded` needs a static last dimension (5 + num_classes).")
    decoded = tf.cast(decoded, tf.float32)
    num_classes = decoded.shape[-1] - 5

    boxes = _center_to_corners(decoded[..., :4])
    objectness = decoded[..., 4:5]
    class_scores = decoded[..., 5:]

    # Stage 1, boxes: a box can only contribute pairs scoring above the
    # threshold if its best pair does, and the best K pairs all come from the
    # best K boxes ranked by their best pair; so two small top-k passes select
    # exactly what one top-k over all pairs would. obj * max(cls) equals
    # max(obj * cls) exactly (rounding is monotonic).
    box_scores = objectness[..., 0] * tf.reduce_max(class_scores, axis=-1)
    num_boxes = _count_above(box_scores, conf_threshold, max_candidates)
    candidate_scores, box_index = tf.math.top_k(box_scores, k=num_boxes, sorted=True)

    if multi_label:
        # Stage 2, pairs of the surviving boxes; a flat index encodes both.
        pair_scores = tf.gather(class_scores, box_index, batch_dims=1) * tf.gather(
            objectness, box_index, batch_dims=1
        )
        pair_scores = tf.reshape(pair_scores, [tf.shape(pair_scores)[0], -1])
        num_pairs = _count_above(pair_scores, conf_threshold, max_candidates)
        candidate_scores, flat_index = tf.math.top_k(pair_scores, k=num_pairs, sorted=True)
        box_index = tf.gather(box_index, flat_index // num_classes, batch_dims=1)
        candidate_classes = flat_index % num_classes
    else:
        best_classes = tf.argmax(class_scores, axis=-1, output_type=tf.int32)
        candidate_classes = tf.gather(best_classes, box_index, batch_dims=1)
    candidate_boxes = tf.gather(boxes, box_index, batch_dims=1)

    if class_agnostic:
        nms_boxes = candidate_boxes
    else:
        # One span larger than any box's extent, so shifted classes never meet.
        # Derived from the data rather than the official constant 4096 to keep
        # float32 precision on the shifted coordinates (and to allow > 4096 px).
        span = tf.reduce_max(candidate_boxes, axis=[1, 2]) - tf.reduce_min(
            candidate_boxes, axis=[1, 2]
        )
        offset = tf.cast(candidate_classes, tf.float32) * (span[:, None] + 1.0)
        nms_boxes = candidate_boxes + offset[..., None]

    def select(per_image):
        image_boxes, image_scores = per_image
        indices, count = tf.raw_ops.NonMaxSuppressionV4(
            boxes=image_boxes,
            scores=image_scores,
            max_output_size=max_detections,
            iou_threshold=float(iou_threshold),
            score_threshold=float(conf_threshold),
            pad_to_max_output_size=True,
        )
        return tf.ensure_shape(indices, [max_detections]), count

    keep, num_detections = tf.map_fn(
        select,
        (nms_boxes, candidate_scores),
        fn_output_signature=(
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )

    valid = tf.range(max_detections)[None, :] < num_detections[:, None]
    out_boxes = tf.where(valid[..., None], tf.gather(candidate_boxes, keep, batch_dims=1), 0.0)
    out_scores = tf.where(valid, tf.gather(candidate_scores, keep, batch_dims=1), 0.0)
    out_classes = tf.where(valid, tf.gather(candidate_classes, keep, batch_dims=1), PADDING_CLASS)
    return {
        "boxes": out_boxes,
        "scores": out_scores,
        "classes": out_classes,
        "num_detections": num_detections,
    }


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


def _center_to_corners(boxes):
    """`[cx, cy, w, h]` -> `[x1, y1, x2, y2]`."""
    center, size = boxes[..., :2], boxes[..., 2:4]
    return tf.concat([center - size / 2.0, center + size / 2.0], axis=-1)


def _count_above(scores, threshold, limit):
    """How many candidates to take from `scores` (batch, n): the most that pass
    `threshold` in any image, at most `limit`.

    Sizing `top_k` by the data rather than by `limit` matters: at
    deploy-time thresholds only a few boxes pass, and a fixed k of 30000 over
    two million pairs would cost more than the NMS itself.
    """
    passing = tf.reduce_sum(tf.cast(scores > threshold, tf.int32), axis=1)
    # At least one, so that the padded indices NMS returns for an image with
    # no detections still point at a real (below-threshold) candidate.
    return tf.clip_by_value(tf.reduce_max(passing), 1, limit)


def _check_threshold(name, value):
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}.")
