"""A tiny YOLOR trained with `YOLORSGD` and the official schedule lowers its loss.

The fast learning check of the suite: the recipe's optimizer (Nesterov SGD,
warmup of the learning rates, bias rate and momentum, cosine decay, EMA)
and the recipe's loss settings, through `build_optimizer` and `compile` as
the trainer builds them, on the synthetic shapes dataset. The loss is
measured on one fixed batch before and after, so the drop is the model's,
not a different batch's; the seeds fix everything, so the figure is exact
on a given machine, and the bar sits well under the drop seen (about 20 %
in 24 steps) while far above the batch-to-batch spread of the loss.
"""

import dataclasses

import keras
import numpy as np

from yolor_keras.data import build_dataset
from yolor_keras.data.synthetic import generate_dataset
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import YOLORSGD
from yolor_keras.training.ema import ema_weights
from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.recipe import loss_settings
from yolor_keras.training.recipe import recipe_from_dict

SIZE = 64
BATCH = 8
EPOCHS = 6


def _loss(task, images, labels):
    """The compiled loss on the fixed batch, with batch statistics as in `fit`;
    the BatchNorm moving averages are put back afterwards."""
    statistics = [np.array(variable) for variable in task.non_trainable_variables]
    value = float(task.compute_loss(y=labels, y_pred=task(images, training=True)))
    for variable, saved in zip(task.non_trainable_variables, statistics):
        variable.assign(saved)
    return value


def test_yolorsgd_with_the_official_schedule_lowers_the_loss(tmp_path):
    generate_dataset(str(tmp_path), num_train=32, num_val=1, image_size=SIZE, seed=0)
    recipe = recipe_from_dict(
        {
            "train": {"model": "yolor_csp", "image_size": SIZE, "epochs": EPOCHS,
                      "batch_size": BATCH, "nominal_batch_size": BATCH},
            # The official schedule, with a warmup short enough for 24 steps
            # and a rate for a few epochs instead of hundreds.
            "optimizer": {"lr0": 0.05, "warmup_epochs": 1.0, "warmup_min_steps": 8},
        }
    )  # fmt: skip
    train, info = build_dataset(
        str(tmp_path), split="train", image_size=SIZE, batch_size=BATCH, training=True,
        augment=False, flip=True, cache=True, verbose=False,
    )  # fmt: skip
    fixed, _ = build_dataset(
        str(tmp_path), split="train", image_size=SIZE, batch_size=32, training=False,
        cache=True, verbose=False,
    )  # fmt: skip
    images, labels = next(iter(fixed))
    labels = {"boxes": labels["boxes"], "classes": labels["classes"]}

    keras.utils.set_random_seed(0)
    task = YOLORObjectDetector.from_preset(
        "yolor_csp", num_classes=info.num_classes, width_multiplier=0.125, depth_multiplier=0.33
    )
    optimizer = build_optimizer(
        dataclasses.asdict(recipe.optimizer), steps_per_epoch=info.num_batches, epochs=EPOCHS,
        batch_size=BATCH, nominal_batch_size=BATCH,
    )  # fmt: skip
    assert isinstance(optimizer, YOLORSGD) and optimizer.nesterov
    task.compile(optimizer=optimizer, **loss_settings(recipe))
    # `compile` builds the optimizer, so `fit` traces its step once.
    assert optimizer.built
    before = _loss(task, images, labels)
    history = task.fit(train, epochs=EPOCHS, verbose=0)

    losses = history.history["loss"]
    assert len(losses) == EPOCHS and all(np.isfinite(losses))
    assert int(optimizer.iterations) == EPOCHS * info.num_batches
    after = _loss(task, images, labels)
    assert after < 0.9 * before, (before, after, losses)
    # The EMA (what is evaluated and saved) has learnt as well.
    with ema_weights(task):
        assert _loss(task, images, labels) < 0.9 * before
