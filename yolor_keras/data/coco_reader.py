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

    Bad entries never stop indexing: an image entry without an integer id,
    with a `file_name` that is not a string or that resolves outside
    `image_dir` (`../x.jpg`, absolute paths, symlinks out), or with a
    `width`/`height` that is not a positive number is a counted skip in the
    report. Two entries with one id are an error (their boxes would merge).

    `width`/`height` describe the displayed image, with a JPEG's EXIF
    orientation applied (as annotation tools and pycocotools-era datasets
    do); images are decoded that way too, so a phone photo stored turned a
    quarter needs no repair. A real size mismatch rescales the boxes to the
    file (counted as repaired).

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
    coco = load_coco_file(annotation_file)
    image_dir = _resolve_image_dir(annotation_file, image_dir)
    report = reasons.DataReport(os.path.basename(annotation_file))

    categories = sorted(coco["categories"], key=lambda category: category["id"])
    category_ids = [category["id"] for category in categories]
    class_names = [str(category.get("name", category["id"])) for category in categories]
    class_of_category = {cid: index for index, cid in enumerate(category_ids)}

    entries, known_ids = _image_entries(coco["images"], annotation_file, image_dir, report)
    # Annotations of images skipped above are not "unknown": their image
    # was counted once already.
    objects = {image_id: [] for image_id in known_ids}
    for position, annotation in enumerate(coco["annotations"]):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not _is_integer(image_id) or image_id not in objects:
            report.skip(reasons.UNKNOWN_IMAGE, f"annotations[{position}]")
            continue
        objects[image_id].append(annotation)

    report.num_indexed = len(coco["images"])
    probes = probe_images([path for _, _, path, _ in entries], report, decode=verify == "decode")

    samples = []
    for (image_id, name, path, annotated_size), probe in zip(entries, probes):
        if probe.problem is not None:
            continue
        boxes, classes = _annotation_boxes(
            objects[image_id], class_of_category, include_crowd, report, name
        )
        # probe.width/height are the displayed size (EXIF orientation
        # applied), which is also what COCO's width/height describe, so a
        # rotated photo annotated on its displayed form needs no repair.
        if annotated_size is not None and annotated_size != (probe.width, probe.height):
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
                image_id=image_id,
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


def _is_integer(value):
    # bool is an int subclass, but `true` is no image id.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    )


def _image_entries(images, annotation_file, image_dir, report):
    """Validates the `images` list.

    Returns (entries, ids): an (id, file_name, path, annotated size or None)
    tuple per usable entry, and the set of every valid id seen.

    Entries that cannot be used are counted skips, never tracebacks: a
    missing or non-integer id, a `file_name` that is not a string or that
    resolves outside the image folder (`../x.jpg`, an absolute path, a
    symlink out), a `width`/`height` that is not a positive number. Two
    entries with one id would merge their boxes, so that is an error.
    """
    root = os.path.realpath(image_dir)
    entries, first_entry = [], {}
    for position, image in enumerate(images):
        where = f"images[{position}]"
        if not isinstance(image, dict) or not _is_integer(image.get("id")):
            report.skip(reasons.BAD_IMAGE_ENTRY, where)
            continue
        image_id, name = image["id"], image.get("file_name")
        if image_id in first_entry:
            raise ValueError(
                f"{annotation_file}: image id {image_id} is used twice, by "
                f"images[{first_entry[image_id]}] and {where} (file_name "
                f"{name!r}); each image needs its own id."
            )
        first_entry[image_id] = position
        if not isinstance(name, str) or not name:
            report.skip(reasons.BAD_FILE_NAME, f"{where} (id {image_id})")
            continue
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, path]) != root or path == root:
            report.skip(reasons.PATH_OUTSIDE_ROOT, name)
            continue
        width, height = image.get("width"), image.get("height")
        if width is None or height is None:
            annotated_size = None  # not annotated: nothing to check against
        elif _is_size(width) and _is_size(height):
            annotated_size = (width, height)
        else:
            report.skip(reasons.BAD_IMAGE_SIZE, name)
            continue
        entries.append((image_id, name, path, annotated_size))
    return entries, set(first_entry)


def load_coco_file(annotation_file):
    """Loads a COCO JSON file, checking its top-level structure.

    The project's one COCO JSON loader: the reader, the evaluation ground
    truth and the identity reader all go through it.

    Returns:
        The parsed dict, with "images", "categories" and "annotations"
        lists (an absent "annotations" becomes []) and unique integer
        category ids.

    Raises:
        FileNotFoundError, ValueError: naming the file.
    """
    try:
        with open(annotation_file, encoding="utf-8") as file:
            coco = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{annotation_file}: not valid JSON ({error}).") from error
    if not isinstance(coco, dict):
        raise ValueError(f"{annotation_file}: expected a JSON object at the top.")
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{annotation_file}: missing the '{key}' list.")
    coco.setdefault("annotations", [])  # image_info files (test-dev) have none
    if not isinstance(coco["annotations"], list):
        raise ValueError(f"{annotation_file}: 'annotations' is not a list.")
    seen = set()
    for position, category in enumerate(coco["categories"]):
        if not isinstance(category, dict) or not _is_integer(category.get("id")):
            raise ValueError(f"{annotation_file}: categories[{position}] has no integer 'id'.")
        if category["id"] in seen:
            raise ValueError(f"{annotation_file}: category id {category['id']} is used twice.")
        seen.add(category["id"])
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
        if not _is_integer(category) or category not in class_of_category:
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
