"""A recipe's loss and optimizer values reach the task's loss and the optimizer.

The reference for the loss is `YOLORLoss` built by hand with the same
numbers; for the optimizer, the official ``train.py`` formulas evaluated
here: accumulation ``round(nbs / bs)``, weight decay scaled by
``bs * accumulate / nbs``, warmup ``max(round(warmup_epochs * nb), 1000 or
warmup_min_steps)`` batches, the cosine ``lf(e) = ((1 - cos(e * pi /
epochs)) / 2) * (lrf - 1) + 1`` and the linear warmup interpolations. Every
value is non-default, so a field dropped on the way would show.
"""

import dataclasses
import math

import keras
import numpy as np
import pytest

from yolor_keras.losses import YOLORLoss
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import YOLORSGD
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.recipe import loss_settings
from yolor_keras.training.recipe import recipe_from_dict

LOSS = {
    "box": 0.07,
    "cls": 0.3,
    "cls_pw": 1.5,
    "obj": 0.7,
    "obj_pw": 2.0,
    "anchor_t": 3.0,
    "fl_gamma": 1.5,
}
OPTIMIZER = {
    "lr0": 0.02, "lrf": 0.1, "momentum": 0.9, "weight_decay": 0.001, "warmup_epochs": 2.0,
    "warmup_momentum": 0.7, "warmup_bias_lr": 0.05, "warmup_min_steps": 5, "ema_decay": 0.999,
}  # fmt: skip
RECIPE = recipe_from_dict({"loss": LOSS, "optimizer": OPTIMIZER}, source="test recipe")


@pytest.fixture(scope="module")
def task():
    keras.utils.set_random_seed(0)
    return YOLORObjectDetector.from_preset(
        "yolor_p6", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33
    )


def _batch(task):
    """Random raw outputs at 128 px and two labelled images."""
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=(2, 128 // s, 128 // s, 3, 8)).astype("float32") for s in task.strides]
    labels = {
        "boxes": np.array(
            [[[10, 12, 50, 70], [60, 20, 120, 60], [0, 0, 0, 0]],
             [[30, 30, 40, 44], [5, 64, 100, 126], [70, 2, 126, 40]]], "float32"
        ),
        "classes": np.array([[0, 2, -1], [1, 1, 0]], "int32"),
    }  # fmt: skip
    return raw, labels


# The recipe's loss keys (the official hyp names) and the task's compile
# arguments they set.
RECIPE_TO_COMPILE = {
    "box": "box_gain", "obj": "obj_gain", "cls": "cls_gain", "anchor_t": "anchor_t",
    "cls_pw": "cls_pos_weight", "obj_pw": "obj_pos_weight", "fl_gamma": "focal_gamma",
}  # fmt: skip


def _compile_arguments(recipe):
    values = dataclasses.asdict(recipe.loss)
    assert set(values) == set(RECIPE_TO_COMPILE), "a recipe loss key has no compile argument"
    return {RECIPE_TO_COMPILE[key]: value for key, value in values.items()}


def test_loss_settings_maps_every_recipe_loss_key_to_its_compile_argument():
    # What the trainer compiles with: the mapping above, the detector's
    # weight 1 and the loss scale of batch 64 at the nominal batch 64.
    assert loss_settings(RECIPE) == {
        **_compile_arguments(RECIPE),
        "loss_scale": 64.0,
        "loss_weights": {"detection": 1.0},
    }


def test_recipe_loss_values_reach_the_tasks_loss(task):
    task.compile(optimizer=YOLORSGD(), loss_scale=24.0, **_compile_arguments(RECIPE))
    settings = task.loss_settings
    assert (settings["box_gain"], settings["cls_gain"], settings["obj_gain"]) == (0.07, 0.3, 0.7)
    assert (settings["cls_pos_weight"], settings["obj_pos_weight"]) == (1.5, 2.0)
    assert (settings["anchor_t"], settings["focal_gamma"], settings["loss_scale"]) == (
        3.0,
        1.5,
        24.0,
    )

    by_hand = YOLORLoss(
        task.anchors, task.strides, num_classes=3, box_gain=0.07, obj_gain=0.7,
        cls_gain=0.3, anchor_t=3.0, cls_pos_weight=1.5, obj_pos_weight=2.0, focal_gamma=1.5,
    )  # fmt: skip
    raw, labels = _batch(task)
    expected = {
        k: keras.ops.convert_to_numpy(v) for k, v in by_hand.compute_components(labels, raw).items()
    }
    assert expected["box"].min() > 0 and expected["cls"].min() > 0  # every term is in play
    got = task.head_losses["detection"].compute_components(labels, raw)
    for name in ("box", "obj", "cls", "loss"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[name]), expected[name], rtol=1e-6)
    # What the task trains on: the batch mean times the loss scale.
    total = task.compute_loss(y=labels, y_pred=raw)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(total), expected["loss"].mean() * 24.0, rtol=1e-6
    )
    # The default recipe gives another loss: the values are not ignored.
    task.compile(optimizer=YOLORSGD(), loss_scale=24.0, **_compile_arguments(recipe_from_dict({})))
    other = keras.ops.convert_to_numpy(task.compute_loss(y=labels, y_pred=raw))
    assert abs(float(other) - expected["loss"].mean() * 24.0) > 1e-2


