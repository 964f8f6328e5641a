"""Every hyperparameter of a recipe reaches the component it configures.

For each key of `Recipe.hyp` (the official hyp-file names), changing its
value must change what the component does: the task's loss value, the
optimizer's trajectory (learning rates, momentum, decay, warmup, EMA), or
the augmented training sample. A key read and stored but never used fails
here, and a new key without a probe below fails the coverage check.
"""

import dataclasses
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import augment
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import build_optimizer
from yolor_keras.training.recipe import Recipe
from yolor_keras.training.recipe import loss_settings

# A base recipe where each probabilistic choice is certain, so that a change
# shows in one sample, and warmup_min_steps does not hide warmup_epochs.
BASE = Recipe()
BASE = dataclasses.replace(
    BASE,
    optimizer=dataclasses.replace(BASE.optimizer, warmup_min_steps=5),
    augment=dataclasses.replace(BASE.augment, fliplr=0.0, mixup=0.0),
)

CHANGES = {
    "optimizer": {
        "lr0": 0.02,
        "lrf": 0.5,
        "momentum": 0.9,
        "weight_decay": 0.05,
        "warmup_epochs": 1.0,
        "warmup_momentum": 0.5,
        "warmup_bias_lr": 0.3,
        "warmup_min_steps": 35,
        "ema_decay": 0.99,
    },
    "loss": {
        "box": 0.1,
        "cls": 0.3,
        "cls_pw": 2.0,
        "obj": 0.7,
        "obj_pw": 2.0,
        "anchor_t": 2.0,
        "fl_gamma": 1.5,
    },
    "augment": {
        "hsv_h": 0.3,
        "hsv_s": 0.2,
        "hsv_v": 0.1,
        "degrees": 10.0,
        "translate": 0.1,
        "scale": 0.2,
        "shear": 5.0,
        "perspective": 0.0005,
        "flipud": 1.0,
        "fliplr": 1.0,
        "mosaic": 0.0,
        "mixup": 1.0,
        "mosaic_tiles": 9,
    },
}


def _changed(section, key):
    value = CHANGES[section][key]
    part = dataclasses.replace(getattr(BASE, section), **{key: value})
    return dataclasses.replace(BASE, **{section: part})


def test_every_hyp_key_has_a_probe():
    probed = {key for keys in CHANGES.values() for key in keys}
    assert probed == set(BASE.hyp)
    for section, keys in CHANGES.items():
        for key, value in keys.items():
            assert getattr(getattr(BASE, section), key) != value, key


@functools.cache
def _base(section, detector=None):
    """The base recipe's behaviour, computed once per component."""
    if section == "optimizer":
        return _optimizer_trace(BASE)
    if section == "loss":
        return _loss_value(detector, BASE)
    return _sample(BASE)


# --- optimizer: the trajectory of a kernel, a bias and a BN scale ---------


def _optimizer_trace(recipe):
    optimizer = build_optimizer(
        dataclasses.asdict(recipe.optimizer), steps_per_epoch=10, epochs=5, batch_size=64
    )
    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.normal(size=(2, 3)).astype("float32"), name="kernel"),
        keras.Variable(rng.normal(size=(3,)).astype("float32"), name="bias"),
        keras.Variable(rng.normal(size=(3,)).astype("float32"), name="gamma"),
    ]
    gradients = [rng.normal(size=v.shape).astype("float32") for v in variables]
    for _ in range(12):  # into epoch 1, where lrf starts to matter
        optimizer.apply(gradients, variables)
    values = [np.array(v) for v in variables]
    values += [np.array(a) for a in optimizer.ema_values(variables)]
    return np.concatenate([v.ravel() for v in values])


@pytest.mark.parametrize("key", sorted(CHANGES["optimizer"]))
def test_optimizer_key_changes_training(key):
    base = _base("optimizer")
    changed = _optimizer_trace(_changed("optimizer", key))
    assert not np.array_equal(base, changed), key


# --- loss: the task's loss on a fixed prediction and labels -------------------


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(0)
    return YOLORObjectDetector.from_preset(
        "yolor_csp", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33, image_size=64
    )


def _loss_value(detector, recipe):
    task = detector
    task.compile(optimizer="sgd", **loss_settings(recipe))
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=(2, 64 // s, 64 // s, 3, 8)).astype("float32") for s in detector.strides]
    # Boxes from 6 to 50 px, so that some anchor ratios lie between 2 and 4.
    labels = {
        "boxes": np.array(
            [
                [[4, 4, 10, 12], [10, 8, 40, 30], [2, 6, 52, 60]],
                [[20, 20, 36, 28], [0, 0, 0, 0], [0, 0, 0, 0]],
            ],
            "float32",
        ),
        "classes": np.array([[0, 1, 2], [1, -1, -1]], "int32"),
    }
    return float(task.compute_loss(y=labels, y_pred=raw))


@pytest.mark.parametrize("key", sorted(CHANGES["loss"]))
def test_loss_key_changes_the_loss(detector, key):
    base = _base("loss", detector)
    changed = _loss_value(detector, _changed("loss", key))
    assert base > 0 and abs(changed - base) > 1e-6 * base, (key, base, changed)


# --- augmentation: one training sample from a fixed seed -------------------------


def _group(recipe, image_size=64):
    count = augment.group_size(recipe.augment)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(count, 48, 64, 3), dtype=np.uint8)
    boxes = np.tile(np.array([[[10, 8, 40, 30]]], "float32"), (count, 1, 1))
    return {
        "image": tf.constant(images),
        "source_size": tf.constant([[48, 64]] * count, tf.int32),
        "size": tf.constant([[48, 64]] * count, tf.int32),
        "boxes": tf.constant(boxes),
        "classes": tf.constant(np.arange(count, dtype=np.int32)[:, None] % 3),
    }


def _sample(recipe):
    image, labels = augment.augment_group(
        _group(recipe), tf.constant([3, 4], tf.int64), recipe.augment, 64, max_boxes=20
    )
    return np.array(image), np.array(labels["boxes"])


@pytest.mark.parametrize("key", sorted(CHANGES["augment"]))
def test_augmentation_key_changes_the_sample(key):
    base_image, base_boxes = _base("augment")
    image, boxes = _sample(_changed("augment", key))
    assert not (np.array_equal(base_image, image) and np.array_equal(base_boxes, boxes)), key
