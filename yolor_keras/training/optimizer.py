"""`YOLORSGD`: the official YOLOR optimizer and model EMA in one Keras optimizer.

The official recipe uses PyTorch's Nesterov SGD with three parameter groups:
conv kernels get L2 weight decay, BatchNorm scales and implicit vectors get
none, and biases (conv biases and BatchNorm offsets) get none but follow
their own warmup rate. It also keeps an exponential moving average of the
weights with a ramped decay ``0.9999 * (1 - exp(-updates / 2000))``, used for
evaluation and for the saved model.

Keras' SGD differs in two ways that matter here: its weight decay is
decoupled from the gradient, and it folds the learning rate into the
velocity. This optimizer follows PyTorch's update exactly::

    g = grad + weight_decay * w          (decayed variables only)
    v = momentum * v + g
    w = w - lr * (g + momentum * v)       (Nesterov)

and updates the EMA after every real update (after gradient accumulation).
"""

import keras
from keras import ops

from yolor_keras.training.schedules import YOLORLearningRate
from yolor_keras.training.schedules import YOLORMomentum

BIAS_NAMES = ("bias", "beta")


def _short_name(variable):
    # The TensorFlow backend hands `update_step` the underlying tf.Variable,
    # whose name carries scopes and a ":0" suffix.
    return variable.name.split(":")[0].split("/")[-1]


def _schedule_value(schedule, step):
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule(step)
    return schedule


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORSGD(keras.optimizers.Optimizer):
    """Nesterov SGD with kernel-only weight decay, bias warmup and a ramped EMA.

    Args:
        learning_rate: rate (or schedule) for kernels, BN scales and implicit
            vectors.
        bias_learning_rate: rate (or schedule) for biases and BN offsets;
            defaults to ``learning_rate``.
        momentum: momentum (or a schedule of the iteration, e.g.
            `YOLORMomentum`).
        nesterov: use Nesterov momentum (official: True).
        kernel_weight_decay: L2 decay added to the gradient of variables named
            ``kernel`` with two or more axes, unless excluded with
            `exclude_from_weight_decay`.
        ema_decay: the EMA's final decay (0.9999); None disables the EMA.
        ema_ramp: updates over which the EMA decay ramps up (2000).
        gradient_accumulation_steps: batches per update (nominal batch 64).
        **kwargs: other `keras.optimizers.Optimizer` arguments.
    """

    def __init__(
        self,
        learning_rate=0.01,
        bias_learning_rate=None,
        momentum=0.937,
        nesterov=True,
        kernel_weight_decay=5e-4,
        ema_decay=0.9999,
        ema_ramp=2000.0,
        gradient_accumulation_steps=None,
        name="yolor_sgd",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        kwargs.pop("use_ema", None)
        super().__init__(
            learning_rate=learning_rate,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.bias_learning_rate = (
            learning_rate if bias_learning_rate is None else bias_learning_rate
        )
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.kernel_weight_decay = float(kernel_weight_decay)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_ramp = float(ema_ramp)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.averages = []
        if self.ema_decay is not None:
            self.averages = self.add_optimizer_variables(variables, "ema")
            # The average starts at the initial weights, as the official EMA
            # starts as a copy of the model.
            for average, variable in zip(self.averages, variables):
                average.assign(variable)

    def _decays(self, variable):
        return (
            self.kernel_weight_decay > 0
            and _short_name(variable) == "kernel"
            and len(variable.shape) >= 2
            and self._use_weight_decay(variable)
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        # `self.iterations` counts updates (it ignores accumulation batches);
        # the schedules are defined on batches, like the official `ni`.
        batches = self._iterations
        if _short_name(variable) in BIAS_NAMES:
            learning_rate = _schedule_value(self.bias_learning_rate, batches)
        learning_rate = ops.cast(learning_rate, dtype)
        momentum = ops.cast(_schedule_value(self.momentum, batches), dtype)
        gradient = ops.cast(gradient, dtype)
        if self._decays(variable):
            gradient = gradient + ops.cast(self.kernel_weight_decay, dtype) * variable
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, momentum * velocity + gradient)
        step = gradient + momentum * velocity if self.nesterov else velocity
        self.assign_sub(variable, learning_rate * step)
        if self.averages:
            updates = ops.cast(self.iterations + 1, dtype)
            decay = self.ema_decay * (1.0 - ops.exp(-updates / self.ema_ramp))
            average = self.averages[self._get_variable_index(variable)]
            self.assign(average, decay * average + (1.0 - decay) * variable)

    def ema_values(self, variables):
        """The EMA value of each of ``variables`` (None if it has none)."""
        if not self.averages:
            raise ValueError("This optimizer keeps no EMA (ema_decay=None).")
        return [self.averages[self._get_variable_index(v)] for v in variables]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bias_learning_rate": keras.optimizers.schedules.serialize(
                    self.bias_learning_rate
                )
                if isinstance(
                    self.bias_learning_rate, keras.optimizers.schedules.LearningRateSchedule
                )
                else self.bias_learning_rate,
                "momentum": keras.optimizers.schedules.serialize(self.momentum)
                if isinstance(self.momentum, keras.optimizers.schedules.LearningRateSchedule)
                else self.momentum,
                "nesterov": self.nesterov,
                "kernel_weight_decay": self.kernel_weight_decay,
                "ema_decay": self.ema_decay,
                "ema_ramp": self.ema_ramp,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        for key in ("learning_rate", "bias_learning_rate", "momentum"):
            if isinstance(config.get(key), dict):
                config[key] = keras.optimizers.schedules.deserialize(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def build_optimizer(recipe, steps_per_epoch, epochs, batch_size, nominal_batch_size=64):
    """`YOLORSGD` with the recipe's schedules, warmup and accumulation.

    Args:
        recipe: a mapping with the official hyperparameter keys (``lr0``,
            ``lrf``, ``momentum``, ``weight_decay``, ``warmup_epochs``,
            ``warmup_momentum``, ``warmup_bias_lr``; optional
            ``warmup_min_steps``, the official 1000 by default).
        steps_per_epoch: batches per epoch.
        epochs: total epochs.
        batch_size: global batch size.
        nominal_batch_size: the batch the recipe was tuned for (64): smaller
            batches accumulate gradients up to it, and weight decay is
            scaled by the ratio as the official code does.
    """
    accumulate = max(round(nominal_batch_size / batch_size), 1)
    minimum = recipe.get("warmup_min_steps", 1000)
    warmup = max(int(round(recipe["warmup_epochs"] * steps_per_epoch)), minimum)
    if recipe["warmup_epochs"] <= 0:
        warmup = 0
    weights_lr = YOLORLearningRate(
        recipe["lr0"], recipe["lrf"], epochs, steps_per_epoch, warmup, 0.0
    )
    bias_lr = YOLORLearningRate(
        recipe["lr0"], recipe["lrf"], epochs, steps_per_epoch, warmup, recipe["warmup_bias_lr"]
    )
    momentum = YOLORMomentum(recipe["momentum"], recipe["warmup_momentum"], warmup)
    return YOLORSGD(
        learning_rate=weights_lr,
        bias_learning_rate=bias_lr,
        momentum=momentum,
        nesterov=True,
        kernel_weight_decay=recipe["weight_decay"] * batch_size * accumulate / nominal_batch_size,
        gradient_accumulation_steps=accumulate if accumulate >= 2 else None,
    )
