"""tensorflow-datasets sources, on tfds' mock data (nothing downloaded)."""

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from yolor_keras.data import TFDSSource  # noqa: E402
from yolor_keras.data import build_dataset  # noqa: E402
from yolor_keras.data import report as reasons  # noqa: E402
from yolor_keras.data.report import evaluation_coverage  # noqa: E402

# Three COCO-like examples: (height, width), boxes (ymin, xmin, ymax, xmax)
# normalised, labels, crowd flags.
EXAMPLES = [
    ((60, 80), [[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]], [0, 17], [False, True]),
    ((90, 45), [[0.2, 0.2, 0.4, 0.6]], [79], [False]),
    ((50, 50), np.zeros((0, 4)), [], []),
]


def _coco_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **_):
    """Encodes EXAMPLES with the real feature spec, decodes as tfds would."""
    features = self.info.features

    def generate():
        for index, ((height, width), boxes, labels, crowd) in enumerate(EXAMPLES):
            count = len(labels)
            yield features.encode_example(
                {
                    "image": np.full((height, width, 3), 40 * index, np.uint8),
                    "image/filename": f"{index}.jpg",
                    "image/id": 1000 + index,
                    "objects": {
                        "area": np.zeros(count, np.int64),
                        "bbox": np.asarray(boxes, np.float32).reshape(-1, 4),
                        "id": np.arange(count, dtype=np.int64),
                        "is_crowd": np.asarray(crowd, bool),
                        "label": np.asarray(labels, np.int64),
                    },
                }
            )

    signature = tf.nest.map_structure(
        lambda info: tf.TensorSpec(info.shape, info.dtype),
        features.get_serialized_info(),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(EXAMPLES)))
    return dataset.map(lambda example: features.decode_example(example, decoders=decoders))


def test_coco_source_converts_boxes_and_keeps_coco_ids():
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset):
        source = TFDSSource("coco/2017", "train")
        assert source.num_samples == 3
        assert len(source.class_names) == 80 and source.class_names[0] == "person"
        assert source.category_ids[0] == 1 and source.category_ids[79] == 90
        elements = list(source.encoded_dataset().as_numpy_iterator())
        # xyxy normalised; the crowd object is dropped.
        np.testing.assert_allclose(elements[0]["boxes"], [[0.25, 0.1, 0.75, 0.5]])
        np.testing.assert_array_equal(elements[0]["classes"], [0])
        assert elements[1]["image_id"] == 1001 and elements[2]["boxes"].shape == (0, 4)

        truth = source.to_coco_dict()
        first = [a for a in truth["annotations"] if a["image_id"] == 1000]
        np.testing.assert_allclose(first[0]["bbox"], [20, 6, 40, 24], atol=1e-4)
        assert {image["id"]: (image["height"], image["width"]) for image in truth["images"]}[
            1001
        ] == (90, 45)
        assert [a["category_id"] for a in truth["annotations"]] == [1, 90]


def test_build_dataset_from_tfds_coco():
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset):
        evaluation, info = build_dataset(
            "tfds:coco/2017",
            "validation",
            image_size=64,
            batch_size=3,
            training=False,
            max_boxes=5,
            verbose=False,
        )
        images, labels = next(iter(evaluation))
        assert images.shape == (3, 64, 64, 3) and info.num_classes == 80
        # Example 0 is 80 x 60 with box x 20..60, y 6..30: scale 0.8, then
        # 8 px of padding above (64 - 48 = 16 split in two).
        np.testing.assert_allclose(
            labels["boxes"][0, 0], [16, 6 * 0.8 + 8, 48, 30 * 0.8 + 8], atol=1e-4
        )
        np.testing.assert_array_equal(labels["image_id"], [1000, 1001, 1002])
        training, _ = build_dataset(
            "tfds:coco/2017",
            "train",
            image_size=64,
            batch_size=2,
            max_boxes=5,
            verbose=False,
        )
        images, labels = next(iter(training))
        assert images.shape == (2, 64, 64, 3) and labels["classes"].shape == (2, 5)


