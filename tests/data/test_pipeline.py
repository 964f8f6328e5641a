"""build_dataset end to end on a small synthetic COCO dataset."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from yolor_keras.data import AugmentationRecipe
from yolor_keras.data import build_dataset
from yolor_keras.data import letterbox_to_original
from yolor_keras.data import synthetic

S = 96


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    synthetic.generate_dataset(folder, num_train=12, num_val=5, image_size=120, seed=0)
    return str(folder)


def _take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(count)]


def test_training_batches_follow_the_contract(dataset_dir):
    dataset, info = build_dataset(
        dataset_dir,
        "train",
        image_size=S,
        batch_size=4,
        seed=0,
        max_boxes=40,
        verbose=False,
    )
    assert info.num_samples == 12 and info.num_batches == 3
    assert info.class_names == synthetic.CLASS_NAMES and info.category_ids == (
        1,
        2,
        3,
        4,
        5,
    )
    assert info.recipe == AugmentationRecipe()
    batches = _take(dataset, 10)
    assert len(batches) == 3  # one epoch
    for images, labels in batches:
        assert images.shape == (4, S, S, 3) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert labels["boxes"].shape == (4, 40, 4) and labels["classes"].dtype == np.int32
        classes, boxes = labels["classes"], labels["boxes"]
        assert set(np.unique(classes)) <= set(range(-1, 5))
        assert (boxes[classes < 0] == 0).all()
        real = boxes[classes >= 0]
        assert (real >= 0).all() and (real <= S).all()
        assert (real[:, 2] - real[:, 0] > 2).all() and (real[:, 3] - real[:, 1] > 2).all()
    assert sum((labels["classes"] >= 0).sum() for _, labels in batches) > 0


def test_same_seed_gives_the_same_batches_epoch_after_epoch(dataset_dir):
    options = dict(
        image_size=S,
        batch_size=4,
        max_boxes=40,
        verbose=False,
        recipe=AugmentationRecipe(mixup=0.5, degrees=3.0, mosaic=0.5),
    )
    first, _ = build_dataset(dataset_dir, "train", seed=7, **options)
    again, _ = build_dataset(dataset_dir, "train", seed=7, **options)
    other, _ = build_dataset(dataset_dir, "train", seed=8, **options)
    epochs_first = [_take(first, 3) for _ in range(2)]
    epochs_again = [_take(again, 3) for _ in range(2)]
    for a, b in zip(epochs_first, epochs_again):
        for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
            np.testing.assert_array_equal(images_a, images_b)
            np.testing.assert_array_equal(labels_a["boxes"], labels_b["boxes"])
    # A new epoch draws new samples, and so does another seed.
    assert not np.array_equal(epochs_first[0][0][0], epochs_first[1][0][0])
    assert not np.array_equal(epochs_first[0][0][0], _take(other, 1)[0][0])


def test_cache_changes_speed_not_samples(dataset_dir):
    options = dict(image_size=S, batch_size=4, max_boxes=40, seed=1, verbose=False)
    streamed, _ = build_dataset(dataset_dir, "train", cache=False, **options)
    cached, _ = build_dataset(dataset_dir, "train", cache=True, **options)
    for (images_a, labels_a), (images_b, labels_b) in zip(_take(streamed, 3), _take(cached, 3)):
        # Same draws; the cache pre-resizes, so pixels differ by resampling only.
        np.testing.assert_allclose(labels_a["boxes"], labels_b["boxes"], atol=1e-4)
        np.testing.assert_array_equal(labels_a["classes"], labels_b["classes"])
        assert np.abs(images_a - images_b).mean() < 0.03


def test_evaluation_letterbox_maps_back_to_the_annotations(dataset_dir):
    dataset, info = build_dataset(
        dataset_dir,
        "val",
        image_size=S,
        batch_size=2,
        training=False,
        max_boxes=20,
        verbose=False,
    )
    assert info.num_batches == 3 and info.recipe is None
    with open(os.path.join(dataset_dir, "annotations", "instances_val.json")) as file:
        coco = json.load(file)
    truth = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        truth[annotation["image_id"]].append([x, y, x + w, y + h])
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    seen = []
    for images, labels in _take(dataset, 10):
        originals = letterbox_to_original(
            labels["boxes"], labels["scale"], labels["pad"], labels["original_size"]
        )
        for index, image_id in enumerate(labels["image_id"]):
            seen.append(int(image_id))
            kept = labels["classes"][index] >= 0
            np.testing.assert_allclose(originals[index][kept], truth[int(image_id)], atol=1e-3)
            # Pixels: the letterboxed image is the resized original, grey around it.
            original = np.asarray(
                Image.open(os.path.join(dataset_dir, "val", names[int(image_id)]))
            )
            height, width = labels["original_size"][index]
            assert original.shape[:2] == (height, width)
            pad_x, pad_y = labels["pad"][index].astype(int)
            scale_x, scale_y = labels["scale"][index]
            inner_w, inner_h = round(width * scale_x), round(height * scale_y)
            assert max(inner_w, inner_h) == S
            inner = images[index, pad_y : pad_y + inner_h, pad_x : pad_x + inner_w]
            resized = np.asarray(Image.fromarray(original).resize((inner_w, inner_h), Image.BOX))
            assert np.abs(inner * 255 - resized).mean() < 6.0
            border = np.ones((S, S), bool)
            border[pad_y : pad_y + inner_h, pad_x : pad_x + inner_w] = False
            np.testing.assert_allclose(images[index][border], 114 / 255, atol=1e-6)
    assert seen == [image["id"] for image in coco["images"]]  # file order, all


def test_header_checked_corrupt_image_is_skipped_not_fatal(tmp_path, encode, plain_image):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    good = encode(np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8))
    sos = good.index(b"\xff\xda")
    (images_dir / "corrupt.jpg").write_bytes(good[: sos + 20] + b"\xff\xc0" + good[sos + 22 :])
    for index in range(3):
        (images_dir / f"good{index}.jpg").write_bytes(good)
    dataset, info = build_dataset(
        images_dir,
        image_size=32,
        batch_size=2,
        training=False,
        verify="header",
        verbose=False,
    )
    assert info.num_samples == 4  # the header check lets it in ...
    count = sum(int(images.shape[0]) for images, _ in dataset)
    assert count == 3  # ... and the pipeline drops it instead of failing.


def test_too_few_images_for_a_training_batch_raises(dataset_dir):
    with pytest.raises(ValueError, match="batch_size=64"):
        build_dataset(dataset_dir, "val", image_size=S, batch_size=64, verbose=False)
    with pytest.raises(FileNotFoundError, match="instances_test"):
        build_dataset(dataset_dir, "test", image_size=S, verbose=False)
