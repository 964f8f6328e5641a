"""Multi-task batches: identities, multi-label targets, letterbox and flips."""

import json

import numpy as np
import pytest

from yolor_keras.data import build_dataset
from yolor_keras.data import build_multi_task_dataset
from yolor_keras.data import class_presence
from yolor_keras.data import identities_from
from yolor_keras.data import read_identities
from yolor_keras.data.synthetic import generate_dataset

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "fox"}]
RED = (230, 20, 20)
BLUE = (20, 20, 230)


def multi_task_batches(annotation_file, training=True, flip=None, **options):
    """Multi-task batches straight from `build_dataset`, as the trainer builds them."""
    return build_dataset(
        annotation_file,
        training=training,
        augment=False,
        flip=training if flip is None else flip,
        cache=True,
        extra_targets={
            "classification": class_presence,
            "embedding": identities_from(annotation_file),
        },
        **options,
    )


def annotation(image_id, category, bbox, area, instance, **extra):
    return {
        "id": len(str(bbox)) * 1000 + image_id * 10 + instance,
        "image_id": image_id,
        "category_id": category,
        "bbox": bbox,
        "area": area,
        "iscrowd": 0,
        "instance_id": instance,
        **extra,
    }


@pytest.fixture
def dataset_files(write_coco, plain_image, encode):
    """Three images: 64x32 (w x h) with two objects, 48x48 with two, 32x32 empty."""
    images = {
        "a.png": encode(
            plain_image(32, 64, rectangles=[(10, 5, 30, 15, RED), (40, 8, 50, 28, BLUE)]),
            "PNG",
        ),
        "b.png": encode(plain_image(48, 48, rectangles=[(4, 4, 14, 14, RED)]), "PNG"),
        "c.png": encode(plain_image(32, 32), "PNG"),
    }
    annotations = [
        # Image 1: instance 7 has the larger box but instance 3 the larger
        # visible area; the identity follows the area.
        annotation(1, 3, [10, 5, 20, 10], 120, 7),
        annotation(1, 9, [40, 8, 10, 20], 150, 3),
        # Image 2: equal areas; the larger box (instance 5) wins. A crowd
        # region with a larger area does not count.
        annotation(2, 3, [4, 4, 10, 10], 60, 8),
        annotation(2, 7, [20, 20, 12, 12], 60, 5),
        annotation(2, 7, [0, 0, 40, 40], 900, 2, iscrowd=1),
    ]
    return write_coco(images, annotations, CATEGORIES)


def test_identity_is_the_instance_with_the_largest_visible_area(dataset_files):
    annotation_file, _ = dataset_files
    assert read_identities(annotation_file) == {1: 3, 2: 5, 3: -1}