def _coco_with_a_corrupt_image(self, split, decoders=None, **kwargs):
    """EXAMPLES, but image 1001's bytes are a broken JPEG (a damaged record)."""
    dataset = _coco_as_dataset(self, split, decoders=decoders, **kwargs)
    broken = tf.constant(b"\xff\xd8\xff\xe0 not the rest of a JPEG")

    def damage(example):
        example = dict(example)
        example["image"] = tf.where(tf.equal(example["image/id"], 1001), broken, example["image"])
        return example

    return dataset.map(damage)


def test_undecodable_tfds_image_is_counted_and_the_rest_evaluated(capsys):
    with tfds.testing.mock_data(as_dataset_fn=_coco_with_a_corrupt_image):
        source = TFDSSource("coco/2017", "validation")
        dataset, info = build_dataset(
            source, image_size=32, batch_size=2, training=False, verbose=False
        )
        ids = [int(i) for _, labels in dataset for i in labels["image_id"]]
        assert ids == [1000, 1002]
        assert info.report.skipped == {reasons.UNDECODABLE_IN_PIPELINE: 1}
        assert info.report.examples[reasons.UNDECODABLE_IN_PIPELINE] == ["image id 1001"]
        assert (info.report.num_indexed, info.report.num_usable) == (3, 2)
        # The ground truth export leaves it out instead of failing.
        assert [image["id"] for image in source.to_coco_dict()["images"]] == [1000, 1002]
        assert evaluation_coverage(source, len(ids)) == {
            "images_evaluated": 2,
            "images_in_split": 3,
        }
        assert "evaluated on 2 of the 3 images" in capsys.readouterr().out


def _voc_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **_):
    features = self.info.features
    boxes = np.array([[0.1, 0.1, 0.5, 0.4], [0.2, 0.3, 0.9, 0.8], [0.5, 0.5, 0.6, 0.9]])
    difficult = np.array([False, True, False])

    def generate():
        for index in range(2):
            yield features.encode_example(
                {
                    "image": np.full((40, 50, 3), 100, np.uint8),
                    "image/filename": f"{index:06d}.jpg",
                    "labels": [7, 14, 19],
                    "labels_no_difficult": [7, 19],
                    "objects": {
                        "bbox": boxes.astype(np.float32),
                        "is_difficult": difficult,
                        "is_truncated": np.zeros(3, bool),
                        "label": np.array([7, 14, 19]),
                        "pose": np.zeros(3, np.int64),
                    },
                }
            )

    signature = tf.nest.map_structure(
        lambda info: tf.TensorSpec(info.shape, info.dtype),
        features.get_serialized_info(),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.map(lambda example: features.decode_example(example, decoders=decoders))


def test_voc_source_drops_difficult_objects():
    with tfds.testing.mock_data(as_dataset_fn=_voc_as_dataset):
        easy = TFDSSource("voc/2007", "train")
        every = TFDSSource("voc/2007", "train", include_difficult=True)
        assert len(easy.class_names) == 20 and easy.category_ids is None
        assert easy.num_samples == 2  # counted: the mock has no split sizes
        element = next(easy.encoded_dataset().as_numpy_iterator())
        np.testing.assert_allclose(element["boxes"], [[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.6]])
        np.testing.assert_array_equal(element["classes"], [7, 19])
        assert element["image_id"] == 0  # position in the split
        element = next(every.encoded_dataset().as_numpy_iterator())
        np.testing.assert_array_equal(element["classes"], [7, 14, 19])
        dataset, _ = build_dataset(easy, image_size=32, batch_size=2, max_boxes=8, verbose=False)
        images, labels = next(iter(dataset))
        assert images.shape == (2, 32, 32, 3)
        assert set(labels["classes"].numpy().ravel()) <= {-1, 7, 19}
