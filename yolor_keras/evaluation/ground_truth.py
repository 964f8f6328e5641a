"""The ground truth an evaluation scores against.

When a dataset was read from a COCO annotation file, the official `test.py`
scores with pycocotools against that file itself: crowd regions
(`iscrowd=1`) stay in as regions where detections are neither rewarded nor
punished, and the small / medium / large split uses each annotation's own
`area` (the segmentation area for COCO), not its box area. The reader's
records cannot stand in for it: they drop crowd regions (a detection on a
crowd becomes a false positive) and only know box areas.

Sources without an annotation file (YOLO txt, tfds) have no crowd or area
information; their ground truth is their own COCO export.
"""

import os

from yolor_keras.data.coco_reader import load_coco_file


def annotation_file(source):
    """The COCO annotation file a source was read from, or None.

    A `RecordSet` from `read_coco_json` is named after its file.
    """
    path = getattr(source, "annotation_file", None)
    if path is None:
        name = getattr(source, "name", None)
        if isinstance(name, (str, os.PathLike)) and os.fspath(name).lower().endswith(".json"):
            path = name
    if path is None or not os.path.isfile(path):
        return None
    return os.fspath(path)


def ground_truth(source):
    """COCO ground truth (a dict) to evaluate a source's detections against.

    Args:
        source: a `DetectionSource`.

    Returns:
        The source's annotation file as loaded (with `area` and `iscrowd`
        filled in only where an annotation lacks them), or, without a file,
        `source.to_coco_dict()`.
    """
    path = annotation_file(source)
    if path is None:
        return source.to_coco_dict()
    return load_annotation_file(path)


def load_annotation_file(path):
    """Loads a COCO annotation file for scoring, with clear errors.

    `load_coco_file` reads and checks the file (the reader's loader);
    this adds what scoring needs of each annotation.

    COCOeval needs `area` and `iscrowd` on every annotation; files that lack
    them get the box area and 0, which is how COCO defines them for boxes.
    """
    coco = load_coco_file(path)
    annotations = coco["annotations"]
    for position, annotation in enumerate(annotations):
        bbox = annotation.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(
                f"{path}: annotations[{position}] (id {annotation.get('id')}) has no "
                f"[x, y, width, height] 'bbox'; got {bbox!r}."
            )
        if "id" not in annotation:
            raise ValueError(f"{path}: annotations[{position}] has no 'id'.")
        annotation.setdefault("area", float(bbox[2]) * float(bbox[3]))
        annotation.setdefault("iscrowd", 0)
    return coco
