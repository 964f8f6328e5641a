"""YOLOR's learning-rate and momentum schedules, as Keras schedules.

The official recipe decays the learning rate by a cosine over *epochs* (the
rate is constant within an epoch) down to ``lr0 * lrf``, and warms up over
``max(warmup_epochs * steps_per_epoch, 1000)`` iterations: every rate ramps
linearly from a start value (0 for weights, ``warmup_bias_lr`` for biases)
to the cosine value of the current epoch, and momentum ramps from
``warmup_momentum`` to ``momentum``.

A run continued from another run's checkpoint (the official ``tune.py`` from
``last_298.pt``, or ``train.py`` from ``epoch_424.pt``) keeps counting
iterations from the checkpoint's epoch (``ni = i + nb * epoch``), so its
warmup is long over. The official code then restores the optimizer's rate and
momentum from the checkpoint and sets the scheduler to the previous epoch: the
first continued epoch runs at the checkpoint's rate, and every later epoch
``e`` at the new cosine's value for ``e - 1`` (its total re-based to the new
``--epochs``). ``step_offset``, ``continued_epoch`` and ``continued_rate``
describe that.
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
        step_offset: added to the optimizer's batch counter to give the
            official iteration ``ni`` (non-zero when a run continues from a
            checkpoint whose epochs had another length).
        continued_epoch: for a continued run, the first epoch it trains; None
            for a run from iteration 0.
        continued_rate: the rate of ``continued_epoch`` past warmup (the rate
            the checkpoint's optimizer was at).

    Example:

    ```python
    schedule = YOLORLearningRate(0.01, 0.2, epochs=300, steps_per_epoch=1848,
                                 warmup_steps=5544)
    lr = schedule(0)  # 0.0
    ```
    """

    def __init__(
        self,
        lr0,
        lrf,
        epochs,
        steps_per_epoch,
        warmup_steps,
        warmup_start=0.0,
        step_offset=0,
        continued_epoch=None,
        continued_rate=None,
    ):
        self.lr0 = float(lr0)
        self.lrf = float(lrf)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self.step_offset = int(step_offset)
        if (continued_epoch is None) != (continued_rate is None):
            raise ValueError("continued_epoch and continued_rate go together.")
        self.continued_epoch = None if continued_epoch is None else int(continued_epoch)
        self.continued_rate = None if continued_rate is None else float(continued_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32") + float(self.step_offset)
        epoch = ops.floor(step / self.steps_per_epoch)
        target = self.lr0 * cosine_factor(epoch, self.epochs, self.lrf)
        fraction = ops.minimum(step / max(self.warmup_steps, 1), 1.0)
        warm = self.warmup_start + (target - self.warmup_start) * fraction
        if self.continued_epoch is None:
            return warm
        # The official loop warms up while ni <= nw, and only the scheduler
        # (once per epoch) changes the rate after that. Its scheduler of a
        # continued run restarts at the previous epoch, so later epochs lag
        # the cosine by one. The first continued epoch keeps the checkpoint's
        # rate unless warmup ran in it: then the last warmup value (the
        # unlagged cosine) holds until the epoch ends.
        lagged = self.lr0 * cosine_factor(epoch - 1.0, self.epochs, self.lrf)
        if self.continued_epoch * self.steps_per_epoch <= self.warmup_steps:
            last_warm_epoch = float(self.warmup_steps // self.steps_per_epoch)
            after = ops.where(epoch <= last_warm_epoch, target, lagged)
        else:
            after = ops.where(epoch <= float(self.continued_epoch), self.continued_rate, lagged)
        return ops.where(step <= float(self.warmup_steps), warm, after)

    def get_config(self):
        return {
            "lr0": self.lr0,
            "lrf": self.lrf,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
            "step_offset": self.step_offset,
            "continued_epoch": self.continued_epoch,
            "continued_rate": self.continued_rate,
        }


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORMomentum(keras.optimizers.schedules.LearningRateSchedule):
    """Momentum ramping linearly from ``warmup_momentum`` to ``momentum``.

    Args:
        momentum: momentum after warmup (0.937).
        warmup_momentum: momentum at iteration 0 (0.8).
        warmup_steps: warmup iterations.
        step_offset: see `YOLORLearningRate`.
        continued_momentum: for a continued run, the momentum past warmup
            (the checkpoint optimizer's: the official code restores it and
            only changes it during warmup); None for a run from iteration 0.
    """

    def __init__(
        self, momentum, warmup_momentum, warmup_steps, step_offset=0, continued_momentum=None
    ):
        self.momentum = float(momentum)
        self.warmup_momentum = float(warmup_momentum)
        self.warmup_steps = int(warmup_steps)
        self.step_offset = int(step_offset)
        self.continued_momentum = None if continued_momentum is None else float(continued_momentum)

    def __call__(self, step):
        step = ops.cast(step, "float32") + float(self.step_offset)
        fraction = ops.minimum(step / max(self.warmup_steps, 1), 1.0)
        warm = self.warmup_momentum + (self.momentum - self.warmup_momentum) * fraction
        if self.continued_momentum is None:
            return warm
        return ops.where(step <= float(self.warmup_steps), warm, self.continued_momentum)

    def get_config(self):
        return {
            "momentum": self.momentum,
            "warmup_momentum": self.warmup_momentum,
            "warmup_steps": self.warmup_steps,
            "step_offset": self.step_offset,
            "continued_momentum": self.continued_momentum,
        }


def continued_schedules(optimizer, previous, previous_step, start_epoch, steps_per_epoch):
    """Re-bases ``optimizer``'s schedules to continue ``previous``'s run.

    ``optimizer`` was built for the new run (its cosine over the new total
    epochs); ``previous`` is the checkpoint's optimizer, whose batch counter
    stood at ``previous_step`` when it was saved after ``start_epoch``
    epochs. The rates and momentum the previous run would have used next are
    held for the first continued epoch, as the official code does when it
    loads the checkpoint's optimizer state.

    Returns:
        (learning_rate, bias_learning_rate, momentum) schedules to set on
        ``optimizer``.
    """
    offset = int(start_epoch) * int(steps_per_epoch) - int(previous_step)

    def value(schedule):
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = schedule(previous_step)
        return float(ops.convert_to_numpy(schedule))

    def continued(schedule, rate):
        config = dict(schedule.get_config())
        config.update(step_offset=offset, continued_epoch=int(start_epoch), continued_rate=rate)
        return YOLORLearningRate(**config)

    weights_lr = continued(optimizer._learning_rate, value(previous._learning_rate))
    bias_lr = continued(optimizer.bias_learning_rate, value(previous.bias_learning_rate))
    momentum_config = dict(optimizer.momentum.get_config())
    # Warmup sets the momentum on every batch up to nw; a run that starts
    # past nw keeps the checkpoint's momentum throughout.
    warms_up = int(start_epoch) * int(steps_per_epoch) <= momentum_config["warmup_steps"]
    held = None if warms_up else value(previous.momentum)
    momentum_config.update(step_offset=offset, continued_momentum=held)
    return weights_lr, bias_lr, YOLORMomentum(**momentum_config)
