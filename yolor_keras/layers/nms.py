"""`NonMaxSuppression`: the prediction decoder of `YOLORObjectDetector`.

Everything here is TensorFlow so that it can live inside exported graphs
(SavedModel, TFLite, ONNX); like Keras' preprocessing layers, the layer runs
on the TensorFlow backend. The NMS uses only ops that the TFLite converter
maps to built-in kernels (`TopKV2`, `GatherV2`, `NonMaxSuppressionV4`): the
`CombinedNonMaxSuppression` op would need select-TF ops, which the LiteRT
runtime cannot run.
"""

import keras
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
    decoded = task.decode(task(images))
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


@keras.saving.register_keras_serializable(package="yolor_keras")
class NonMaxSuppression(keras.layers.Layer):
    """Decoded predictions -> final detections, holding the NMS settings.

    The prediction decoder of `YOLORObjectDetector`: ``task.detect(images)``
    and ``task.predict(images)`` end with it, and so do the exported graphs.
    Settings and outputs are those of `non_max_suppression`.

    Args:
        conf_threshold, iou_threshold, max_detections, multi_label,
            class_agnostic, max_candidates: see `non_max_suppression`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    decoder = NonMaxSuppression(conf_threshold=0.001, iou_threshold=0.65, max_detections=300)
    detections = decoder(decoded)  # {"boxes", "scores", "classes", "num_detections"}
    ```
    """

    def __init__(
        self,
        conf_threshold=0.25,
        iou_threshold=0.45,
        max_detections=300,
        multi_label=False,
        class_agnostic=False,
        max_candidates=DEFAULT_MAX_CANDIDATES,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_threshold("conf_threshold", conf_threshold)
        _check_threshold("iou_threshold", iou_threshold)
        for name, value in (("max_detections", max_detections), ("max_candidates", max_candidates)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.multi_label = bool(multi_label)
        self.class_agnostic = bool(class_agnostic)
        self.max_candidates = int(max_candidates)

    def settings(self):
        """The keyword arguments of `non_max_suppression` this layer applies."""
        return {
            "conf_threshold": self.conf_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "multi_label": self.multi_label,
            "class_agnostic": self.class_agnostic,
            "max_candidates": self.max_candidates,
        }

    def call(self, decoded):
        return non_max_suppression(decoded, **self.settings())

    def get_config(self):
        config = super().get_config()
        config.update(self.settings())
        return config


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