def test_missing_instance_ids_are_named(write_coco, plain_image, encode):
    annotation_file, _ = write_coco(
        {"a.png": encode(plain_image(16, 16), "PNG")},
        [{"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16}],
        CATEGORIES,
    )
    with pytest.raises(
        ValueError, match=r"instances_test.json: annotations\[0\] \(id 4\).*instance_id"
    ):
        read_identities(annotation_file)


def test_evaluation_batches_carry_every_target(dataset_files):
    annotation_file, image_dir = dataset_files
    dataset, info = multi_task_batches(
        annotation_file,
        image_dir=image_dir,
        image_size=64,
        batch_size=3,
        training=False,
        max_boxes=4,
        verbose=False,
    )
    assert info.class_names == ("cat", "dog", "fox")
    assert info.targets["embedding"].tolist() == [3, 5, -1]
    images, targets = next(iter(dataset))
    assert images.shape == (3, 64, 64, 3)
    # Classes present: image 1 cat (id 3) and fox (id 9), image 2 cat and
    # dog (the crowd region is left out of detection too), image 3 none.
    np.testing.assert_array_equal(targets["classification"], [[1, 0, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(targets["embedding"], [3, 5, -1])
    detection = targets["detection"]
    # 64x32 letterboxed into 64x64: scale 1, 16 px of grey above.
    np.testing.assert_allclose(detection["boxes"][0, :2], [[10, 21, 30, 31], [40, 24, 50, 44]])
    np.testing.assert_array_equal(detection["classes"][0], [0, 2, -1, -1])
    np.testing.assert_array_equal(detection["classes"][2], [-1, -1, -1, -1])
    np.testing.assert_array_equal(detection["image_id"], [1, 2, 3])
    np.testing.assert_allclose(detection["pad"][0], [0, 16])
    # The red rectangle is where its box says.
    np.testing.assert_allclose(
        images[0, 22:30, 11:29].numpy().mean(axis=(0, 1)), np.array(RED) / 255, atol=0.02
    )


def test_training_flips_move_boxes_with_the_pixels(dataset_files):
    annotation_file, image_dir = dataset_files
    dataset, _ = multi_task_batches(
        annotation_file,
        image_dir=image_dir,
        image_size=64,
        batch_size=3,
        training=True,
        max_boxes=4,
        seed=1,
        verbose=False,
    )
    seen = set()
    for images, targets in dataset.repeat(4):
        for image, boxes, classes, identity in zip(
            images.numpy(),
            targets["detection"]["boxes"].numpy(),
            targets["detection"]["classes"].numpy(),
            targets["embedding"].numpy(),
        ):
            if identity != 3:
                continue
            red_box = boxes[list(classes).index(0)]
            x1, y1, x2, y2 = (int(round(v)) for v in red_box)
            # Inside the (possibly mirrored) box: red; the box is the original
            # [10, 21, 30, 31] or its mirror [34, 21, 54, 31].
            np.testing.assert_allclose(
                image[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].mean(axis=(0, 1)),
                np.array(RED) / 255,
                atol=0.02,
            )
            seen.add((x1, x2))
    assert seen == {(10, 30), (34, 54)}


def test_synthetic_identities_recur_and_match_the_json(tmp_path):
    generate_dataset(tmp_path, num_train=12, num_val=2, image_size=64, seed=2)
    dataset, info = build_multi_task_dataset(
        tmp_path, split="train", image_size=64, batch_size=12, training=False, verbose=False
    )
    coco = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    _, targets = next(iter(dataset))
    for image, identity, labels in zip(
        coco["images"], targets["embedding"].numpy(), targets["classification"].numpy()
    ):
        objects = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        largest = max(
            objects, key=lambda a: (a["area"], a["bbox"][2] * a["bbox"][3], -a["instance_id"])
        )
        assert identity == largest["instance_id"]
        # The generator's own `labels` list (category ids 1..5) is the multi-hot.
        np.testing.assert_array_equal(np.flatnonzero(labels) + 1, image["labels"])
    assert info.num_identities < info.num_samples


def test_too_few_images_for_a_training_batch(dataset_files):
    annotation_file, image_dir = dataset_files
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        build_multi_task_dataset(annotation_file, image_dir=image_dir, batch_size=8, verbose=False)


def test_the_multi_task_name_is_build_dataset_with_the_two_targets(dataset_files):
    annotation_file, image_dir = dataset_files
    options = dict(image_dir=image_dir, image_size=64, batch_size=3, max_boxes=4, verbose=False)
    direct, _ = multi_task_batches(annotation_file, training=False, **options)
    named, info = build_multi_task_dataset(annotation_file, training=False, **options)
    assert info.identities.tolist() == [3, 5, -1] and info.num_identities == 2
    (want_images, want), (got_images, got) = next(iter(direct)), next(iter(named))
    np.testing.assert_array_equal(got_images, want_images)
    for key in ("classification", "embedding"):
        np.testing.assert_array_equal(got[key], want[key])
    for key, value in want["detection"].items():
        np.testing.assert_array_equal(got["detection"][key], value)
