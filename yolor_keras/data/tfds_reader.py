"""Reads detection datasets from tensorflow-datasets (`coco/2017`, `voc/2007`)."""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data import exif
from yolor_keras.data import report as reasons
from yolor_keras.data.records import DetectionSource

# COCO's 80 detection classes in category-id order, with their ids: the
# tfds `coco/2017` labels are indices into these lists.
COCO_CLASS_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
COCO_CATEGORY_IDS = tuple(
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    + [22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42]
    + [43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61]
    + [62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84]
    + [85, 86, 87, 88, 89, 90]
)


class TFDSSource(DetectionSource):
    """A tensorflow-datasets detection split, streamed (nothing held in memory).

    Any tfds dataset with an `image` feature and an `objects` sequence of
    `bbox` (normalised ymin, xmin, ymax, xmax) and `label` works; `coco/*`
    and `voc/*` are the tested ones. Images stay encoded until the
    pipeline's parallel decode. tfds data was validated when it was
    prepared, so there is no index-time check: degenerate boxes are dropped
    in the graph without being counted. An image that fails to decode is
    skipped by the pipeline and counted in `report` (as the readers' images
    are), so `report.num_usable` falls below the split size.

    Args:
        name: the tfds name, e.g. "coco/2017" or "voc/2007".
        split: the split, e.g. "train" or "validation".
        data_dir: the tfds data folder (tfds' default when None).
        download: download and prepare the dataset if it is missing.
        include_crowd: keep COCO `is_crowd` objects (the default drops them).
        include_difficult: keep VOC `is_difficult` objects (dropped by
            default, as the official VOC conversion does).
        shuffle_buffer: encoded samples held for shuffling (the tfds files
            are shuffled too).
    """

    def __init__(
        self,
        name,
        split,
        data_dir=None,
        download=False,
        include_crowd=False,
        include_difficult=False,
        shuffle_buffer=2048,
    ):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        self.name = name
        self.split = split
        self.include_crowd = include_crowd
        self.include_difficult = include_difficult
        self.shuffle_buffer = shuffle_buffer
        self.builder = tfds.builder(name, data_dir=data_dir)
        if download:
            self.builder.download_and_prepare()
        features = self.builder.info.features
        if "image" not in features or "objects" not in features:
            raise ValueError(f"tfds:{name} has no 'image' and 'objects' features.")
        objects = features["objects"]
        for key in ("bbox", "label"):
            if key not in objects.feature:
                raise ValueError(f"tfds:{name}: 'objects' has no '{key}' feature.")
        self.class_names = tuple(objects["label"].names)
        is_coco = name.startswith("coco") and len(self.class_names) == 80
        self.category_ids = COCO_CATEGORY_IDS if is_coco else None
        if is_coco and all(label.isdigit() for label in self.class_names):
            # Without its prepared metadata (e.g. mocked), tfds only knows
            # the label count; the names are COCO's.
            self.class_names = COCO_CLASS_NAMES
        self.report = reasons.DataReport(f"tfds:{name}[{split}]")
        self.report.note("tfds split, not checked at index time", name)
        self._num_samples = None

    @property
    def num_samples(self):
        if self._num_samples is None:
            self._num_samples = self._count()
            self.report.num_indexed = self.report.num_usable = self._num_samples
        return self._num_samples

    def _count(self):
        split_info = self.builder.info.splits
        if self.split in split_info:
            return int(split_info[self.split].num_examples)
        cardinality = int(self._raw(shuffle=False, seed=None).cardinality())
        if cardinality >= 0:
            return cardinality
        return sum(1 for _ in tqdm(self._raw(shuffle=False, seed=None), desc="Counting"))

    def _raw(self, shuffle, seed):
        read_config = self._tfds.ReadConfig(shuffle_seed=seed)
        return self.builder.as_dataset(
            split=self.split,
            decoders={"image": self._tfds.decode.SkipDecoding()},
            shuffle_files=shuffle,
            read_config=read_config,
        )

    def encoded_dataset(self, shuffle=False, seed=None):
        dataset = self._raw(shuffle, seed).enumerate()
        dataset = dataset.map(self._to_element, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            buffer = max(1, min(self.shuffle_buffer, self.num_samples))
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        return dataset

    def _to_element(self, index, example):
        objects = example["objects"]
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(objects["bbox"], [-1, 4]), axis=-1)
        boxes = tf.stack([xmin, ymin, xmax, ymax], axis=-1)
        keep = (xmax > xmin) & (ymax > ymin)
        if "is_crowd" in objects and not self.include_crowd:
            keep &= tf.logical_not(objects["is_crowd"])
        if "is_difficult" in objects and not self.include_difficult:
            keep &= tf.logical_not(objects["is_difficult"])
        image_id = example["image/id"] if "image/id" in example else index
        return {
            "image": example["image"],
            "is_path": tf.constant(False),
            "boxes": tf.boolean_mask(tf.clip_by_value(boxes, 0.0, 1.0), keep),
            "classes": tf.cast(tf.boolean_mask(objects["label"], keep), tf.int32),
            "image_id": tf.cast(image_id, tf.int64),
        }

    def to_coco_dict(self):
        """Builds COCO ground truth by reading every image header once."""
        images, annotations = [], []
        # An image whose header cannot be read is left out of the ground
        # truth; the pipeline fails to decode it too, and counts it there.
        dataset = (
            self.encoded_dataset(shuffle=False)
            .map(
                lambda element: (element, _image_size(element["image"])),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .ignore_errors()
        )
        for element, (height, width) in tqdm(
            dataset.as_numpy_iterator(),
            total=self.num_samples,
            desc="Reading ground truth",
            leave=False,
        ):
            image_id = int(element["image_id"])
            images.append(
                {
                    "id": image_id,
                    "file_name": str(image_id),
                    "width": int(width),
                    "height": int(height),
                }
            )
            scale = np.array([width, height, width, height], np.float32)
            for box, label in zip(element["boxes"] * scale, element["classes"]):
                x1, y1, x2, y2 = (float(v) for v in box)
                category = (
                    int(label) if self.category_ids is None else self.category_ids[int(label)]
                )
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
        ids = range(len(self.class_names)) if self.category_ids is None else self.category_ids
        categories = [{"id": int(i), "name": n} for i, n in zip(ids, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def __repr__(self):
        return f"TFDSSource(name={self.name!r}, split={self.split!r})"


def _image_size(encoded):
    """(height, width) of the displayed image; JPEG needs only its headers."""

    def jpeg_size():
        stored = tf.image.extract_jpeg_shape(encoded)[:2]
        return tf.stack(exif.displayed_size(encoded, stored[0], stored[1]))

    return tf.cond(
        tf.io.is_jpeg(encoded),
        jpeg_size,
        lambda: tf.shape(exif.decode_image(encoded))[:2],
    )
