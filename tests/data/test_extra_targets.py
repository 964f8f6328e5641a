"""`build_dataset(extra_targets=...)`: per-image targets ride with their image."""

import numpy as np
import pytest

from yolor_keras.data import build_dataset
from yolor_keras.data import class_presence
from yolor_keras.data import load_coco_file
from yolor_keras.data import read_coco_json
from yolor_keras.data import read_identities

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def corrupt_jpeg(good):
    """A JPEG whose header reads but whose scan does not decode."""
    start_of_scan = good.index(b"\xff\xda")
    return good[: start_of_scan + 20] + b"\xff\xc0" + good[start_of_scan + 22 :]


@pytest.fixture
def five_images(write_coco, plain_image, encode):
    """Five images (ids 1..5), image 3 corrupt; image k has k-1 cats and a dog if k is even."""
    images, annotations = {}, []
    for image_id in range(1, 6):
        images[f"{image_id}.jpg"] = encode(plain_image(24, 32, value=(40 * image_id,) * 3))
        for index in range(image_id - 1):
            annotations.append(
                {
                    "id": 100 * image_id + index,
                    "image_id": image_id,
                    "category_id": 3,
                    "bbox": [index, 1, 4, 4],
                    "area": 16,
                    "iscrowd": 0,
                }
            )
        if image_id % 2 == 0:
            annotations.append(
                {
                    "id": 100 * image_id + 50,
                    "image_id": image_id,
                    "category_id": 7,
                    "bbox": [10, 10, 8, 8],
                    "area": 64,
                    "iscrowd": 0,
                }
            )
    images["3.jpg"] = corrupt_jpeg(images["3.jpg"])
    return write_coco(images, annotations, CATEGORIES)


@pytest.mark.parametrize("cache", [False, True])
def test_rows_follow_their_image_through_shuffling_and_skipped_images(five_images, cache):
    annotation_file, image_dir = five_images
    source = read_coco_json(annotation_file, image_dir=image_dir, verify="header", verbose=False)
    tags = np.array([10 * sample.image_id for sample in source.samples], np.int64)
    dataset, info = build_dataset(
        source,
        image_size=32,
        batch_size=2,
        training=False,
        augment=False,
        shuffle=True,
        cache=cache,
        seed=3,
        verbose=False,
        extra_targets={"tag": tags, "classification": class_presence},
    )
    assert info.targets["tag"].dtype == np.int32  # int64 rows come out int32
    seen = []
    for _, labels in dataset:
        assert set(labels) == {"detection", "tag", "classification"}
        ids = labels["detection"]["image_id"].numpy()
        # The row of each image is the one written for its id, after the shuffle.
        np.testing.assert_array_equal(labels["tag"].numpy(), 10 * ids)
        for image_id, multi_hot in zip(ids, labels["classification"].numpy()):
            # Hand-counted: k - 1 cats (cat present from image 2), a dog on even k.
            np.testing.assert_array_equal(multi_hot, [image_id >= 2, image_id % 2 == 0])
        seen.extend(ids.tolist())
    # The corrupt image 3 is skipped and the others keep their rows.
    assert sorted(seen) == [1, 2, 4, 5]


def test_training_labels_nest_detection_and_keep_fixed_shapes(five_images):
    annotation_file, image_dir = five_images
    dataset, info = build_dataset(
        annotation_file,
        image_dir=image_dir,
        image_size=32,
        batch_size=2,
        augment=False,
        flip=True,
        max_boxes=6,
        verify="header",
        verbose=False,
        extra_targets={"classification": class_presence},
    )
    images, labels = next(iter(dataset))
    assert images.shape == (2, 32, 32, 3)
    assert labels["detection"]["boxes"].shape == (2, 6, 4)
    assert set(labels["detection"]) == {"boxes", "classes"}
    assert labels["classification"].shape == (2, 2)
    assert info.targets["classification"].shape == (5, 2)


def test_bad_extra_targets_are_refused_with_the_dataset_named(five_images):
    annotation_file, image_dir = five_images
    # Decoded at index time, the corrupt image is left out: 4 samples.
    options = dict(image_dir=image_dir, image_size=32, batch_size=2, verbose=False)
    with pytest.raises(ValueError, match=r"instances_test.json: extra target 'tag'.*\(4\)"):
        build_dataset(annotation_file, augment=False, extra_targets={"tag": np.zeros(5)}, **options)
    with pytest.raises(ValueError, match="augment=False"):
        build_dataset(annotation_file, extra_targets={"tag": np.zeros(4)}, **options)
    with pytest.raises(ValueError, match="'detection'"):
        build_dataset(
            annotation_file, augment=False, extra_targets={"detection": np.zeros(4)}, **options
        )
    with pytest.raises(ValueError, match="fliplr"):
        build_dataset(annotation_file, flip=True, **options)
    with pytest.raises(ValueError, match="training=True"):
        build_dataset(annotation_file, training=False, flip=True, **options)


def test_one_coco_loader_names_the_file_everywhere(tmp_path):
    path = tmp_path / "instances_bad.json"
    path.write_text("{broken")
    for load in (load_coco_file, read_identities):
        with pytest.raises(ValueError, match="instances_bad.json: not valid JSON"):
            load(str(path))
    path.write_text('{"images": [], "annotations": []}')
    for load in (load_coco_file, read_identities):
        with pytest.raises(ValueError, match="instances_bad.json: missing the 'categories'"):
            load(str(path))
