"""The `main` branch's darknet-style architectures, written as block generators.

A main-branch architecture is described by a compact dict (see
`yolor_presets`) and expanded here into the official block list: the same
blocks, in the same order, with the same indices as the official ``.cfg``
files, so that every block index (``module_list.<i>`` in a checkpoint)
means the same layer. The blocks use the cfg vocabulary (``convolutional``,
``route``, ``shortcut``, ...) with absolute indices, and
`darknet_plan` compiles them into a `GraphPlan`.

Architecture keys:

* ``stem``: ``"reorg"`` (space-to-depth, then a 3x3 conv; the P6 family) or
  ``"bottleneck"`` (3x3 conv, stride-2 3x3 conv, one residual bottleneck;
  the CSP family). ``stem_widths`` gives the stem convs' widths.
* ``stages``: ``[width, repeats]`` per stride-2 CSP stage. Stage outputs
  from stride 8 on are the pyramid features.
* ``stage_transition``: whether a CSP stage has a 1x1 conv after its
  bottlenecks (CSP family) or concatenates them directly (P6 family).
* ``spp_width`` / ``spp_pairs``: width of the SPP-CSP block on the top level
  and the number of (1x1, 3x3) conv pairs after its pooling.
* ``neck_widths`` (stride ascending) / ``neck_pairs``: widths of the FPN/PAN
  CSP blocks and their (1x1, 3x3) pair count.
* ``head_widths``: width of each level's 3x3 head conv.
* ``anchors``: per level, ``[w0, h0, w1, h1, ...]`` in input pixels.
"""

from yolor_keras.models.graph_plan import GraphPlan
from yolor_keras.models.graph_plan import HeadLevel
from yolor_keras.models.graph_plan import conv_node
from yolor_keras.models.graph_plan import infer_shapes
from yolor_keras.models.graph_plan import level_name
from yolor_keras.models.graph_plan import op_node
from yolor_keras.models.graph_plan import scale_depth
from yolor_keras.models.graph_plan import scale_width

MAIN_BN_EPSILON = 1e-4

REQUIRED_KEYS = (
    "stem",
    "stem_widths",
    "stages",
    "stage_transition",
    "spp_width",
    "spp_pairs",
    "neck_widths",
    "neck_pairs",
    "head_widths",
    "anchors",
)


class _BlockWriter:
    """Appends darknet blocks and returns their indices."""

    def __init__(self, width_multiplier):
        self.blocks = []
        self.width_multiplier = width_multiplier

    @property
    def last(self):
        return len(self.blocks) - 1

    def add(self, block_type, **fields):
        self.blocks.append({"type": block_type, **fields})
        return self.last

    def conv(self, filters, size, stride=1):
        return self.add(
            "convolutional",
            batch_normalize=1,
            filters=scale_width(filters, self.width_multiplier),
            size=size,
            stride=stride,
            activation="silu",
        )

    def route(self, *layers):
        return self.add("route", layers=list(layers))

    def csp_stage(self, width, repeats, transition):
        """A stride-2 conv, then a CSP stage of residual bottlenecks."""
        down = self.conv(width, 3, 2)
        hidden = width // 2
        split = self.conv(hidden, 1)
        self.route(down)
        previous = self.conv(hidden, 1)
        for _ in range(repeats):
            self.conv(hidden, 1)
            self.conv(hidden, 3)
            previous = self.add("shortcut", **{"from": previous})
        if transition:
            previous = self.conv(hidden, 1)
        self.route(previous, split)
        return self.conv(width, 1)

    def csp2_block(self, width, pairs):
        """The neck's CSP block: plain (1x1, 3x3) pairs, no residuals."""
        entry = self.conv(width, 1)
        split = self.conv(width, 1)
        self.route(entry)
        for _ in range(pairs):
            self.conv(width, 1)
            previous = self.conv(width, 3)
        self.route(previous, split)
        return self.conv(width, 1)

    def spp_csp(self, width, pairs, source):
        """SPP with max-pools 5, 9, 13 inside a CSP split."""
        split = self.conv(width, 1)
        self.route(source)
        self.conv(width, 1)
        self.conv(width, 3)
        pooled_input = self.conv(width, 1)
        pools = []
        for position, size in enumerate((5, 9, 13)):
            if position:
                self.route(pooled_input)
            pools.append(self.add("maxpool", size=size, stride=1))
        self.route(pools[2], pools[1], pools[0], pooled_input)
        for _ in range(pairs):
            self.conv(width, 1)
            previous = self.conv(width, 3)
        self.route(previous, split)
        return self.conv(width, 1)


