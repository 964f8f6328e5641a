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
# With no class list, the class count is inferred from the largest class id,
# but only up to this many classes (LVIS has 1203, Open Images 600): a label
# typo such as `1e15` must not size a head (or a list of names) by itself.
MAX_INFERRED_CLASSES = 2048
# Class lists looked for beside the labels when none is given.
CLASS_LIST_FILES = ("classes.txt", "data.yaml", "dataset.yaml", "data.yml")


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
            neither, a class list beside the labels is used (`classes.txt`,
            one name a line, or a `data.yaml`/`dataset.yaml` with `names`
            or `nc`), looked for in the label folder and the two above it
            and beside the images. Without one either, the count is one more
            than the largest class id found, at most `MAX_INFERRED_CLASSES`
            (larger ids are counted skips), and it is printed.
        verify: "decode" (decode every image once, the safe default) or
            "header" (headers and end markers only); see `read_coco_json`.
        verbose: print the indexing summary.

    Returns:
        A `RecordSet` whose image ids are the positions in the sorted list.
    """
    image_paths, image_root = _list_images(os.fspath(images))
    if class_names is None and num_classes is None:
        class_names, num_classes = _class_list_beside(image_paths[0], image_root, labels, verbose)
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names given.")
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
        parsed, num_classes = _infer_num_classes(parsed, report, images, verbose)
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
        boxes, classes = clean_boxes(boxes, rows[:, 0], width, height, num_classes, report, name)
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


def _infer_num_classes(parsed, report, images, verbose):
    """Class count from the largest id, capped; ids over the cap are skipped."""
    kept = []
    for path, probe, name, rows in parsed:
        too_large = rows[:, 0] >= MAX_INFERRED_CLASSES
        if too_large.any():
            report.skip(reasons.CLASS_ID_OVER_CAP, name, int(too_large.sum()))
            rows = rows[~too_large]
        kept.append((path, probe, name, rows))
    used = set()
    for *_, rows in kept:
        used.update(int(value) for value in np.unique(rows[:, 0]))
    num_classes = max(used, default=-1) + 1
    if verbose:
        unused = num_classes - len(used)
        print(
            f"{os.fspath(images)}: no class list, so num_classes={num_classes} "
            f"is inferred from the largest class id"
            + (f" ({unused} ids below it never occur)" if unused else "")
            + "; pass class_names/num_classes or put a classes.txt beside the "
            f"labels (ids of {MAX_INFERRED_CLASSES} or more are never inferred)."
        )
    return kept, num_classes


def _class_list_beside(first_image, image_root, labels, verbose):
    """(class_names, num_classes) from a class list next to the data, if any."""
    label_folder = os.path.dirname(_label_path(first_image, image_root, labels))
    folders = [label_folder]
    for _ in range(2):
        folders.append(os.path.dirname(folders[-1]))
    folders += [image_root, os.path.dirname(os.path.abspath(image_root))]
    seen = set()
    for folder in folders:
        folder = os.path.abspath(folder)
        if folder in seen:
            continue
        seen.add(folder)
        for file_name in CLASS_LIST_FILES:
            path = os.path.join(folder, file_name)
            if not os.path.isfile(path):
                continue
            if file_name.endswith(".txt"):
                with open(path, encoding="utf-8") as file:
                    names = [line.strip() for line in file if line.strip()]
                found = (names, None)
            else:
                found = _names_and_count(_load_yaml(path), path)
            if found[0] is None and found[1] is None:
                continue  # a YAML without class information
            if verbose:
                count = len(found[0]) if found[0] is not None else found[1]
                print(f"{image_root}: {count} classes from {path}.")
            return found
    return None, None


def _load_yaml(path):
    with open(path, encoding="utf-8") as file:
        try:
            spec = yaml.safe_load(file)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error}).") from error
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top.")
    return spec


def _names_and_count(spec, path):
    """`names` (a list, or a {index: name} mapping) and `nc` of a data YAML."""
    names, num_classes = spec.get("names"), spec.get("nc")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: 'names' keys must be 0..{len(names) - 1}.")
        names = [names[index] for index in range(len(names))]
    if names is not None and not isinstance(names, list):
        raise ValueError(f"{path}: 'names' must be a list or an index mapping.")
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ValueError(f"{path}: 'nc' must be a positive integer, not {num_classes!r}.")
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{path}: nc={num_classes} but {len(names)} names.")
    return (None if names is None else [str(name) for name in names]), num_classes


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
    spec = _load_yaml(data_yaml)
    if split not in spec:
        raise ValueError(f"{data_yaml}: no '{split}' entry.")
    names, num_classes = _names_and_count(spec, data_yaml)
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
        paths = [line if os.path.isabs(line) else os.path.join(root, line) for line in lines]
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
