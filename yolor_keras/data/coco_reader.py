"""Reads a COCO-format detection dataset (`instances_*.json` + image folder)."""

import json
import os

import numpy as np

from yolor_keras.data import report as reasons
from yolor_keras.data.records import RecordSet
from yolor_keras.data.records import Sample
from yolor_keras.data.records import clean_boxes
from yolor_keras.data.records import finish_report
from yolor_keras.data.records import probe_images


def read_coco_json(
    annotation_file,
    image_dir=None,
    include_crowd=False,
    verify="decode",
    verbose=True,
):
    """Indexes a COCO JSON dataset into a validated `RecordSet`.

    COCO category ids (1..90 with gaps for COCO itself) become contiguous
    class indices in increasing id order; `RecordSet.category_ids` maps them
    back. Images without annotations are kept as background images.

    Args:
        annotation_file: path of the `instances_*.json` file.
        image_dir: the folder holding the images named by `file_name`. By
            default the COCO layout is assumed: `annotations/instances_X.json`
            next to an image folder `X`.
        include_crowd: keep `iscrowd=1` annotations as ordinary boxes. The
            official YOLOR labels leave them out, and so does the default.
        verify: "decode" decodes every image once with TensorFlow, so that
            no corrupt file can stop training later; "header" only reads
            headers and end markers (fast, for very large datasets).
        verbose: print the indexing summary.

    Returns:
        A `RecordSet`.
    """
    annotation_file = os.fspath(annotation_file)
    coco = _load_json(annotation_file)
    image_dir = _resolve_image_dir(annotation_file, image_dir)
    report = reasons.DataReport(os.path.basename(annotation_file))

    categories = sorted(coco["categories"], key=lambda category: category["id"])
    category_ids = [int(category["id"]) for category in categories]
    class_names = [str(category.get("name", category["id"])) for category in categories]
    class_of_category = {cid: index for index, cid in enumerate(category_ids)}

    images = coco["images"]
    for position, image in enumerate(images):
        for key in ("id", "file_name"):
            if key not in image:
                raise ValueError(
                    f"{annotation_file}: images[{position}] has no '{key}' field."
                )
    objects = {int(image["id"]): [] for image in images}
    for annotation in coco["annotations"]:
        image_id = annotation.get("image_id")
        if image_id not in objects:
            report.skip(reasons.UNKNOWN_IMAGE, f"annotation {annotation.get('id')}")
            continue
        objects[image_id].append(annotation)

    paths = [os.path.join(image_dir, image["file_name"]) for image in images]
    report.num_indexed = len(images)
    probes = probe_images(paths, report, decode=verify == "decode")

    samples = []
    for image, path, probe in zip(images, paths, probes):
        if probe.problem is not None:
            continue
        name = image["file_name"]
        boxes, classes = _annotation_boxes(
            objects[int(image["id"])], class_of_category, include_crowd, report, name
        )
        annotated_size = (image.get("width"), image.get("height"))
        if all(annotated_size) and annotated_size != (probe.width, probe.height):
            # The boxes were drawn on the annotated size; follow the file.
            report.repair(reasons.SIZE_MISMATCH, name)
            boxes = boxes * np.array(
                [probe.width / annotated_size[0], probe.height / annotated_size[1]] * 2,
                np.float32,
            )
        boxes, classes = clean_boxes(
            boxes, classes, probe.width, probe.height, len(class_names), report, name
        )
        samples.append(
            Sample(
                image=probe.data if probe.data is not None else path,
                boxes=boxes,
                classes=classes,
                image_id=int(image["id"]),
                height=probe.height,
                width=probe.width,
                name=name,
            )
        )
    finish_report(report, samples, verbose)
    return RecordSet(
        samples,
        class_names,
        category_ids=category_ids,
        report=report,
        name=annotation_file,
        fully_verified=verify == "decode",
    )


def _load_json(annotation_file):
    try:
        with open(annotation_file, encoding="utf-8") as file:
            coco = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
    except json.JSONDecodeError as error:
        raise ValueError(f"{annotation_file}: not valid JSON ({error}).") from error
    if not isinstance(coco, dict):
        raise ValueError(f"{annotation_file}: expected a JSON object at the top.")
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{annotation_file}: missing the '{key}' list.")
    coco.setdefault("annotations", [])  # image_info files (test-dev) have none
    for position, category in enumerate(coco["categories"]):
        if "id" not in category:
            raise ValueError(f"{annotation_file}: categories[{position}] has no 'id'.")
    return coco


def _resolve_image_dir(annotation_file, image_dir):
    if image_dir is None:
        stem = os.path.splitext(os.path.basename(annotation_file))[0]
        split = stem.split("_", 1)[-1]  # instances_val2017 -> val2017
        root = os.path.dirname(os.path.dirname(os.path.abspath(annotation_file)))
        image_dir = os.path.join(root, split)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f"{annotation_file}: no image folder given and the COCO layout's "
                f"'{image_dir}' does not exist; pass image_dir."
            )
    elif not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image folder not found: {image_dir}")
    return os.fspath(image_dir)


def _annotation_boxes(annotations, class_of_category, include_crowd, report, name):
    boxes, classes = [], []
    for annotation in annotations:
        if annotation.get("iscrowd", 0) and not include_crowd:
            report.note(reasons.CROWD_EXCLUDED, name)
            continue
        category = annotation.get("category_id")
        if category not in class_of_category:
            report.skip(reasons.UNKNOWN_CATEGORY, name)
            continue
        bbox = annotation.get("bbox")
        try:
            x, y, w, h = (float(value) for value in bbox)
        except (TypeError, ValueError):
            report.skip(reasons.BAD_ANNOTATION, name)
            continue
        if not np.isfinite([x, y, w, h]).all():
            report.skip(reasons.BAD_ANNOTATION, name)
            continue
        boxes.append([x, y, x + w, y + h])
        classes.append(class_of_category[category])
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(classes, np.int32),
    )
