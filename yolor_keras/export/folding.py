"""`fold`: the deploy form of a trained YOLOR detector, with identical outputs.

Every BatchNorm is folded into the conv before it, and each head's
ImplicitAdd / ImplicitMultiply pair into its 1x1 prediction conv
(YOLOv7-style reparameterisation). The result is a new model; the trained
one is left untouched and can keep training.
"""

import keras
import numpy as np

from yolor_keras.layers import fold_batchnorm
from yolor_keras.layers import fold_implicit_conv1x1
from yolor_keras.models.graph_plan import module_path
from yolor_keras.models.layer_walk import iter_layers


def _layers_by_path(model):
    """Layers by official module path (fold steps name layers that way)."""
    return {module_path(layer.name): layer for layer in iter_layers(model)}


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _batchnorm_scale_offset(layer):
    """Inference BatchNorm as ``x * scale + offset``."""
    gamma = _numpy(layer.gamma).astype(np.float64) if layer.scale else 1.0
    beta = _numpy(layer.beta).astype(np.float64) if layer.center else 0.0
    scale = gamma / np.sqrt(_numpy(layer.moving_variance).astype(np.float64) + layer.epsilon)
    offset = beta - _numpy(layer.moving_mean).astype(np.float64) * scale
    return scale.astype("float32"), offset.astype("float32")


def _conv_weights(layer):
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else None
    return kernel, bias


def _set_conv(layer, kernel, bias):
    layer.kernel.assign(kernel)
    if layer.use_bias:
        layer.bias.assign(np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias)


def fold(model):
    """Returns the deploy form of a `YOLORDetector`, with the same outputs.

    Args:
        model: a training-form `YOLORDetector` (``deploy=False``).

    Returns:
        A new `YOLORDetector` with ``deploy=True``: no BatchNormalization and
        no implicit layers; the paper branch's CSP BatchNorms, which
        normalise a concatenation that includes a residual sum and so have
        no single conv to fold into, become a fixed `ChannelAffine`.

    Raises:
        ValueError: if ``model`` is not a training-form YOLOR detector.
    """
    if not (hasattr(model, "fold_steps") and hasattr(model, "get_config")):
        raise ValueError(f"fold() needs a YOLORDetector; got {type(model).__name__}.")
    if getattr(model, "deploy", False):
        raise ValueError(f"Model '{model.name}' is already in deploy form.")
    config = model.get_config()
    config.update(deploy=True, name=f"{model.name}_deploy")
    folded = type(model).from_config(config)

    source = _layers_by_path(model)
    target = _layers_by_path(folded)
    assigned = set()
    for step in model.fold_steps():
        kind, name = step[0], step[1]
        layer = target[name]
        if kind == "copy":
            _set_conv(layer, *_conv_weights(source[name]))
        elif kind == "conv_bn":
            batchnorm = source[step[2]]
            kernel, bias = _conv_weights(source[name])
            gamma = _numpy(batchnorm.gamma) if batchnorm.scale else None
            beta = _numpy(batchnorm.beta) if batchnorm.center else None
            _set_conv(
                layer,
                *fold_batchnorm(
                    kernel,
                    bias,
                    gamma,
                    beta,
                    _numpy(batchnorm.moving_mean),
                    _numpy(batchnorm.moving_variance),
                    batchnorm.epsilon,
                ),
            )
        elif kind == "bn_affine":
            scale, offset = _batchnorm_scale_offset(source[name])
            layer.scale.assign(scale)
            layer.offset.assign(offset)
        elif kind == "implicit_conv":
            kernel, bias = _conv_weights(source[name])
            add_vector = _numpy(source[step[2]].implicit_vector())
            mul_vector = _numpy(source[step[3]].implicit_vector())
            _set_conv(layer, *fold_implicit_conv1x1(kernel, bias, add_vector, mul_vector))
        else:
            raise ValueError(f"Unknown fold step {step!r}.")
        assigned.add(name)

    unassigned = [
        layer.name
        for layer in iter_layers(folded)
        if layer.weights and module_path(layer.name) not in assigned
    ]
    if unassigned:
        raise ValueError(f"fold() left deploy layers without weights: {unassigned[:10]}.")
    return folded
