"""Conversion of padded detection / label batches into COCO-format records.

Batches come as padded arrays (the output of `non_max_suppression`, or the
labels of `yolor_keras.data`); COCO wants one record per object with an
`[x, y, width, height]` box and a category id. Rows are kept as NumPy arrays
until evaluation because a full COCO run holds about 1.5M detections.
"""

import numpy as np

# Columns of a detection row, the layout `COCO.loadRes` also accepts.
DETECTION_ROW_COLUMNS = ("image_id", "x", "y", "width", "height", "score", "category_id")


def detections_to_rows(image_ids, detections, category_ids):
    """Flattens a padded batch of detections into `(N, 7)` COCO result rows.

    Args:
        image_ids: `(batch,)` integer COCO image ids.
        detections: mapping with `"boxes"` `(batch, M, 4)` `[x1, y1, x2, y2]`,
            `"scores"` `(batch, M)`, `"classes"` `(batch, M)` contiguous class
            indices, and optionally `"num_detections"` `(batch,)`. Entries at
            or past `num_detections`, or with a negative class, are padding.
        category_ids: COCO category id of each contiguous class index.

    Returns:
        float64 array `(N, 7)` with columns `DETECTION_ROW_COLUMNS`.
    """
    image_ids = _image_id_array(image_ids)
    for key in ("boxes", "scores", "classes"):
        if key not in detections:
            raise ValueError(
                f"`detections` is missing the field {key!r}; it needs 'boxes', "
                "'scores', 'classes' and optionally 'num_detections'."
            )
    boxes = np.asarray(detections["boxes"], np.float64)
    scores = np.asarray(detections["scores"], np.float64)
    classes = np.asarray(detections["classes"]).astype(np.int64)
    batch = len(image_ids)
    _check_shape("detections['boxes']", boxes, (batch, None, 4))
    _check_shape("detections['scores']", scores, (batch, boxes.shape[1]))
    _check_shape("detections['classes']", classes, (batch, boxes.shape[1]))

    valid = classes >= 0
    if detections.get("num_detections") is not None:
        counts = np.asarray(detections["num_detections"]).astype(np.int64)
        _check_shape("detections['num_detections']", counts, (batch,))
        valid &= np.arange(boxes.shape[1])[None, :] < counts[:, None]

    category = _map_classes("detections['classes']", classes[valid], category_ids)
    picked = boxes[valid]
    rows = np.empty((len(picked), 7), np.float64)
    rows[:, 0] = np.broadcast_to(image_ids[:, None], valid.shape)[valid]
    rows[:, 1:3] = picked[:, 0:2]
    rows[:, 3:5] = picked[:, 2:4] - picked[:, 0:2]
    rows[:, 5] = scores[valid]
    rows[:, 6] = category
    return rows


def rows_to_results(rows):
    """COCO result records (`image_id`, `category_id`, `bbox`, `score`) from rows."""
    # Converting whole columns with tolist() is ~10x faster than per-element
    # float() calls, which matters for the ~1.5M detections of a COCO run.
    image_ids = rows[:, 0].astype(np.int64).tolist()
    category_ids = rows[:, 6].astype(np.int64).tolist()
    return [
        {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}
        for image_id, category_id, bbox, score in zip(
            image_ids, category_ids, rows[:, 1:5].tolist(), rows[:, 5].tolist()
        )
    ]


def labels_to_annotations(image_ids, labels, category_ids, first_annotation_id=1):
    """COCO ground-truth annotations from a padded batch of labels.

    Args:
        image_ids: `(batch,)` integer image ids.
        labels: mapping with `"boxes"` `(batch, G, 4)` `[x1, y1, x2, y2]` and
            `"classes"` `(batch, G)`, padded with class -1 (the format of
            `yolor_keras.data`).
        category_ids: COCO category id of each contiguous class index.
        first_annotation_id: id of the first returned annotation (COCO ids
            must be unique and non-zero).

    Returns:
        A list of annotation dicts with `bbox` `[x, y, w, h]`, `area` (the box
        area) and `iscrowd` 0.
    """
    image_ids = _image_id_array(image_ids)
    for key in ("boxes", "classes"):
        if key not in labels:
            raise ValueError(
                f"`ground_truth` is missing the field {key!r}; it needs 'boxes' and 'classes'."
            )
    boxes = np.asarray(labels["boxes"], np.float64)
    classes = np.asarray(labels["classes"]).astype(np.int64)
    batch = len(image_ids)
    _check_shape("ground_truth['boxes']", boxes, (batch, None, 4))
    _check_shape("ground_truth['classes']", classes, (batch, boxes.shape[1]))

    valid = classes >= 0
    category = _map_classes("ground_truth['classes']", classes[valid], category_ids)
    owners = np.broadcast_to(image_ids[:, None], valid.shape)[valid]
    annotations = []
    for index, (image_id, category_id, (x1, y1, x2, y2)) in enumerate(
        zip(owners, category, boxes[valid])
    ):
        width, height = float(x2 - x1), float(y2 - y1)
        annotations.append(
            {
                "id": first_annotation_id + index,
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [float(x1), float(y1), width, height],
                "area": width * height,
                "iscrowd": 0,
            }
        )
    return annotations


def _image_id_array(image_ids):
    ids = np.asarray(image_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"`image_ids` must be a 1-D sequence of integers; got {ids.dtype} "
            f"array of shape {ids.shape}."
        )
    return ids.astype(np.int64)


def _map_classes(field, classes, category_ids):
    """Contiguous class indices -> COCO category ids, with a clear error."""
    if classes.size and classes.max() >= len(category_ids):
        raise ValueError(
            f"{field} holds class index {int(classes.max())}, but only "
            f"{len(category_ids)} category ids are known; pass `category_ids` "
            "mapping every class index to its COCO category id."
        )
    return np.asarray(category_ids, np.int64)[classes]


def _check_shape(field, array, expected):
    matches = array.ndim == len(expected) and all(
        want is None or have == want for have, want in zip(array.shape, expected)
    )
    if not matches:
        wanted = tuple("*" if want is None else want for want in expected)
        raise ValueError(f"{field} must have shape {wanted}; got {array.shape}.")
