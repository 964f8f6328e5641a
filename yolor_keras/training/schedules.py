"""YOLOR's learning-rate and momentum schedules, as Keras schedules.

The official recipe decays the learning rate by a cosine over *epochs* (the
rate is constant within an epoch) down to ``lr0 * lrf``, and warms up over
``max(warmup_epochs * steps_per_epoch, 1000)`` iterations: every rate ramps
linearly from a start value (0 for weights, ``warmup_bias_lr`` for biases)
to the cosine value of the current epoch, and momentum ramps from
``warmup_momentum`` to ``momentum``.
"""

import math

import keras
from keras import ops


def warmup_steps(warmup_epochs, steps_per_epoch, minimum=1000):
    """The official warmup length in iterations: max(epochs * steps, 1000)."""
    return max(int(round(warmup_epochs * steps_per_epoch)), int(minimum))


def cosine_factor(epoch, epochs, lrf):
    """The official one-cycle cosine: 1 at epoch 0, ``lrf`` at ``epochs``."""
    return ((1.0 - ops.cos(epoch * math.pi / epochs)) / 2.0) * (lrf - 1.0) + 1.0


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Warmup then per-epoch cosine decay, as in the official ``train.py``.

    Args:
        lr0: initial learning rate (after warmup).
        lrf: final rate as a fraction of ``lr0``.
        epochs: total training epochs.
        steps_per_epoch: iterations (batches) per epoch.
        warmup_steps: warmup iterations (see `warmup_steps`).
        warmup_start: the rate at iteration 0 (0 for weights, 0.1 for biases).

    Example:

    ```python
    schedule = YOLORLearningRate(0.01, 0.2, epochs=300, steps_per_epoch=1848,
                                 warmup_steps=5544)
    lr = schedule(0)  # 0.0
    ```
    """

    def __init__(self, lr0, lrf, epochs, steps_per_epoch, warmup_steps, warmup_start=0.0):
        self.lr0 = float(lr0)
        self.lrf = float(lrf)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        epoch = ops.floor(step / self.steps_per_epoch)
        target = self.lr0 * cosine_factor(epoch, self.epochs, self.lrf)
        fraction = ops.minimum(step / max(self.warmup_steps, 1), 1.0)
        return self.warmup_start + (target - self.warmup_start) * fraction

    def get_config(self):
        return {
            "lr0": self.lr0,
            "lrf": self.lrf,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
        }


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORMomentum(keras.optimizers.schedules.LearningRateSchedule):
    """Momentum ramping linearly from ``warmup_momentum`` to ``momentum``.

    Args:
        momentum: momentum after warmup (0.937).
        warmup_momentum: momentum at iteration 0 (0.8).
        warmup_steps: warmup iterations.
    """

    def __init__(self, momentum, warmup_momentum, warmup_steps):
        self.momentum = float(momentum)
        self.warmup_momentum = float(warmup_momentum)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        fraction = ops.minimum(ops.cast(step, "float32") / max(self.warmup_steps, 1), 1.0)
        return self.warmup_momentum + (self.momentum - self.warmup_momentum) * fraction

    def get_config(self):
        return {
            "momentum": self.momentum,
            "warmup_momentum": self.warmup_momentum,
            "warmup_steps": self.warmup_steps,
        }
