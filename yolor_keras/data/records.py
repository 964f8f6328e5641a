"""The in-memory record form every reader produces, and what it can do.

A reader turns a dataset on disk into a `RecordSet`: a list of `Sample`s
(image file or bytes, boxes in original pixels, classes, image id and size)
plus the class names. Everything downstream (decoding, augmentation,
batching, ground truth for the evaluator) works from that form only.
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data import report as reasons
from yolor_keras.data.image_check import probe_image
from yolor_keras.data.image_check import resolve_orientations

_CLIP_TOLERANCE_PX = 0.5  # rounding noise in annotations is not worth a count
_PROBE_CHUNK = 512


@dataclasses.dataclass
class Sample:
    """One image and its objects.

    Args:
        image: the image file path, or its encoded bytes (e.g. re-encoded).
        boxes: (n, 4) float32 xyxy boxes in original image pixels.
        classes: (n,) int32 contiguous class indices in [0, num_classes).
        image_id: integer id (the COCO image id where there is one).
        height: original image height in pixels, as displayed: with a JPEG's
            EXIF orientation applied (a portrait phone photo stored as
            landscape pixels is taller than wide here, as in the decoded
            pixels and in annotation tools).
        width: original image width in pixels, as displayed.
        name: the file name used in messages and in the COCO export.
    """

    image: object
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int
    height: int
    width: int
    name: str


class DetectionSource:
    """A dataset the pipeline can read: a class list and encoded samples.

    Subclasses provide `class_names`, `category_ids`, `num_samples`, `report`
    and `encoded_dataset`. The elements of `encoded_dataset` are dicts:

    - "image": tf.string, a file path or the encoded image bytes,
    - "is_path": tf.bool, which of the two "image" is,
    - "boxes": (n, 4) float32 xyxy boxes normalised to [0, 1],
    - "classes": (n,) int32,
    - "image_id": int64.
    """

    class_names = ()
    category_ids = None
    report = None
    # True when every image was decoded once at index time, so decoding in
    # the pipeline cannot fail; otherwise the pipeline skips (and logs) any
    # image that fails to decode instead of stopping.
    fully_verified = False

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def num_samples(self):
        raise NotImplementedError

    def encoded_dataset(self, shuffle=False, seed=None):
        """Returns the `tf.data.Dataset` of encoded samples.

        Args:
            shuffle: shuffle the samples, differently on each iteration.
            seed: shuffle seed, for reproducible orders.
        """
        raise NotImplementedError

    def to_coco_dict(self):
        """Returns the ground truth as a COCO-format dict (original pixels)."""
        raise NotImplementedError


class RecordSet(DetectionSource):
    """A list of validated samples with their class names.

    Args:
        samples: list of `Sample`.
        class_names: the name of each contiguous class index.
        category_ids: the original (e.g. COCO) category id of each class
            index, or None when the classes were contiguous already.
        report: the `DataReport` of the indexing that produced the samples.
        name: the dataset's name in messages.
        fully_verified: every image was decoded once at index time.
    """

    def __init__(
        self,
        samples,
        class_names,
        category_ids=None,
        report=None,
        name="",
        fully_verified=False,
    ):
        self.samples = list(samples)
        self.fully_verified = fully_verified
        self.class_names = tuple(class_names)
        self.category_ids = None if category_ids is None else tuple(category_ids)
        self.report = report if report is not None else reasons.DataReport(name)
        self.name = name
        if self.category_ids is not None and len(self.category_ids) != len(self.class_names):
            raise ValueError(
                f"{name}: {len(self.category_ids)} category ids for "
                f"{len(self.class_names)} class names."
            )

    def __len__(self):
        return len(self.samples)

    @property
    def num_samples(self):
        return len(self.samples)

    def encoded_dataset(self, shuffle=False, seed=None):
        images, is_path, lengths, boxes, classes, ids = [], [], [], [], [], []
        for sample in self.samples:
            raw = sample.image
            is_path.append(not isinstance(raw, bytes))
            images.append(raw if isinstance(raw, bytes) else os.fsencode(raw))
            lengths.append(len(sample.classes))
            scale = np.array([sample.width, sample.height, sample.width, sample.height], np.float32)
            boxes.append(np.asarray(sample.boxes, np.float32).reshape(-1, 4) / scale)
            classes.append(np.asarray(sample.classes, np.int32))
            ids.append(sample.image_id)
        flat_boxes = np.concatenate(boxes or [np.zeros((0, 4))]).astype(np.float32)
        flat_classes = np.concatenate(classes or [np.zeros((0,))]).astype(np.int32)
        dataset = tf.data.Dataset.from_tensor_slices(
            {
                "image": tf.constant(images, tf.string),
                "is_path": tf.constant(is_path, tf.bool),
                "boxes": tf.RaggedTensor.from_row_lengths(flat_boxes, lengths),
                "classes": tf.RaggedTensor.from_row_lengths(flat_classes, lengths),
                "image_id": tf.constant(ids, tf.int64),
            }
        )
        if shuffle:
            # Shuffling records (paths, not pixels) is cheap at any size.
            dataset = dataset.shuffle(len(self.samples), seed=seed, reshuffle_each_iteration=True)
        return dataset

    def to_coco_dict(self):
        categories = [
            {"id": int(self._category_id(index)), "name": name}
            for index, name in enumerate(self.class_names)
        ]
        images, annotations = [], []
        for sample in self.samples:
            images.append(
                {
                    "id": int(sample.image_id),
                    "file_name": sample.name,
                    "width": int(sample.width),
                    "height": int(sample.height),
                }
            )
            for box, label in zip(sample.boxes, sample.classes):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(sample.image_id),
                        "category_id": int(self._category_id(int(label))),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        return {"images": images, "annotations": annotations, "categories": categories}

    def _category_id(self, index):
        return index if self.category_ids is None else self.category_ids[index]

    def __repr__(self):
        return (
            f"RecordSet(name={self.name!r}, samples={len(self.samples)}, "
            f"classes={len(self.class_names)})"
        )


def clean_boxes(boxes, classes, width, height, num_classes, report, file_name):
    """Clips boxes to the image and drops the unusable ones, counting both.

    Args:
        boxes: (n, 4) xyxy boxes in pixels.
        classes: (n,) integer class indices.
        width: image width in pixels.
        height: image height in pixels.
        num_classes: valid classes are [0, num_classes); None skips the check.
        report: the `DataReport` to count in.
        file_name: the name to report problems under.

    Returns:
        (boxes float32 (m, 4), classes int32 (m,)) with m <= n.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    keep = np.ones(len(classes), bool)
    if num_classes is not None:
        in_range = (classes >= 0) & (classes < num_classes)
    else:
        in_range = classes >= 0
    if (~in_range).any():
        report.skip(reasons.CLASS_OUT_OF_RANGE, file_name, int((~in_range).sum()))
        keep &= in_range

    limits = np.array([width, height, width, height], np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    non_empty = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    dropped = keep & ~non_empty
    if dropped.any():
        report.skip(reasons.EMPTY_BOX, file_name, int(dropped.sum()))
    keep &= non_empty
    moved = np.abs(clipped - boxes).max(axis=1, initial=0.0) > _CLIP_TOLERANCE_PX
    if (moved & keep).any():
        report.repair(reasons.BOX_CLIPPED, file_name, int((moved & keep).sum()))
    return clipped[keep].astype(np.float32), classes[keep].astype(np.int32)


def probe_images(paths, report, decode=False, desc="Checking images"):
    """Probes many images in parallel threads, with a progress bar.

    Images that cannot be used are counted in `report` (as skipped); images
    that will be converted to RGB or were re-encoded are counted as repaired.

    Args:
        paths: image file paths.
        report: the `DataReport` to count in.
        decode: fully decode each image with TensorFlow (see `probe_image`).
        desc: the progress bar's label.

    Returns:
        A list of `ImageProbe`, one per path, in order.
    """
    workers = min(16, (os.cpu_count() or 1) * 4)  # mostly file I/O
    probes = []
    with (
        concurrent.futures.ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(paths), desc=desc, disable=len(paths) < 1000, leave=False) as progress,
    ):
        # In chunks: probes of JPEGs with Exif hold up to 128 KiB of header
        # until their orientations are read, in one batched call per chunk.
        for start in range(0, len(paths), _PROBE_CHUNK):
            chunk = list(
                pool.map(
                    lambda path: probe_image(path, decode=decode, defer_orientation=True),
                    paths[start : start + _PROBE_CHUNK],
                )
            )
            resolve_orientations(chunk)
            probes += chunk
            progress.update(len(chunk))
    for path, probe in zip(paths, probes):
        name = os.path.basename(path)
        if probe.problem is not None:
            report.skip(probe.problem, name)
            continue
        if probe.data is not None:
            report.repair(reasons.REENCODED, name)
        if probe.needs_rgb_conversion:
            report.repair(reasons.CONVERTED_TO_RGB, name)
    return probes


def finish_report(report, samples, verbose):
    """Completes the report, prints its summary and rejects empty datasets.

    Args:
        report: the `DataReport` of the indexing.
        samples: the usable samples.
        verbose: print the summary.
    """
    report.num_usable = len(samples)
    if verbose:
        print(report.summary())
    if not samples:
        raise ValueError(
            f"{report.name}: no usable images (of {report.num_indexed} indexed).\n"
            + report.summary()
        )
