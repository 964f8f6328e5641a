"""The in-memory cache outlives one pipeline: the trainer's per-epoch builds decode once."""

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import build_dataset
from yolor_keras.data import load_source
from yolor_keras.data import pipeline
from yolor_keras.data import synthetic

S = 64


@pytest.fixture
def dataset_dir(tmp_path):
    synthetic.generate_dataset(tmp_path, num_train=6, num_val=2, image_size=80, seed=5)
    return str(tmp_path)


@pytest.fixture
def fills(monkeypatch):
    """Counts the passes that decode every image into a memory cache."""
    monkeypatch.setattr(pipeline, "MEMORY_CACHES", type(pipeline.MEMORY_CACHES)())
    count = []
    fill = pipeline.fill_cache
    monkeypatch.setattr(pipeline, "fill_cache", lambda *args: (count.append(1), fill(*args))[1])
    return count


def first_batch(source, seed, training=True):
    dataset, _ = build_dataset(
        source,
        image_size=S,
        batch_size=3,
        training=training,
        seed=seed,
        cache="memory",
        verbose=False,
    )
    images, labels = next(iter(dataset))
    return images.numpy(), tf.nest.map_structure(lambda t: t.numpy(), labels)


def test_a_second_build_reads_the_filled_cache_and_gives_the_same_batches(dataset_dir, fills):
    source = load_source(dataset_dir, "train", verbose=False)
    images_a, labels_a = first_batch(source, seed=1)
    images_b, labels_b = first_batch(load_source(dataset_dir, "train", verbose=False), seed=1)
    assert len(fills) == 1
    np.testing.assert_array_equal(images_a, images_b)
    for key in labels_a:
        np.testing.assert_array_equal(labels_a[key], labels_b[key])


def test_changed_images_are_decoded_again(dataset_dir, fills):
    source = load_source(dataset_dir, "train", verbose=False)
    first_batch(source, seed=1, training=False)
    synthetic.generate_dataset(dataset_dir, num_train=6, num_val=2, image_size=96, seed=6)
    first_batch(load_source(dataset_dir, "train", verbose=False), seed=1, training=False)
    assert len(fills) == 2


def test_only_the_most_recent_caches_are_kept(dataset_dir, fills):
    source = load_source(dataset_dir, "train", verbose=False)
    for size in (32, 64, 96):
        build_dataset(source, image_size=size, batch_size=2, training=False, cache="memory")
    assert len(pipeline.MEMORY_CACHES) == pipeline.MEMORY_CACHES_KEPT
    kept = [name.split("-")[0] for name in pipeline.MEMORY_CACHES]
    assert len(fills) == 3 and all("64" in a and "96" in b for a, b in [kept])
