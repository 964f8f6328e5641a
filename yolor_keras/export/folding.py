"""`fold`: the deploy form of a trained YOLOR task, with identical outputs.

Every BatchNorm is folded into the conv before it, and each head's
ImplicitAdd / ImplicitMultiply pair into the linear layer they surround
(the detection head's 1x1 prediction conv, the pooled heads' Dense layers;
YOLOv7-style reparameterisation). The result is a new model; the trained one
is left untouched and can keep training.
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


def _linear_weights(layer):
    """Kernel as a conv kernel ``(kh, kw, Cin, Cout)`` and bias, for a Conv2D or Dense."""
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else None
    if kernel.ndim == 2:
        kernel = kernel[None, None]
    return kernel, bias


def _set_linear(layer, kernel, bias):
    layer.kernel.assign(np.reshape(kernel, tuple(layer.kernel.shape)))
    if layer.use_bias:
        layer.bias.assign(np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias)


def _apply_fold_step(step, source, target):
    kind, name = step[0], step[1]
    layer = target[name]
    if kind == "copy":
        _set_linear(layer, *_linear_weights(source[name]))
    elif kind == "conv_bn":
        batchnorm = source[step[2]]
        kernel, bias = _linear_weights(source[name])
        _set_linear(
            layer,
            *fold_batchnorm(
                kernel,
                bias,
                _numpy(batchnorm.gamma) if batchnorm.scale else None,
                _numpy(batchnorm.beta) if batchnorm.center else None,
                _numpy(batchnorm.moving_mean),
                _numpy(batchnorm.moving_variance),
                batchnorm.epsilon,
            ),
        )
    elif kind == "bn_affine":
        # A BatchNorm with no conv before it: x * scale + offset.
        scale, offset = _batchnorm_scale_offset(source[name])
        layer.scale.assign(scale)
        layer.offset.assign(offset)
    elif kind == "implicit_linear":
        add_vector = None if step[2] is None else _numpy(source[step[2]].implicit_vector())
        mul_vector = None if step[3] is None else _numpy(source[step[3]].implicit_vector())
        kernel, bias = _linear_weights(source[name])
        _set_linear(layer, *fold_implicit_conv1x1(kernel, bias, add_vector, mul_vector))
    else:
        raise ValueError(f"Unknown fold step {step!r}.")


def fold(model):
    """Returns the deploy form of a `YOLORObjectDetector`, with the same outputs.

    Args:
        model: a training-form `YOLORObjectDetector` (any heads); it is not
            modified.

    Returns:
        A new task whose backbone has ``deploy=True``: no BatchNormalization
        and no implicit layers; the paper branch's CSP BatchNorms, which
        normalise a concatenation that includes a residual sum and so have
        no single conv to fold into, become a fixed `ChannelAffine`.

    Raises:
        ValueError: if ``model`` is not a training-form YOLOR task.
    """
    if not (hasattr(model, "fold_steps") and hasattr(model, "backbone")):
        raise ValueError(f"fold() needs a YOLORObjectDetector; got {type(model).__name__}.")
    if model.deploy:
        raise ValueError(f"Model '{model.name}' is already in deploy form.")
    config = model.get_config()
    backbone = dict(config["backbone"])
    backbone["config"] = dict(backbone["config"], deploy=True)
    config.update(backbone=backbone, name=f"{model.name}_deploy")
    folded = type(model).from_config(config)

    source = _layers_by_path(model)
    target = _layers_by_path(folded)
    assigned = set()
    for step in model.fold_steps():
        _apply_fold_step(step, source, target)
        assigned.add(step[1])
    unassigned = [
        layer.name
        for layer in iter_layers(folded)
        if layer.weights and module_path(layer.name) not in assigned
    ]
    if unassigned:
        raise ValueError(f"fold() left deploy layers without weights: {unassigned[:10]}.")
    return folded


def deploy_form(model):
    """Returns the deploy form of a task, folding a copy when needed.

    BatchNorm and the implicit layers fold exactly into the convolutions,
    so exports carry fewer ops and weights with the same outputs. The
    trained model itself is never modified.

    Args:
        model: a `YOLORObjectDetector`, in training or deploy form.

    Returns:
        `model` itself when it is already in deploy form, else a folded copy.
    """
    return model if model.deploy else fold(model)
