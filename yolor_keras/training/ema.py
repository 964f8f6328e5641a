"""Swapping the EMA weights kept by `YOLORSGD` in and out of a model.

The official recipe evaluates and saves the EMA copy of the weights, while
training continues on the raw weights.
"""

import contextlib

import numpy as np

from yolor_keras.training.optimizer import YOLORSGD


def _yolor_optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    # Mixed float16 wraps the optimizer in a LossScaleOptimizer.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(optimizer, YOLORSGD) and optimizer.built and optimizer.averages:
        return optimizer
    return None


def has_ema(model):
    """Whether ``model`` trains with a `YOLORSGD` that keeps an EMA."""
    return _yolor_optimizer(model) is not None


@contextlib.contextmanager
def ema_weights(model):
    """Within the block, ``model``'s trainable weights are their EMA values.

    Does nothing when the model has no EMA (not compiled with `YOLORSGD`, or
    not trained yet).
    """
    optimizer = _yolor_optimizer(model)
    if optimizer is None:
        yield model
        return
    variables = model.trainable_variables
    backup = [np.array(variable) for variable in variables]
    for variable, average in zip(variables, optimizer.ema_values(variables)):
        variable.assign(average)
    try:
        yield model
    finally:
        for variable, value in zip(variables, backup):
            variable.assign(value)
