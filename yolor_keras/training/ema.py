"""Swapping the EMA weights kept by `YOLORSGD` in and out of a model.

The official recipe evaluates and saves the EMA copy of the model, while
training continues on the raw one. Its EMA averages every floating entry of
the state dict: the weights and the BatchNorm running means and variances.
`average_batchnorm_statistics` registers the latter with the optimizer;
`ema_weights` swaps both in.
"""

import contextlib

import numpy as np

from yolor_keras.tasks.yolor_object_detector import batchnorm_statistics
from yolor_keras.training.optimizer import YOLORSGD


def _unwrapped_optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    # Mixed float16 wraps the optimizer in a LossScaleOptimizer.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer if isinstance(optimizer, YOLORSGD) else None


def _yolor_optimizer(model):
    optimizer = _unwrapped_optimizer(model)
    if optimizer is not None and optimizer.built and optimizer.averages:
        return optimizer
    return None


def has_ema(model):
    """Whether ``model`` trains with a `YOLORSGD` that keeps an EMA."""
    return _yolor_optimizer(model) is not None


def average_batchnorm_statistics(model):
    """Makes ``model``'s `YOLORSGD` keep an EMA of its BatchNorm statistics.

    Call after ``model.compile`` and before training (or loading a
    checkpoint); `YOLORObjectDetector.compile` does it itself. Does nothing when the model is not compiled with a
    `YOLORSGD` that keeps an EMA.

    Returns:
        The number of statistics averaged.
    """
    optimizer = _unwrapped_optimizer(model)
    if optimizer is None or optimizer.ema_decay is None:
        return 0
    statistics = batchnorm_statistics(model)
    optimizer.average_statistics(statistics)
    return len(statistics)


@contextlib.contextmanager
def ema_weights(model):
    """Within the block, ``model``'s weights and BN statistics are their EMA values.

    The trainable weights always; the BatchNorm moving statistics when they
    were registered with `average_batchnorm_statistics`. Does nothing when
    the model has no EMA (not compiled with `YOLORSGD`, or not trained yet).
    """
    optimizer = _yolor_optimizer(model)
    if optimizer is None:
        yield model
        return
    variables = list(model.trainable_variables)
    averages = list(optimizer.ema_values(variables))
    for statistic, average in optimizer.statistic_pairs():
        variables.append(statistic)
        averages.append(average)
    backup = [np.array(variable) for variable in variables]
    for variable, average in zip(variables, averages):
        variable.assign(average)
    try:
        yield model
    finally:
        for variable, value in zip(variables, backup):
            variable.assign(value)
