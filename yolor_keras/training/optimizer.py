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

Like the official ``ModelEMA``, which averages every floating entry of the
model's state dict, the EMA also covers the BatchNorm moving means and
variances once the model registers them with `average_statistics` (the
detection task does so in `compile`).

Gradient accumulation follows the official warmup ramp when
``accumulation_warmup_steps`` is given: at batch ``ni`` the accumulation is
``max(1, round(interp(ni, [0, nw], [1, nbs / bs])))`` (NumPy's interp and
round-half-to-even), and the optimizer steps when ``ni % accumulate == 0``,
applying the sum of the gradients gathered since the last step. Without it,
Keras' fixed accumulation applies.
"""

import keras
import numpy as np
from keras import ops

from yolor_keras.training.schedules import YOLORLearningRate
from yolor_keras.training.schedules import YOLORMomentum

BIAS_NAMES = ("bias", "beta")


def _short_name(variable):
    # The TensorFlow backend hands `update_step` the underlying tf.Variable,
    # whose name carries scopes and a ":0" suffix.
    return variable.name.split(":")[0].split("/")[-1]


def _current_graph():
    # Tensors built while tracing belong to the graph being traced; eagerly
    # there is none and nothing may be reused from one batch to the next.
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return tf.compat.v1.get_default_graph()
    return object()


def _schedule_value(schedule, step):
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule(step)
    return schedule


def accumulation_ramp(ratio, warmup_steps):
    """The official accumulation at each warmup batch ``0 .. warmup_steps``.

    ``max(1, round(interp(ni, [0, nw], [1, ratio])))`` with NumPy's
    float64 interpolation and round-half-to-even, exactly as the official
    ``train.py`` computes it; after warmup the last value holds.

    Args:
        ratio: ``nominal_batch_size / batch_size`` (not rounded).
        warmup_steps: ``nw``, the warmup length in batches.

    Returns:
        An int64 array of ``warmup_steps + 1`` values.
    """
    steps = np.arange(int(warmup_steps) + 1)
    if warmup_steps <= 0:
        return np.array([max(1, int(np.round(ratio)))], "int64")
    values = np.interp(steps, [0, warmup_steps], [1.0, float(ratio)])
    return np.maximum(1, np.round(values)).astype("int64")


def _ceil_div(numerator, denominator):
    return ops.floor_divide(numerator + (denominator - 1), denominator)


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
        accumulation_warmup_steps: the official warmup length ``nw`` in
            batches; when given (even 0), accumulation follows the official
            ramp and step rule (see the module doc) instead of Keras' fixed
            one. None keeps Keras' fixed accumulation.
        accumulation_ratio: ``nominal_batch_size / batch_size``, the value
            the ramp rises to; defaults to ``gradient_accumulation_steps``.
            ``gradient_accumulation_steps`` must equal its rounded value.
        steps_per_epoch: batches per epoch; with the official rule, the
            gradients gathered at the end of an epoch that did not reach a
            step are dropped when the next epoch begins, as the official
            loop's ``zero_grad`` before each epoch does.
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
        accumulation_warmup_steps=None,
        accumulation_ratio=None,
        steps_per_epoch=None,
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
        accumulation = int(gradient_accumulation_steps or 1)
        self.accumulation_warmup_steps = (
            None if accumulation_warmup_steps is None else int(accumulation_warmup_steps)
        )
        self.accumulation_ratio = float(
            accumulation if accumulation_ratio is None else accumulation_ratio
        )
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1, got {steps_per_epoch}.")
        if self.accumulation_warmup_steps is not None:
            if self.accumulation_warmup_steps < 0:
                raise ValueError(
                    f"`accumulation_warmup_steps` must be >= 0, got {accumulation_warmup_steps}."
                )
            ramp = accumulation_ramp(self.accumulation_ratio, self.accumulation_warmup_steps)
            if int(ramp[-1]) != accumulation:
                raise ValueError(
                    f"`accumulation_ratio` {self.accumulation_ratio} rounds to {int(ramp[-1])} "
                    f"but `gradient_accumulation_steps` is {gradient_accumulation_steps}."
                )
            # The ramp is a non-decreasing step function; it is kept as the
            # first batch of each accumulation value 2 .. A.
            self._accumulation_starts = [
                int(np.argmax(ramp >= value)) for value in range(2, accumulation + 1)
            ]
        self._statistics = []
        self.statistic_averages = []

    @property
    def official_accumulation(self):
        """Whether accumulation follows the official ramp and step rule."""
        return bool(self.gradient_accumulation_steps) and self.accumulation_warmup_steps is not None

    def accumulation_at(self, batch):
        """The official accumulation at (0-based) batch ``batch``."""
        steps = ops.convert_to_tensor(batch)
        value = ops.ones_like(steps)
        for start in self._accumulation_starts:
            value = value + ops.cast(steps >= ops.cast(start, steps.dtype), steps.dtype)
        return value

    def updates_before(self, batches):
        """How many optimizer steps the official rule takes in ``batches`` batches.

        The batches ``ni`` in ``[0, batches)`` with ``ni % accumulation_at(ni)
        == 0``, counted in closed form over the ramp's constant stretches.
        """
        batches = ops.convert_to_tensor(batches)
        dtype = batches.dtype
        starts = [0] + list(self._accumulation_starts)
        count = ops.zeros_like(batches)
        for index, start in enumerate(starts):
            value = index + 1
            end = ops.maximum(batches, ops.cast(start, dtype))
            if index + 1 < len(starts):
                end = ops.minimum(end, ops.cast(starts[index + 1], dtype))
            # Multiples of `value` in [start, end).
            count = count + _ceil_div(end, ops.cast(value, dtype)) - (start + value - 1) // value
        return count

    @property
    def iterations(self):
        # Under the official rule the number of updates is not batches // A.
        if self.official_accumulation:
            return self.updates_before(self._iterations)
        return super().iterations

    def average_statistics(self, variables):
        """Also keeps an EMA of ``variables`` (BatchNorm moving statistics).

        The official EMA averages every float entry of the model's state
        dict, so the evaluated and saved model has averaged running means
        and variances, not the last batch's. Call before the optimizer is
        built (`YOLORObjectDetector.compile` does it).

        Args:
            variables: non-trainable float variables of the model, in a
                fixed order (it is the order of the saved averages).
        """
        variables = list(variables)
        if [id(v) for v in variables] == [id(v) for v in self._statistics]:
            return
        if self.built or self._statistics:
            raise ValueError(
                "YOLORSGD.average_statistics must be called once, before the optimizer "
                "is built (before the first training step or checkpoint load)."
            )
        if self.ema_decay is None:
            return
        self._statistics = variables
        # Created here, eagerly, so that they start as a copy of the
        # statistics before training, like the official EMA's deepcopy.
        self.statistic_averages = []
        for statistic in variables:
            average = self.add_variable_from_reference(statistic, name="statistic_ema")
            average.assign(statistic)
            self.statistic_averages.append(average)

    def statistic_pairs(self):
        """``(statistic, average)`` pairs of the averaged statistics."""
        return list(zip(self._statistics, self.statistic_averages))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.averages = []
        if self.ema_decay is not None:
            self.averages = self.add_optimizer_variables(variables, "ema")
            # The average starts at the initial weights, as the official EMA
            # starts as a copy of the model. When Keras builds the optimizer
            # while tracing the train function this assignment does not
            # last, so the first update also takes the pre-update weights as
            # the previous average (see `update_step`).
            for average, variable in zip(self.averages, variables):
                average.assign(variable)

    def _ema_decay_now(self, dtype):
        # Called during an update, before the iteration counter moves on, so
        # this update is number `iterations + 1`.
        updates = ops.cast(self.iterations + 1, dtype)
        return self.ema_decay * (1.0 - ops.exp(-updates / self.ema_ramp))

    def _is_official_update_step(self):
        batch = self._iterations
        return ops.equal(batch % self.accumulation_at(batch), 0)

    def _update_statistic_averages(self, active=None):
        """One EMA step of the statistics; ``active`` (bool tensor) masks it.

        A mask rather than a conditional, so that no tf.distribute
        synchronisation point sits inside a branch.
        """
        if not self.statistic_averages:
            return
        pairs = self.statistic_pairs()
        decay = self._ema_decay_now("float32")
        if active is None:
            active = ops.convert_to_tensor(True)

        def averaged(average, statistic):
            new = decay * average + (1.0 - decay) * ops.cast(statistic, average.dtype)
            return ops.where(active, new, average)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Under tf.distribute the averages are updated in cross-replica
            # context, each device from its own copy of the statistic.
            def update(distribution, pairs):
                for statistic, average in pairs:
                    distribution.extended.update(
                        average.value,
                        lambda a, s: a.assign(averaged(a, s)),
                        args=(statistic.value,),
                        group=False,
                    )

            tf.__internal__.distribute.interim.maybe_merge_call(
                update, tf.distribute.get_strategy(), pairs
            )
            return
        for statistic, average in pairs:
            self.assign(average, averaged(average, statistic))

    def _step_values(self):
        """The per-batch scalars every variable's update uses, built once per batch.

        Each is a small graph (the accumulation ramp alone is a few dozen
        ops); built per variable they made the traced step hundreds of
        thousands of ops.
        """
        graph = _current_graph()
        cached = getattr(self, "_step_values_cache", None)
        if cached is not None and cached[0] is graph:
            return cached[1]
        batches = self._iterations
        updates = self.iterations
        values = {
            "momentum": _schedule_value(self.momentum, batches),
            "bias_learning_rate": _schedule_value(self.bias_learning_rate, batches),
            "first_update": ops.equal(updates, 0),
        }
        if self.ema_decay is not None:
            count = ops.cast(updates + 1, "float32")
            values["ema_decay"] = self.ema_decay * (1.0 - ops.exp(-count / self.ema_ramp))
        if self.official_accumulation:
            values["is_update"] = ops.equal(batches % self.accumulation_at(batches), 0)
            if self.steps_per_epoch:
                values["keep"] = ops.not_equal(batches % self.steps_per_epoch, 0)
        self._step_values_cache = (graph, values)
        return values

    def _backend_apply_gradients(self, grads, trainable_variables):
        self._step_values_cache = None
        if not self.official_accumulation:
            super()._backend_apply_gradients(grads, trainable_variables)
            if self.gradient_accumulation_steps:
                # Keras' fixed accumulation steps on (batch + 1) % A == 0.
                steps = self.gradient_accumulation_steps
                self._update_statistic_averages((self._iterations + 1) % steps == 0)
            else:
                self._update_statistic_averages()
            return
        # The official rule. The per-variable work (gather or step) is chosen
        # inside `update_step`, so the all-reduce and merge_call of
        # tf.distribute run on every batch, outside any conditional (they
        # cannot run inside one). The sum of the all-reduced gradients of
        # the gathered batches is the all-reduce of their sum.
        self._backend_update_step(grads, trainable_variables, self.learning_rate)
        self._update_statistic_averages(self._is_official_update_step())

    def _decays(self, variable):
        return (
            self.kernel_weight_decay > 0
            and _short_name(variable) == "kernel"
            and len(variable.shape) >= 2
            and self._use_weight_decay(variable)
        )

    def update_step(self, gradient, variable, learning_rate):
        values = self._step_values()
        if not self.official_accumulation:
            self._sgd_step(gradient, variable, learning_rate, values)
            return
        accumulator = self._accumulated_gradients[self._get_variable_index(variable)]
        if "keep" in values:
            # The official loop zeroes the gradients before each epoch: what
            # an epoch gathered without reaching a step is dropped.
            gathered = ops.where(values["keep"], accumulator, ops.zeros_like(accumulator))
        else:
            gathered = accumulator
        gathered = gathered + ops.cast(gradient, accumulator.dtype)

        def step():
            # The loss is scaled for `A` batches per step (the nominal
            # batch); the official step applies the plain sum of the batches
            # gathered, so the sum is divided by `A`, whatever their number.
            self._sgd_step(
                gathered / float(self.gradient_accumulation_steps), variable, learning_rate, values
            )
            self.assign(accumulator, ops.zeros_like(accumulator))

        def gather():
            self.assign(accumulator, gathered)

        ops.cond(values["is_update"], step, gather)

    def _sgd_step(self, gradient, variable, learning_rate, values):
        dtype = variable.dtype
        # `self.iterations` counts updates (it ignores accumulation batches);
        # the schedules are defined on batches, like the official `ni`.
        if _short_name(variable) in BIAS_NAMES:
            learning_rate = values["bias_learning_rate"]
        learning_rate = ops.cast(learning_rate, dtype)
        momentum = ops.cast(values["momentum"], dtype)
        gradient = ops.cast(gradient, dtype)
        if self._decays(variable):
            gradient = gradient + ops.cast(self.kernel_weight_decay, dtype) * variable
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, momentum * velocity + gradient)
        step = gradient + momentum * velocity if self.nesterov else velocity
        if self.averages:
            average = self.averages[self._get_variable_index(variable)]
            # The EMA starts as a copy of the weights before the first update.
            self.assign(average, ops.where(values["first_update"], variable, average))
        self.assign_sub(variable, learning_rate * step)
        if self.averages:
            decay = ops.cast(values["ema_decay"], dtype)
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
                "bias_learning_rate": keras.optimizers.schedules.serialize(self.bias_learning_rate)
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
                "accumulation_warmup_steps": self.accumulation_warmup_steps,
                "accumulation_ratio": self.accumulation_ratio,
                "steps_per_epoch": self.steps_per_epoch,
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
            ``warmup_min_steps``, the official 1000 by default, and
            ``ema_decay``, 0.9999 by default).
        steps_per_epoch: batches per epoch.
        epochs: total epochs.
        batch_size: global batch size.
        nominal_batch_size: the batch the recipe was tuned for (64): smaller
            batches accumulate gradients up to it, ramping up over the
            warmup, and weight decay is scaled by the ratio as the official
            code does.
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
        ema_decay=recipe.get("ema_decay", 0.9999),
        gradient_accumulation_steps=accumulate if accumulate >= 2 else None,
        accumulation_warmup_steps=warmup if accumulate >= 2 else None,
        accumulation_ratio=nominal_batch_size / batch_size if accumulate >= 2 else None,
        steps_per_epoch=steps_per_epoch,
    )
