"""Builds Keras layers from `graph_plan` nodes, in training or deploy form.

Training form is the official computation: conv -> BatchNorm -> SiLU, and
heads with their implicit layers. Deploy form is the same graph with every
BatchNorm folded into its conv (the conv gains a bias), the implicit layers
folded into the head's 1x1 conv, and the few BatchNorms that have no conv to
fold into replaced by a fixed `ChannelAffine`. `fold_steps` lists, for each
deploy layer, which training layers its weights come from (by official
module path; `graph_plan.keras_name` gives the layer names).
"""

import keras

from yolor_keras.layers import BatchNormalization
from yolor_keras.layers import ChannelAffine
from yolor_keras.layers import FusedConv2D
from yolor_keras.layers import ReOrg
from yolor_keras.models.graph_plan import keras_name

# PyTorch's BatchNorm momentum 0.03 (both branches) is Keras' 0.97.
BATCHNORM_MOMENTUM = 0.97


def torch_conv_initializers(kernel_size, in_channels):
    """PyTorch's default `nn.Conv2d` initialisation, as Keras initializers.

    Neither official branch re-initialises its convolutions, so they start
    from PyTorch's defaults: ``kaiming_uniform_(a=sqrt(5))`` for the kernel,
    which is U(-b, b) with ``b = 1 / sqrt(fan_in)`` (variance
    ``1 / (3 * fan_in)``), and U(-b, b) for the bias, with ``fan_in =
    in_channels * kernel_size ** 2``. Keras' default glorot_uniform would
    start with 2 to 4 times that variance.

    Returns:
        ``(kernel_initializer, bias_initializer)``.
    """
    fan_in = int(in_channels) * int(kernel_size) ** 2
    bound = 1.0 / fan_in**0.5
    kernel = keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )
    bias = keras.initializers.RandomUniform(-bound, bound)
    return kernel, bias


def _deploy_conv(node, x):
    """The deploy form's conv: conv + bias (the folded BatchNorm) + SiLU in one
    `FusedConv2D`, padded on every side like PyTorch, which TensorFlow runs as
    a single oneDNN convolution."""
    kernel = node["kernel"]
    kernel_initializer, bias_initializer = torch_conv_initializers(kernel, x.shape[-1])
    return FusedConv2D(
        node["filters"],
        kernel,
        strides=node["stride"],
        pad=kernel // 2,
        activation="silu" if node["act_name"] else None,
        use_bias=True,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        name=keras_name(node["conv_name"]),
    )(x)


def _conv(node, inputs, bn_epsilon, deploy):
    x = inputs[0]
    has_bn = node["bn_name"] is not None
    if deploy and (node["bias"] or has_bn):
        return _deploy_conv(node, x)
    # From here on: the training form, or a deploy conv with no bias.
    kernel, stride = node["kernel"], node["stride"]
    padding = "valid"
    if kernel > 1:
        if stride == 1 and kernel % 2 == 1:
            # Stride 1, odd kernel: "same" pads kernel // 2 on every side,
            # exactly like PyTorch, without a separate pad op.
            padding = "same"
        else:
            # "same" would pad only bottom/right here; PyTorch pads all sides.
            x = keras.layers.ZeroPadding2D(kernel // 2, name=keras_name(node["pad_name"]))(x)
    kernel_initializer, bias_initializer = torch_conv_initializers(kernel, x.shape[-1])
    x = keras.layers.Conv2D(
        node["filters"],
        kernel,
        strides=stride,
        padding=padding,
        use_bias=node["bias"],
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        name=keras_name(node["conv_name"]),
    )(x)
    if has_bn:
        x = BatchNormalization(
            epsilon=bn_epsilon, momentum=BATCHNORM_MOMENTUM, name=keras_name(node["bn_name"])
        )(x)
    if node["act_name"]:
        x = keras.layers.Activation("silu", name=keras_name(node["act_name"]))(x)
    return x


def _bn_act(node, inputs, bn_epsilon, deploy):
    if deploy:
        x = ChannelAffine(name=keras_name(node["bn_name"]))(inputs[0])
    else:
        x = BatchNormalization(
            epsilon=bn_epsilon, momentum=BATCHNORM_MOMENTUM, name=keras_name(node["bn_name"])
        )(inputs[0])
    return keras.layers.Activation("silu", name=keras_name(node["act_name"]))(x)


def _concat(node, inputs, bn_epsilon, deploy):
    return keras.layers.Concatenate(axis=-1, name=keras_name(node["name"]))(inputs)


def _add(node, inputs, bn_epsilon, deploy):
    return keras.layers.Add(name=keras_name(node["name"]))(inputs)


def _maxpool(node, inputs, bn_epsilon, deploy):
    size, stride = node["size"], node["stride"]
    if stride == 1:
        # Stride 1 with PyTorch's padding size // 2 (odd sizes): "same" pads
        # with -inf, which never wins the max, just like PyTorch's padding.
        padding = "same"
    elif stride == size:
        padding = "valid"
    else:
        raise ValueError(
            f"Node {node['id']}: max-pool size {size} with stride {stride} is not supported."
        )
    return keras.layers.MaxPooling2D(
        size, strides=stride, padding=padding, name=keras_name(node["name"])
    )(inputs[0])


def _upsample(node, inputs, bn_epsilon, deploy):
    return keras.layers.UpSampling2D(2, interpolation="nearest", name=keras_name(node["name"]))(
        inputs[0]
    )


def _reorg(node, inputs, bn_epsilon, deploy):
    return ReOrg(name=keras_name(node["name"]))(inputs[0])


def _alias(node, inputs, bn_epsilon, deploy):
    return inputs[0]


_BUILDERS = {
    "conv": _conv,
    "bn_act": _bn_act,
    "concat": _concat,
    "add": _add,
    "maxpool": _maxpool,
    "upsample": _upsample,
    "reorg": _reorg,
    "alias": _alias,
}


def build_nodes(nodes, tensors, *, bn_epsilon, deploy=False):
    """Applies ``nodes`` in order; ``tensors`` maps node id -> tensor and is updated.

    Args:
        nodes: `graph_plan` nodes in topological order.
        tensors: the already available tensors by node id (the inputs).
        bn_epsilon: BatchNorm epsilon.
        deploy: build the deploy form (no BatchNorm).

    Returns:
        ``tensors``, now holding every node's output too.
    """
    for node in nodes:
        inputs = [tensors[i] for i in node["inputs"]]
        tensors[node["id"]] = _BUILDERS[node["op"]](node, inputs, bn_epsilon, deploy)
    return tensors


def fold_steps(nodes):
    """Lists how each weighted deploy layer of ``nodes`` gets its weights.

    Returns:
        A list of tuples: ``("conv_bn", conv, bn)`` for a conv with BatchNorm,
        ``("copy", conv)`` for a conv without, and ``("bn_affine", bn)`` for a
        standalone BatchNorm that becomes a `ChannelAffine`.
    """
    steps = []
    for node in nodes:
        if node["op"] == "conv":
            if node["bn_name"] is None:
                steps.append(("copy", node["conv_name"]))
            else:
                steps.append(("conv_bn", node["conv_name"], node["bn_name"]))
        elif node["op"] == "bn_act":
            steps.append(("bn_affine", node["bn_name"]))
    return steps
