"""`YOLORSGD` in a traced step with the official accumulation, against the official loop.

Each variable is gathered or stepped in its own conditional; these tests run
the traced graph for a few epochs
with several kinds of variables (a decayed kernel, a bias with its own rate,
a BatchNorm scale) and compare weights, momenta and EMA with a NumPy run of
the official loop: ``zero_grad`` at each epoch start, gradients summed until
``ni % accumulate == 0``, then PyTorch's Nesterov SGD with L2 decay on the
kernel and the ramped EMA.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from yolor_keras.training import YOLORSGD


def _official_accumulation(ni, nw, ratio):
    return max(1, int(np.round(np.interp(ni, [0, nw], [1, ratio]))))


def _reference(initial, gradients, lr, bias_lr, momentum, decay, nominal, nw, per_epoch, ramp):
    weights = {k: v.astype("float64") for k, v in initial.items()}
    velocity = {k: np.zeros_like(v) for k, v in weights.items()}
    ema = {k: v.copy() for k, v in weights.items()}
    gathered = {k: np.zeros_like(v) for k, v in weights.items()}
    updates = 0
    for ni, batch in enumerate(gradients):
        if ni % per_epoch == 0:
            for value in gathered.values():
                value[:] = 0.0
        for name, gradient in batch.items():
            # Keras' loss is scaled for the nominal batch: the official
            # per-batch gradient is 1 / nominal of it.
            gathered[name] += gradient / nominal
        if ni % _official_accumulation(ni, nw, nominal) != 0:
            continue
        updates += 1
        ema_decay = 0.9999 * (1 - math.exp(-updates / ramp))
        for name in weights:
            g = gathered[name].copy()
            if name == "kernel":
                g += decay * weights[name]
            velocity[name] = momentum * velocity[name] + g
            rate = bias_lr if name == "bias" else lr
            weights[name] = weights[name] - rate * (g + momentum * velocity[name])
            ema[name] = ema_decay * ema[name] + (1 - ema_decay) * weights[name]
            gathered[name][:] = 0.0
    return weights, velocity, ema, updates


def test_traced_official_accumulation_matches_the_official_loop():
    rng = np.random.default_rng(7)
    initial = {
        "kernel": rng.normal(size=(3, 3, 2, 2)).astype("float32"),
        "bias": rng.normal(size=(2,)).astype("float32"),
        "gamma": rng.uniform(0.5, 1.5, size=(2,)).astype("float32"),
    }
    variables = {k: keras.Variable(v, name=k) for k, v in initial.items()}
    names = list(variables)
    nw, per_epoch, nominal = 6, 7, 4
    settings = dict(lr=0.05, bias_lr=0.2, momentum=0.9, decay=0.01, ramp=3.0)
    optimizer = YOLORSGD(
        learning_rate=settings["lr"],
        bias_learning_rate=settings["bias_lr"],
        momentum=settings["momentum"],
        nesterov=True,
        kernel_weight_decay=settings["decay"],
        ema_ramp=settings["ramp"],
        gradient_accumulation_steps=nominal,
        accumulation_warmup_steps=nw,
        accumulation_ratio=float(nominal),
        steps_per_epoch=per_epoch,
    )
    optimizer.build([variables[k] for k in names])

    @tf.function
    def apply(*gradients):
        optimizer.apply(list(gradients), [variables[k] for k in names])

    gradients = [
        {k: rng.normal(size=v.shape).astype("float32") for k, v in initial.items()}
        for _ in range(23)
    ]
    for batch in gradients:
        apply(*[batch[k] for k in names])

    weights, velocity, ema, updates = _reference(
        initial, gradients, nominal=nominal, nw=nw, per_epoch=per_epoch, **settings
    )
    assert int(optimizer.iterations) == updates
    ema_values = optimizer.ema_values([variables[k] for k in names])
    for index, name in enumerate(names):
        np.testing.assert_allclose(np.asarray(variables[name]), weights[name], rtol=1e-5, atol=1e-5)
        momentum_slot = optimizer.momentums[optimizer._get_variable_index(variables[name])]
        np.testing.assert_allclose(np.asarray(momentum_slot), velocity[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(ema_values[index]), ema[name], rtol=1e-5, atol=1e-5)