def _check_architecture(architecture):
    missing = [key for key in REQUIRED_KEYS if key not in architecture]
    if missing:
        raise ValueError(f"Main-branch architecture is missing keys {missing}.")
    levels = len(architecture["stages"]) - 1
    for key in ("neck_widths", "head_widths", "anchors"):
        if len(architecture[key]) != levels:
            raise ValueError(
                f"Main-branch architecture: '{key}' has {len(architecture[key])} entries "
                f"but the {len(architecture['stages'])} stages give {levels} pyramid levels."
            )
    if architecture["stem"] not in ("reorg", "bottleneck"):
        raise ValueError(
            f"Main-branch architecture: unknown stem {architecture['stem']!r}; "
            "expected 'reorg' or 'bottleneck'."
        )


def darknet_blocks(architecture, num_classes=80, width_multiplier=1.0, depth_multiplier=1.0):
    """Expands a main-branch architecture into its darknet blocks.

    Args:
        architecture: a main-branch architecture dict (see the module doc).
        num_classes: classes per anchor.
        width_multiplier: channel multiplier (see `scale_width`).
        depth_multiplier: repeat multiplier (see `scale_depth`).

    Returns:
        ``(blocks, layout)``: the blocks as dicts in cfg vocabulary with
        absolute indices, and ``layout`` with the block indices of the
        ``"pyramid"`` features and ``"neck_outputs"`` (stride ascending) and
        the index of the first head block, ``"head_start"``.
    """
    _check_architecture(architecture)
    writer = _BlockWriter(width_multiplier)
    num_anchors = len(architecture["anchors"][0]) // 2
    outputs_per_level = num_anchors * (5 + num_classes)

    stem_widths = architecture["stem_widths"]
    if architecture["stem"] == "reorg":
        writer.add("reorg")
        writer.conv(stem_widths[0], 3)
    else:
        writer.conv(stem_widths[0], 3)
        down = writer.conv(stem_widths[1], 3, 2)
        writer.conv(stem_widths[1] // 2, 1)
        writer.conv(stem_widths[1], 3)
        writer.add("shortcut", **{"from": down})

    stage_outputs = [
        writer.csp_stage(
            width,
            scale_depth(repeats, depth_multiplier),
            architecture["stage_transition"],
        )
        for width, repeats in architecture["stages"]
    ]
    pyramid = stage_outputs[1:]  # the first stage is stride 4
    pairs = scale_depth(architecture["neck_pairs"], depth_multiplier)
    neck_widths = architecture["neck_widths"]

    # Top-down (FPN): from the SPP output down to the finest level.
    top_down = [None] * len(pyramid)
    top_down[-1] = writer.spp_csp(architecture["spp_width"], architecture["spp_pairs"], pyramid[-1])
    for level in range(len(pyramid) - 2, -1, -1):
        writer.conv(neck_widths[level], 1)
        upsampled = writer.add("upsample", stride=2)
        writer.route(pyramid[level])
        writer.conv(neck_widths[level], 1)
        writer.route(writer.last, upsampled)
        top_down[level] = writer.csp2_block(neck_widths[level], pairs)

    # Bottom-up (PAN): back up to the coarsest level.
    neck_outputs = [top_down[0]]
    for level in range(1, len(pyramid)):
        writer.conv(neck_widths[level], 3, 2)
        writer.route(writer.last, top_down[level])
        neck_outputs.append(writer.csp2_block(neck_widths[level], pairs))

    head_start = writer.last + 1
    adds = [
        writer.add("implicit_add", filters=scale_width(width, width_multiplier))
        for width in architecture["head_widths"]
    ]
    muls = [writer.add("implicit_mul", filters=outputs_per_level) for _ in pyramid]
    all_anchors = [value for level in architecture["anchors"] for value in level]
    for level, width in enumerate(architecture["head_widths"]):
        writer.route(neck_outputs[level])
        writer.conv(width, 3)
        writer.add("shift_channels", **{"from": adds[level]})
        writer.add(
            "convolutional",
            batch_normalize=0,
            filters=outputs_per_level,
            size=1,
            stride=1,
            activation="linear",
        )
        writer.add("control_channels", **{"from": muls[level]})
        writer.add(
            "yolo",
            mask=list(range(level * num_anchors, (level + 1) * num_anchors)),
            anchors=list(all_anchors),
            classes=num_classes,
        )
    layout = {"pyramid": pyramid, "neck_outputs": neck_outputs, "head_start": head_start}
    return writer.blocks, layout


def _block_conv_node(index, block, input_id):
    prefix = f"module_list.{index}"
    with_bn = bool(block["batch_normalize"])
    if block["activation"] not in ("silu", "linear"):
        raise ValueError(f"Block {index}: unsupported activation {block['activation']!r}.")
    return conv_node(
        str(index),
        input_id,
        block["filters"],
        block["size"],
        block["stride"],
        conv_name=f"{prefix}.Conv2d",
        bn_name=f"{prefix}.BatchNorm2d" if with_bn else None,
        act_name=f"{prefix}.activation" if block["activation"] == "silu" else None,
        pad_name=f"{prefix}.pad",
        bias=not with_bn,
    )


def _blocks_to_nodes(blocks, start, stop):
    """Compiles blocks ``start..stop-1`` (no head blocks) into nodes."""
    nodes = []
    for index in range(start, stop):
        block = blocks[index]
        kind = block["type"]
        node_id = str(index)
        previous = str(index - 1) if index > 0 else "image"
        name = f"module_list.{index}"
        if kind == "convolutional":
            nodes.append(_block_conv_node(index, block, previous))
        elif kind == "route":
            sources = [str(layer) for layer in block["layers"]]
            if len(sources) == 1:
                nodes.append(op_node(node_id, "alias", sources))
            else:
                nodes.append(op_node(node_id, "concat", sources, name=f"{name}.route"))
        elif kind == "shortcut":
            nodes.append(
                op_node(node_id, "add", [previous, str(block["from"])], name=f"{name}.shortcut")
            )
        elif kind == "maxpool":
            nodes.append(
                op_node(
                    node_id,
                    "maxpool",
                    [previous],
                    name=f"{name}.MaxPool2d",
                    size=block["size"],
                    stride=block["stride"],
                )
            )
        elif kind == "upsample":
            nodes.append(op_node(node_id, "upsample", [previous], name=f"{name}.Upsample"))
        elif kind == "reorg":
            nodes.append(op_node(node_id, "reorg", [previous], name=f"{name}.Reorg"))
        else:
            raise ValueError(f"Block {index}: type {kind!r} cannot appear before the heads.")
    return nodes


def _head_levels(blocks, strides, anchors_px):
    """Reads each level's route -> conv -> shift -> conv -> control -> yolo run."""
    levels = []
    yolo_indices = [i for i, block in enumerate(blocks) if block["type"] == "yolo"]
    for yolo in yolo_indices:
        route, conv3, shift, conv1, control = (blocks[yolo - k] for k in range(5, 0, -1))
        pattern = [b["type"] for b in (route, conv3, shift, conv1, control)]
        expected = ["route", "convolutional", "shift_channels", "convolutional", "control_channels"]
        if pattern != expected or len(route["layers"]) != 1:
            raise ValueError(
                f"Head of [yolo] block {yolo} must be {expected} with a one-layer route; "
                f"got {pattern}."
            )
        stride = strides[str(route["layers"][0])]
        levels.append(
            HeadLevel(
                level=level_name(stride),
                stride=stride,
                input_id=str(route["layers"][0]),
                conv=_block_conv_node(yolo - 4, conv3, str(route["layers"][0])),
                implicit_add_name=f"module_list.{shift['from']}",
                output_conv_name=f"module_list.{yolo - 2}.Conv2d",
                implicit_multiply_name=f"module_list.{control['from']}",
                anchors=[
                    [float(anchors_px[2 * m]), float(anchors_px[2 * m + 1])]
                    for m in blocks[yolo]["mask"]
                ],
            )
        )
    return levels


def darknet_plan(architecture, num_classes=80, width_multiplier=1.0, depth_multiplier=1.0):
    """Compiles a main-branch architecture into a `GraphPlan`."""
    blocks, layout = darknet_blocks(architecture, num_classes, width_multiplier, depth_multiplier)
    backbone_end = layout["pyramid"][-1] + 1
    backbone = _blocks_to_nodes(blocks, 0, backbone_end)
    neck = _blocks_to_nodes(blocks, backbone_end, layout["head_start"])
    channels, strides = infer_shapes(backbone + neck, {"image": 3}, {"image": 1})
    pyramid = {level_name(strides[str(i)]): str(i) for i in layout["pyramid"]}
    neck_outputs = {level_name(strides[str(i)]): str(i) for i in layout["neck_outputs"]}
    anchors_px = blocks[-1]["anchors"]
    head_levels = _head_levels(blocks, strides, anchors_px)
    return GraphPlan(
        branch="main",
        bn_epsilon=MAIN_BN_EPSILON,
        backbone_nodes=backbone,
        pyramid=pyramid,
        pyramid_strides={level: strides[node] for level, node in pyramid.items()},
        neck_nodes=neck,
        neck_outputs=neck_outputs,
        head_levels=head_levels,
        num_classes=num_classes,
        channels=channels,
    )