def _lf(epoch, epochs, lrf):
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def test_recipe_optimizer_values_reach_yolorsgd():
    steps, epochs, batch = 10, 20, 24
    optimizer = build_optimizer(
        dataclasses.asdict(RECIPE.optimizer), steps_per_epoch=steps, epochs=epochs,
        batch_size=batch, nominal_batch_size=64,
    )  # fmt: skip
    accumulate = round(64 / 24)  # 3
    assert optimizer.gradient_accumulation_steps == accumulate
    assert optimizer.accumulation_ratio == pytest.approx(64 / 24)
    assert optimizer.kernel_weight_decay == pytest.approx(0.001 * 24 * 3 / 64)  # 1.125e-3
    nw = max(round(2.0 * steps), 5)  # 20 batches of warmup
    assert optimizer.accumulation_warmup_steps == nw
    assert optimizer.nesterov is True
    assert optimizer.ema_decay == 0.999

    def value(schedule, step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    # (`optimizer.learning_rate` is the current value; the config holds the schedule.)
    weights = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    biases, momentum = optimizer.bias_learning_rate, optimizer.momentum
    # Official warmup, ni <= nw: interp(ni, [0, nw], [start, lr0 * lf(epoch)]).
    for ni in (0, 7, 15, 20):
        epoch = ni // steps
        target = 0.02 * _lf(epoch, epochs, 0.1)
        assert value(weights, ni) == pytest.approx(np.interp(ni, [0, nw], [0.0, target]), rel=1e-5)
        assert value(biases, ni) == pytest.approx(np.interp(ni, [0, nw], [0.05, target]), rel=1e-5)
        assert value(momentum, ni) == pytest.approx(np.interp(ni, [0, nw], [0.7, 0.9]), rel=1e-5)
    # After warmup: lr0 * lf(epoch) for both groups, momentum as recipe.
    for ni in (35, 120, 199):
        epoch = ni // steps
        assert value(weights, ni) == pytest.approx(0.02 * _lf(epoch, epochs, 0.1), rel=1e-5)
        assert value(biases, ni) == pytest.approx(0.02 * _lf(epoch, epochs, 0.1), rel=1e-5)
        assert value(momentum, ni) == pytest.approx(0.9, rel=1e-6)
    # The last epoch ends near lr0 * lrf.
    assert value(weights, 199) == pytest.approx(0.02 * _lf(19, 20, 0.1), rel=1e-5)


def test_recipe_warmup_min_steps_and_no_accumulation_at_the_nominal_batch():
    recipe = recipe_from_dict({"optimizer": {"warmup_epochs": 0.5, "warmup_min_steps": 30}})
    optimizer = build_optimizer(
        dataclasses.asdict(recipe.optimizer), steps_per_epoch=10, epochs=5, batch_size=64
    )
    # round(0.5 * 10) = 5 < 30: the minimum wins; batch 64 = nominal: no accumulation.
    assert optimizer.get_config()["learning_rate"]["config"]["warmup_steps"] == 30
    assert optimizer.momentum.warmup_steps == 30
    assert optimizer.gradient_accumulation_steps is None
    assert optimizer.kernel_weight_decay == pytest.approx(0.0005)
