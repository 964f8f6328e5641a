"""The synthetic shapes dataset: deterministic, valid COCO, usable extras."""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from yolor_keras.data import read_coco_json
from yolor_keras.data import synthetic


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    paths = synthetic.generate_dataset(folder, num_train=16, num_val=4, image_size=96, seed=3)
    return folder, paths


def _digest(folder):
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            digest.update(name.encode())
            with open(os.path.join(root, name), "rb") as file:
                digest.update(file.read())
    return digest.hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs(generated, tmp_path):
    folder, _ = generated
    synthetic.generate_dataset(tmp_path / "again", num_train=16, num_val=4, image_size=96, seed=3)
    synthetic.generate_dataset(tmp_path / "other", num_train=16, num_val=4, image_size=96, seed=4)
    assert _digest(folder) == _digest(tmp_path / "again")
    assert _digest(folder) != _digest(tmp_path / "other")


def test_valid_coco_read_cleanly_by_pycocotools_and_the_reader(generated):
    pycocotools = pytest.importorskip("pycocotools.coco")
    folder, paths = generated
    coco = pycocotools.COCO(paths["train"])
    assert len(coco.getImgIds()) == 16 and len(coco.getCatIds()) == len(synthetic.CLASS_NAMES)
    assert len(coco.getAnnIds()) >= 16  # at least one object per image
    records = read_coco_json(paths["train"], verbose=False)
    assert records.report.clean and len(records) == 16
    assert records.class_names == synthetic.CLASS_NAMES


def test_boxes_hold_their_instance_colour(generated):
    folder, paths = generated
    with open(paths["train"]) as file:
        data = json.load(file)
    instances = {instance["id"]: instance for instance in data["instances"]}
    names = {image["id"]: image["file_name"] for image in data["images"]}
    checked = 0
    for annotation in data["annotations"]:
        instance = instances[annotation["instance_id"]]
        if instance["pattern"] != "solid":
            continue
        pixels = np.asarray(
            Image.open(os.path.join(folder, "train", names[annotation["image_id"]]))
        )
        x, y, w, h = annotation["bbox"]
        assert w > 0 and h > 0
        crop = pixels[y : y + h, x : x + w].astype(float)
        close = np.abs(crop - instance["color"]).max(axis=-1) < 60
        # Solid shapes fill much of their box (the triangle half of it).
        assert close.mean() > 0.25, annotation
        # The box is tight: the colour comes within a few pixels of each side
        # (a triangle's corner is thin, and JPEG blurs it).
        edge = 4
        assert close[:edge].any() and close[-edge:].any()
        assert close[:, :edge].any() and close[:, -edge:].any()
        checked += 1
    assert checked > 0


def test_identity_and_multilabel_extras(generated):
    _, paths = generated
    with open(paths["train"]) as file:
        data = json.load(file)
    instances = {instance["id"]: instance for instance in data["instances"]}
    assert len(instances) == synthetic.INSTANCES_PER_CLASS * len(synthetic.CLASS_NAMES)
    looks = {(i["category_id"], tuple(i["color"]), i["pattern"]) for i in instances.values()}
    assert len(looks) == len(instances)  # every instance looks different
    images_of = {}
    for annotation in data["annotations"]:
        instance = instances[annotation["instance_id"]]
        assert annotation["category_id"] == instance["category_id"]
        images_of.setdefault(annotation["instance_id"], set()).add(annotation["image_id"])
    assert max(len(images) for images in images_of.values()) >= 2  # instances recur
    for image in data["images"]:
        present = {a["category_id"] for a in data["annotations"] if a["image_id"] == image["id"]}
        assert image["labels"] == sorted(present)
