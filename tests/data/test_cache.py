"""build_dataset's cache choices: memory (with its size check), disk, none."""

import os

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import build_dataset
from yolor_keras.data import load_source
from yolor_keras.data import pipeline
from yolor_keras.data import synthetic

S = 64


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    synthetic.generate_dataset(folder, num_train=8, num_val=4, image_size=80, seed=3)
    return str(folder)


def _take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(count)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b) > 0
    for (images_a, labels_a), (images_b, labels_b) in zip(batches_a, batches_b):
        np.testing.assert_array_equal(images_a, images_b)
        for key in labels_a:
            np.testing.assert_array_equal(labels_a[key], labels_b[key])


def test_parse_cache_accepts_the_documented_choices_only(tmp_path):
    assert pipeline.parse_cache(False).kind is None and not pipeline.parse_cache(None)
    assert pipeline.parse_cache(True).kind == "memory"
    assert pipeline.parse_cache("memory").kind == "memory"
    disk = pipeline.parse_cache(f"disk:{tmp_path}")
    assert disk.kind == "disk" and disk.folder == str(tmp_path)
    for bad in ("disk:", "ram", 1, "/some/folder"):
        with pytest.raises(ValueError, match=r"coco: cache=.* is not a cache choice"):
            pipeline.parse_cache(bad, "coco")


def test_cache_bytes_by_hand(dataset_dir):
    source = load_source(dataset_dir, "train", verbose=False)
    # generate_dataset draws 1:1, 4:3 and 3:4 images; each resized image keeps
    # its aspect with the long side S: S x round(S * short / long) x 3 bytes.
    expected = 0
    for sample in source.samples:
        short, long = sorted((sample.width, sample.height))
        expected += S * round(S * short / long) * 3
    assert pipeline.cache_bytes(source, S) == expected
    assert {min(s.width, s.height) for s in source.samples} != {80}  # some are not square
    # Letterboxed images are always S x S x 3.
    assert pipeline.cache_bytes(source, S, resized=False) == 8 * S * S * 3


def test_memory_cache_beyond_available_memory_is_refused(dataset_dir, monkeypatch):
    needed = pipeline.cache_bytes(load_source(dataset_dir, "train", verbose=False), S)
    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: needed - 1)
    with pytest.raises(MemoryError) as error:
        build_dataset(
            dataset_dir, "train", image_size=S, batch_size=4, cache="memory", verbose=False
        )
    message = str(error.value)
    assert "instances_train.json" in message and f"{needed:,} bytes" in message
    assert f"{needed - 1:,} bytes" in message and "disk:FOLDER" in message
    # Exactly enough is accepted.
    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: needed)
    build_dataset(dataset_dir, "train", image_size=S, batch_size=4, cache=True, verbose=False)


def test_available_memory_is_read_from_the_system():
    available = pipeline.available_memory_bytes()
    with open("/proc/meminfo") as file:
        fields = dict(line.split(":", 1) for line in file)
    reported = int(fields["MemAvailable"].split()[0]) * 1024
    # The two reads are moments apart; other processes allocate meanwhile.
    assert abs(available - reported) < 0.05 * reported


@pytest.mark.parametrize("training", [True, False])
def test_disk_cache_gives_the_memory_cache_batches_and_is_reused(dataset_dir, tmp_path, training):
    split = "train" if training else "val"
    source = load_source(dataset_dir, split, verbose=False)
    options = dict(image_size=S, batch_size=4, training=training, seed=5, verbose=False)
    memory, _ = build_dataset(source, cache="memory", **options)
    disk, _ = build_dataset(source, cache=f"disk:{tmp_path}", **options)
    expected = _take(memory, 2)
    _assert_same(_take(disk, 2), expected)
    entries = os.listdir(tmp_path)
    # One complete folder, no partial one left beside it.
    assert len(entries) == 1 and not entries[0].startswith(".")
    assert entries[0].startswith(f"train{S}-" if training else f"letterbox{S}-")
    assert os.path.isfile(tmp_path / entries[0] / "images.index")

    # A later run reads the folder back without decoding: with every image
    # file zeroed (same size and time, so the same fingerprint; undecodable,
    # so any decode would fail), the batches are still the same.
    originals = {}
    for sample in source.samples:
        path = str(sample.image)
        status = os.stat(path)
        with open(path, "rb") as file:
            originals[path] = (file.read(), status)
        with open(path, "wb") as file:
            file.write(bytes(status.st_size))
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    try:
        again, _ = build_dataset(source, cache=f"disk:{tmp_path}", **options)
        _assert_same(_take(again, 2), expected)
    finally:
        for path, (data, status) in originals.items():
            with open(path, "wb") as file:
                file.write(data)
            os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_disk_cache_is_keyed_by_image_size_and_content(dataset_dir, tmp_path):
    source = load_source(dataset_dir, "train", verbose=False)
    key = f"train{S}"
    first = pipeline.dataset_fingerprint(source, key)
    assert pipeline.dataset_fingerprint(source, key) == first
    assert pipeline.dataset_fingerprint(source, f"train{S + 32}") != first
    source.samples[0].boxes = source.samples[0].boxes + 1.0
    assert pipeline.dataset_fingerprint(source, key) != first
