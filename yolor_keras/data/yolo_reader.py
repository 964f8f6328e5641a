"""Reads a YOLO txt dataset (`images/` + `labels/` with `class cx cy w h`)."""

import os

import numpy as np
import yaml

from yolor_keras.data import report as reasons
from yolor_keras.data.records import RecordSet
from yolor_keras.data.records import Sample
from yolor_keras.data.records import clean_boxes
from yolor_keras.data.records import finish_report
from yolor_keras.data.records import probe_images

IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".gif")


def read_yolo_txt(
    images,
    labels=None,
    class_names=None,
    num_classes=None,
    verify="decode",
    verbose=True,
):
    """Indexes a YOLO txt dataset into a validated `RecordSet`.

    Each image has a label file of lines `class cx cy w h`, the box
    normalised to [0, 1] by the image size. As in the official loader, an
    image without a label file is a background image (it is counted).

    Args:
        images: a folder of images (searched recursively) or a `.txt` file
            listing image paths (relative ones are taken from the list's
            folder).
        labels: the folder of label files, mirroring `images`. By default
            the official rule: the last `images` folder in each image path
            is replaced by `labels` and the suffix by `.txt`.
        class_names: the class names; their number sets `num_classes`.
        num_classes: the number of classes when there are no names. With
            neither, it is one more than the largest class id found.
        verify: "decode" (decode every image once, the safe default) or
            "header" (headers and end markers only); see `read_coco_json`.
        verbose: print the indexing summary.

    Returns:
        A `RecordSet` whose image ids are the positions in the sorted list.
    """
    image_paths, image_root = _list_images(os.fspath(images))
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"num_classes={num_classes} but {len(class_names)} class names given."
            )
        num_classes = len(class_names)
    report = reasons.DataReport(os.fspath(images))
    report.num_indexed = len(image_paths)
    probes = probe_images(image_paths, report, decode=verify == "decode")

    parsed = []
    for path, probe in zip(image_paths, probes):
        if probe.problem is not None:
            continue
        label_path = _label_path(path, image_root, labels)
        name = os.path.relpath(path, image_root)
        rows = _read_label_file(label_path, report, name)
        parsed.append((path, probe, name, rows))

    if num_classes is None:
        largest = max(
            (int(rows[:, 0].max()) for *_, rows in parsed if len(rows)), default=-1
        )
        num_classes = largest + 1
    if class_names is None:
        class_names = [str(index) for index in range(num_classes)]

    samples = []
    for image_id, (path, probe, name, rows) in enumerate(parsed):
        width, height = probe.width, probe.height
        cx, cy, w, h = (rows[:, column] for column in range(1, 5))
        boxes = np.stack(
            [
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            ],
            axis=-1,
        )
        boxes, classes = clean_boxes(
            boxes, rows[:, 0], width, height, num_classes, report, name
        )
        samples.append(
            Sample(
                image=probe.data if probe.data is not None else path,
                boxes=boxes,
                classes=classes,
                image_id=image_id,
                height=height,
                width=width,
                name=name,
            )
        )
    finish_report(report, samples, verbose)
    return RecordSet(
        samples,
        class_names,
        report=report,
        name=os.fspath(images),
        fully_verified=verify == "decode",
    )


def read_yolo_data_yaml(data_yaml, split, verify="decode", verbose=True):
    """Reads one split of an official-style data YAML (`coco.yaml`).

    Args:
        data_yaml: path of a YAML file with `names` (or `nc`) and a path per
            split (`train:`, `val:`, ...), relative to the YAML's folder.
        split: which split key to read, e.g. "train" or "val".
        verify: see `read_yolo_txt`.
        verbose: print the indexing summary.

    Returns:
        A `RecordSet`.
    """
    data_yaml = os.fspath(data_yaml)
    with open(data_yaml, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    if not isinstance(spec, dict) or split not in spec:
        raise ValueError(f"{data_yaml}: no '{split}' entry.")
    names = spec.get("names")
    num_classes = spec.get("nc")
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{data_yaml}: nc={num_classes} but {len(names)} names.")
    images = spec[split]
    if not os.path.isabs(images):
        images = os.path.join(os.path.dirname(os.path.abspath(data_yaml)), images)
    return read_yolo_txt(
        images,
        class_names=names,
        num_classes=num_classes,
        verify=verify,
        verbose=verbose,
    )


def _list_images(images):
    if os.path.isdir(images):
        paths = []
        for folder, _, files in os.walk(images):
            paths += [
                os.path.join(folder, name)
                for name in files
                if name.lower().endswith(IMAGE_SUFFIXES)
            ]
        root = images
    elif os.path.isfile(images) and images.endswith(".txt"):
        root = os.path.dirname(os.path.abspath(images))
        with open(images, encoding="utf-8") as file:
            lines = [line.strip() for line in file if line.strip()]
        paths = [
            line if os.path.isabs(line) else os.path.join(root, line) for line in lines
        ]
        paths = [os.path.normpath(path) for path in paths]
    else:
        raise FileNotFoundError(f"No image folder or .txt image list at: {images}")
    if not paths:
        raise ValueError(f"{images}: no images found (suffixes {IMAGE_SUFFIXES}).")
    return sorted(paths), root


def _label_path(image_path, image_root, labels):
    stem = os.path.splitext(image_path)[0]
    if labels is not None:
        relative = os.path.relpath(stem, image_root)
        return os.path.join(os.fspath(labels), relative + ".txt")
    parts = stem.split(os.sep)
    for position in range(len(parts) - 1, -1, -1):
        if parts[position] == "images":
            parts[position] = "labels"
            break
    return os.sep.join(parts) + ".txt"


def _read_label_file(label_path, report, name):
    """Parses one label file into an (n, 5) float array, dropping bad lines."""
    if not os.path.isfile(label_path):
        report.note(reasons.MISSING_LABEL_FILE, name)
        return np.zeros((0, 5), np.float64)
    rows, seen = [], set()
    with open(label_path, encoding="utf-8", errors="replace") as file:
        for line in file:
            fields = line.split()
            if not fields:
                continue
            try:
                row = [float(field) for field in fields]
            except ValueError:
                row = None
            if row is None or len(row) != 5 or not np.isfinite(row).all():
                report.skip(reasons.BAD_LABEL_LINE, name)
                continue
            if row[0] != int(row[0]):
                report.skip(reasons.CLASS_OUT_OF_RANGE, name)
                continue
            if tuple(row) in seen:
                report.skip(reasons.DUPLICATE_LABEL, name)
                continue
            seen.add(tuple(row))
            rows.append(row)
    return np.asarray(rows, np.float64).reshape(-1, 5)
