"""A branch-neutral description of a YOLOR network, split into its three parts.

Both official code bases (the darknet-cfg `main` branch and the YAML `paper`
branch) are compiled into the same small vocabulary of *nodes*, each a dict
with an ``id``, an ``op`` and the ids of its ``inputs``:

* ``conv``: a convolution, optionally followed by BatchNorm and SiLU.
* ``bn_act``: BatchNorm + SiLU on its own (the paper branch's CSP blocks).
* ``concat`` / ``add``: channel concatenation / elementwise sum.
* ``maxpool``, ``upsample`` (nearest x2), ``reorg`` (space-to-depth).
* ``alias``: the same tensor under another id (a one-input darknet route).

Every node carries the official module path of each layer it creates
(``module_list.12.Conv2d``, ``model.3.cv1.conv``), so the Keras layers are
named like the PyTorch state_dict and conversion is a matter of names. Keras
names use ``-`` where the module path has ``.`` (``model-3-cv1-conv``): the
PyTorch backend of Keras rejects dots in names, and no official module name
contains a ``-``, so the mapping is exact both ways (`keras_name`,
`module_path`). A `GraphPlan` groups the nodes into backbone, neck and
per-level head, which become `YOLORBackbone`, `YOLORNeck` and `YOLORHead`.
"""

import dataclasses
import math


def keras_name(path):
    """Official module path -> Keras layer name: ``model.3.cv1`` -> ``model-3-cv1``."""
    return path.replace(".", "-")


def module_path(name):
    """Keras layer name -> official module path (the inverse of `keras_name`)."""
    return name.replace("-", ".")


def scale_width(filters, width_multiplier):
    """Scales a channel count: ``ceil(filters * width / 8) * 8``, at least 8.

    This equals the paper branch's ``make_divisible(filters * width, 8)`` and
    is the rule that produced the official tiny test models.
    """
    return max(8, math.ceil(filters * width_multiplier / 8) * 8)


def scale_depth(repeats, depth_multiplier):
    """Scales a repeat count like the paper branch: ``max(round(n * depth), 1)``.

    A count of 1 is never scaled, as in the official parser.
    """
    if repeats <= 1:
        return repeats
    return max(round(repeats * depth_multiplier), 1)


def conv_node(
    node_id,
    input_id,
    filters,
    kernel,
    stride=1,
    *,
    conv_name,
    bn_name=None,
    act_name=None,
    pad_name=None,
    bias=False,
):
    """Returns a ``conv`` node; SiLU follows when ``act_name`` is given."""
    return {
        "id": node_id,
        "op": "conv",
        "inputs": [input_id],
        "filters": int(filters),
        "kernel": int(kernel),
        "stride": int(stride),
        "conv_name": conv_name,
        "bn_name": bn_name,
        "act_name": act_name,
        "pad_name": pad_name or f"{conv_name}.pad",
        "bias": bool(bias),
    }


def op_node(node_id, op, inputs, name=None, **params):
    """Returns a parameter-free node (concat, add, maxpool, upsample, reorg, alias)."""
    return {"id": node_id, "op": op, "inputs": list(inputs), "name": name, **params}


@dataclasses.dataclass
class HeadLevel:
    """One detection level: conv3x3+BN+SiLU -> ImplicitAdd -> 1x1 conv -> ImplicitMultiply.

    Args:
        level: pyramid level name, e.g. ``"P3"``.
        stride: the level's stride in input pixels.
        input_id: id of the neck output the head reads.
        conv: the 3x3 ``conv`` node (with BN and SiLU).
        implicit_add_name: layer name of the ImplicitAdd on the conv's output.
        output_conv_name: layer name of the 1x1 prediction conv (with bias).
        implicit_multiply_name: layer name of the ImplicitMultiply after it.
        anchors: the level's anchors as ``[[w, h], ...]`` in input pixels.
    """

    level: str
    stride: int
    input_id: str
    conv: dict
    implicit_add_name: str
    output_conv_name: str
    implicit_multiply_name: str
    anchors: list


@dataclasses.dataclass
class GraphPlan:
    """A whole network as backbone nodes, neck nodes and head levels.

    Args:
        branch: ``"main"`` or ``"paper"``.
        bn_epsilon: the BatchNorm epsilon of the branch.
        backbone_nodes: nodes from the image to the pyramid features.
        pyramid: level name -> node id of the backbone feature, by stride.
        pyramid_strides: level name -> stride.
        neck_nodes: nodes of the FPN/PAN part.
        neck_outputs: level name -> node id of the fused feature.
        head_levels: one `HeadLevel` per detection level, stride ascending.
        num_classes: classes predicted per anchor.
        channels: node id -> output channels, for every node.
    """

    branch: str
    bn_epsilon: float
    backbone_nodes: list
    pyramid: dict
    pyramid_strides: dict
    neck_nodes: list
    neck_outputs: dict
    head_levels: list
    num_classes: int
    channels: dict

    @property
    def num_anchors(self):
        return len(self.head_levels[0].anchors)

    @property
    def outputs_per_anchor(self):
        return 5 + self.num_classes

    @property
    def max_stride(self):
        return max(self.pyramid_strides.values())


def infer_shapes(nodes, channels, strides):
    """Fills ``channels`` and ``strides`` (node id -> value) for ``nodes``, in order.

    Raises:
        ValueError: if a concat or add joins maps of different strides, or an
            add joins different channel counts.
    """
    for node in nodes:
        in_channels = [channels[i] for i in node["inputs"]]
        in_strides = [strides[i] for i in node["inputs"]]
        op = node["op"]
        if op in ("concat", "add") and len(set(in_strides)) != 1:
            raise ValueError(
                f"Node {node['id']} ({op}) joins feature maps of different strides "
                f"{in_strides} (inputs {node['inputs']})."
            )
        if op == "add" and len(set(in_channels)) != 1:
            raise ValueError(
                f"Node {node['id']} (add) joins different channel counts {in_channels} "
                f"(inputs {node['inputs']})."
            )
        stride = in_strides[0]
        if op == "conv":
            out = node["filters"]
            stride *= node["stride"]
        elif op == "concat":
            out = sum(in_channels)
        elif op == "reorg":
            out = 4 * in_channels[0]
            stride *= 2
        elif op == "maxpool":
            out = in_channels[0]
            stride *= node["stride"]
        elif op == "upsample":
            out = in_channels[0]
            stride //= 2
        elif op in ("add", "alias", "bn_act"):
            out = in_channels[0]
        else:
            raise ValueError(f"Node {node['id']} has an unknown op {op!r}.")
        channels[node["id"]] = out
        strides[node["id"]] = stride
    return channels, strides


def level_name(stride):
    """``8 -> "P3"``: the pyramid level of a power-of-two stride."""
    return f"P{round(math.log2(stride))}"
