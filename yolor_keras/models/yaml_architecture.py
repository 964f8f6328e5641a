"""The `paper` branch's YAML architectures: row generator and row compiler.

A paper-branch model is a list of rows ``[from, repeats, module, args]``, as
in the official ``models/*.yaml`` files and in the ``yaml`` dict that every
paper-branch checkpoint carries. `paper_rows` writes such a dict from a
compact description (see `yolor_presets`); `yaml_plan` compiles any such dict
into a `GraphPlan`, expanding each row's module into nodes named after the
official module paths (``model.3.cv1.conv``, ``model.41.ia.0``, ...).

Supported modules: ReOrg, Conv, DownC, BottleneckCSPF, BottleneckCSP2,
SPPCSP, Concat, nn.Upsample and IDetect.
"""

from yolor_keras.models.graph_plan import GraphPlan
from yolor_keras.models.graph_plan import HeadLevel
from yolor_keras.models.graph_plan import conv_node
from yolor_keras.models.graph_plan import infer_shapes
from yolor_keras.models.graph_plan import level_name
from yolor_keras.models.graph_plan import op_node
from yolor_keras.models.graph_plan import scale_depth
from yolor_keras.models.graph_plan import scale_width

PAPER_BN_EPSILON = 1e-3

SUPPORTED_MODULES = (
    "ReOrg",
    "Conv",
    "DownC",
    "BottleneckCSPF",
    "BottleneckCSP2",
    "SPPCSP",
    "Concat",
    "nn.Upsample",
    "IDetect",
)


def paper_rows(description):
    """Writes the backbone and head rows of a paper-branch model.

    Args:
        description: dict with ``stem_width``, ``stages`` (``[width,
            repeats]`` per stride-2 stage), ``downsample`` (``"conv"`` or
            ``"downc"``), ``spp_width``, ``neck_widths`` and ``head_widths``
            (stride ascending), ``neck_repeats`` and ``anchors``.

    Returns:
        A dict with ``anchors``, ``backbone`` and ``head``, the same rows as
        the official YAML file of that model (``from`` indices resolved the
        same way).
    """

    def down(source, width):
        if description["downsample"] == "downc":
            return [source, 1, "DownC", [width]]
        return [source, 1, "Conv", [width, 3, 2]]

    backbone = [[-1, 1, "ReOrg", []], [-1, 1, "Conv", [description["stem_width"], 3, 1]]]
    for width, repeats in description["stages"]:
        backbone.append(down(-1, width))
        backbone.append([-1, repeats, "BottleneckCSPF", [width]])
    pyramid = list(range(3, len(backbone), 2))[1:]  # stage outputs from stride 8

    rows = list(backbone)
    head = []

    def add(row):
        head.append(row)
        rows.append(row)
        return len(rows) - 1

    neck_widths = description["neck_widths"]
    repeats = description["neck_repeats"]
    top_down = [None] * len(pyramid)
    top_down[-1] = add([-1, 1, "SPPCSP", [description["spp_width"]]])
    for level in range(len(pyramid) - 2, -1, -1):
        add([-1, 1, "Conv", [neck_widths[level], 1, 1]])
        add([-1, 1, "nn.Upsample", [None, 2, "nearest"]])
        add([pyramid[level] - len(rows), 1, "Conv", [neck_widths[level], 1, 1]])
        add([[-1, -2], 1, "Concat", [1]])
        top_down[level] = add([-1, repeats, "BottleneckCSP2", [neck_widths[level]]])
    head_convs = []
    for level, head_width in enumerate(description["head_widths"]):
        head_convs.append(add([-1, 1, "Conv", [head_width, 3, 1]]))
        if level + 1 < len(pyramid):
            add(down(-2, neck_widths[level + 1]))
            add([[-1, top_down[level + 1]], 1, "Concat", [1]])
            add([-1, repeats, "BottleneckCSP2", [neck_widths[level + 1]]])
    add([head_convs, 1, "IDetect", ["nc", "anchors"]])
    return {"anchors": description["anchors"], "backbone": backbone, "head": head}


def _sources(source, row_index):
    """Absolute row indices (or "image") of a row's ``from`` field."""
    many = isinstance(source, (list, tuple))
    resolved = []
    for value in source if many else [source]:
        absolute = row_index + value if value < 0 else value
        if absolute >= row_index or absolute < -1:
            raise ValueError(f"Row {row_index}: 'from' {value} does not point to an earlier row.")
        resolved.append(absolute)
    return resolved, many


class _RowCompiler:
    """Expands rows into nodes, tracking channels and strides as it goes."""

    def __init__(self, num_classes, width_multiplier, depth_multiplier, anchors):
        self.width = width_multiplier
        self.depth = depth_multiplier
        self.num_anchors = len(anchors[0]) // 2
        self.outputs = self.num_anchors * (5 + num_classes)
        self.row_output = {-1: "image"}
        self.channels = {"image": 3}
        self.strides = {"image": 1}

    def unit(self, prefix, source, filters, kernel=1, stride=1):
        """The official ``Conv``: conv without bias, BatchNorm, SiLU."""
        return conv_node(
            prefix,
            source,
            filters,
            kernel,
            stride,
            conv_name=f"{prefix}.conv",
            bn_name=f"{prefix}.bn",
            act_name=f"{prefix}.act",
            pad_name=f"{prefix}.pad",
        )

    def plain(self, prefix, source, filters):
        """A bare 1x1 ``nn.Conv2d`` without bias (the CSP cross-stage branch)."""
        return conv_node(prefix, source, filters, 1, 1, conv_name=prefix)

    def csp_tail(self, prefix, branches, filters, out_name):
        """concat -> BatchNorm -> SiLU -> 1x1 Conv, shared by the CSP modules."""
        concat = op_node(f"{prefix}.concat", "concat", branches, name=f"{prefix}.concat")
        norm = {
            "id": f"{prefix}.bn",
            "op": "bn_act",
            "inputs": [concat["id"]],
            "bn_name": f"{prefix}.bn",
            "act_name": f"{prefix}.act",
        }
        return [concat, norm, self.unit(f"{prefix}.{out_name}", norm["id"], filters)]

    def width_of(self, filters):
        return filters if filters == self.outputs else scale_width(filters, self.width)

    def compile_row(self, row_index, row):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ValueError(
                f"Row {row_index}: expected [from, repeats, module, args]; got {row!r}."
            )
        source, repeats, module, args = row
        args = list(args)
        if module not in SUPPORTED_MODULES:
            raise ValueError(
                f"Row {row_index}: module {module!r} is not supported; supported modules "
                f"are {', '.join(SUPPORTED_MODULES)}."
            )
        rows, many = _sources(source, row_index)
        inputs = [self.row_output[r] for r in rows]
        src = inputs[0]
        prefix = f"model.{row_index}"
        repeats = scale_depth(int(repeats), self.depth)
        if module not in ("Concat", "IDetect") and many:
            raise ValueError(f"Row {row_index}: {module} takes one input, got 'from' {source}.")
        if repeats != 1 and module not in ("BottleneckCSPF", "BottleneckCSP2"):
            raise ValueError(f"Row {row_index}: repeated {module} rows are not supported.")

        if module == "ReOrg":
            nodes = [op_node(prefix, "reorg", [src], name=prefix)]
        elif module == "Conv":
            if len(args) > 3:
                raise ValueError(
                    f"Row {row_index}: Conv arguments beyond [filters, kernel, stride] "
                    f"are not supported; got {args}."
                )
            filters, kernel, stride = (args + [1, 1])[:3]
            nodes = [self.unit(prefix, src, self.width_of(filters), kernel, stride)]
        elif module == "DownC":
            filters = self.width_of(args[0])
            in_channels = self.channels[src]
            nodes = [
                self.unit(f"{prefix}.cv1", src, in_channels, 1),
                self.unit(f"{prefix}.cv2", f"{prefix}.cv1", filters // 2, 3, 2),
                op_node(f"{prefix}.mp", "maxpool", [src], name=f"{prefix}.mp", size=2, stride=2),
                self.unit(f"{prefix}.cv3", f"{prefix}.mp", filters // 2, 1),
                op_node(
                    f"{prefix}.concat",
                    "concat",
                    [f"{prefix}.cv2", f"{prefix}.cv3"],
                    name=f"{prefix}.concat",
                ),
            ]
        elif module in ("BottleneckCSPF", "BottleneckCSP2"):
            filters = self.width_of(args[0])
            residual = module == "BottleneckCSPF"
            hidden = filters // 2 if residual else filters
            nodes = [self.unit(f"{prefix}.cv1", src, hidden, 1)]
            current = f"{prefix}.cv1"
            for j in range(repeats):
                block = f"{prefix}.m.{j}"
                block_input = current
                nodes.append(self.unit(f"{block}.cv1", block_input, hidden, 1))
                nodes.append(self.unit(f"{block}.cv2", f"{block}.cv1", hidden, 3))
                current = f"{block}.cv2"
                if residual:
                    nodes.append(
                        op_node(f"{block}.add", "add", [block_input, current], name=f"{block}.add")
                    )
                    current = f"{block}.add"
            # CSPF's cross-stage branch reads the row input, CSP2's reads cv1.
            nodes.append(self.plain(f"{prefix}.cv2", src if residual else f"{prefix}.cv1", hidden))
            out_name = "cv4" if residual else "cv3"
            nodes.extend(self.csp_tail(prefix, [current, f"{prefix}.cv2"], filters, out_name))
        elif module == "SPPCSP":
            filters = self.width_of(args[0])
            nodes = [
                self.unit(f"{prefix}.cv1", src, filters, 1),
                self.unit(f"{prefix}.cv3", f"{prefix}.cv1", filters, 3),
                self.unit(f"{prefix}.cv4", f"{prefix}.cv3", filters, 1),
            ]
            pools = []
            for j, size in enumerate((5, 9, 13)):
                pool = f"{prefix}.m.{j}"
                nodes.append(
                    op_node(pool, "maxpool", [f"{prefix}.cv4"], name=pool, size=size, stride=1)
                )
                pools.append(pool)
            nodes.append(
                op_node(
                    f"{prefix}.pools",
                    "concat",
                    [f"{prefix}.cv4"] + pools,
                    name=f"{prefix}.pools",
                )
            )
            nodes.append(self.unit(f"{prefix}.cv5", f"{prefix}.pools", filters, 1))
            nodes.append(self.unit(f"{prefix}.cv6", f"{prefix}.cv5", filters, 3))
            nodes.append(self.plain(f"{prefix}.cv2", src, filters))
            nodes.extend(self.csp_tail(prefix, [f"{prefix}.cv6", f"{prefix}.cv2"], filters, "cv7"))
        elif module == "Concat":
            if args and args[0] != 1:
                raise ValueError(f"Row {row_index}: Concat must join channels (dimension 1).")
            nodes = [op_node(prefix, "concat", inputs, name=prefix)]
        elif module == "nn.Upsample":
            scale = args[1] if len(args) > 1 else None
            mode = args[2] if len(args) > 2 else "nearest"
            if scale != 2 or mode != "nearest":
                raise ValueError(
                    f"Row {row_index}: only nn.Upsample(None, 2, 'nearest') is supported; "
                    f"got {args}."
                )
            nodes = [op_node(prefix, "upsample", [src], name=prefix)]
        else:  # IDetect is handled by yaml_plan
            return []
        infer_shapes(nodes, self.channels, self.strides)
        self.row_output[row_index] = nodes[-1]["id"]
        return nodes


def yaml_plan(architecture, num_classes=80, width_multiplier=1.0, depth_multiplier=1.0):
    """Compiles a paper-branch model dict into a `GraphPlan`.

    Args:
        architecture: dict with ``anchors``, ``backbone`` and ``head`` rows
            and optional ``depth_multiple`` / ``width_multiple`` (default 1),
            the official YAML layout. An ``nc`` key is ignored in favour of
            ``num_classes``.
        num_classes: classes per anchor.
        width_multiplier: channel multiplier, applied on top of the
            architecture's own ``width_multiple``.
        depth_multiplier: repeat multiplier, applied on top of its
            ``depth_multiple``.

    Returns:
        The `GraphPlan`.
    """
    for key in ("anchors", "backbone", "head"):
        if key not in architecture:
            raise ValueError(f"Paper-branch architecture is missing the '{key}' rows.")
    anchors = architecture["anchors"]
    if isinstance(anchors, int) or not all(isinstance(a, (list, tuple)) for a in anchors):
        raise ValueError(
            "Paper-branch architecture: 'anchors' must list each level's anchors in pixels."
        )
    backbone_rows = list(architecture["backbone"])
    rows = backbone_rows + list(architecture["head"])
    width_multiplier *= float(architecture.get("width_multiple", 1.0))
    depth_multiplier *= float(architecture.get("depth_multiple", 1.0))
    compiler = _RowCompiler(num_classes, width_multiplier, depth_multiplier, anchors)

    row_nodes = {}
    detect_row = None
    for row_index, row in enumerate(rows):
        row_nodes[row_index] = compiler.compile_row(row_index, row)
        if row[2] == "IDetect":
            if row_index != len(rows) - 1:
                raise ValueError(f"Row {row_index}: IDetect must be the last row.")
            detect_row = row_index
    if detect_row is None:
        raise ValueError("Paper-branch architecture has no IDetect row.")
    detect_args = list(rows[detect_row][3])
    if len(detect_args) > 1 and detect_args[1] != "anchors":
        raise ValueError(
            "IDetect must use the architecture's 'anchors' list; an anchor count "
            f"(automatic anchors) is not supported, got {detect_args[1]!r}."
        )
    head_rows, _ = _sources(rows[detect_row][0], detect_row)
    if len(head_rows) != len(anchors):
        raise ValueError(
            f"IDetect reads {len(head_rows)} rows but 'anchors' lists {len(anchors)} levels."
        )

    # Each IDetect input is a one-conv row: it becomes the level's head conv.
    for head_row in head_rows:
        if rows[head_row][2] != "Conv":
            raise ValueError(f"IDetect input row {head_row} must be a Conv row.")
    for row_index, row in enumerate(rows[:detect_row]):
        used = set(_sources(row[0], row_index)[0]) & set(head_rows)
        if used:
            raise ValueError(
                f"Row {row_index} reads head conv row(s) {sorted(used)}; only IDetect may."
            )

    backbone = [node for r in range(len(backbone_rows)) for node in row_nodes[r]]
    neck = [
        node
        for r in range(len(backbone_rows), detect_row)
        if r not in head_rows
        for node in row_nodes[r]
    ]
    strides = compiler.strides
    pyramid = {}
    for r in range(len(backbone_rows)):
        output = compiler.row_output[r]
        if strides[output] >= 8:
            pyramid[level_name(strides[output])] = output  # the last row of each stride
    backbone_ids = {node["id"] for node in backbone} | {"image"}
    for node in neck:
        for source in node["inputs"]:
            if source in backbone_ids and source not in pyramid.values():
                raise ValueError(
                    f"Neck node {node['id']} reads backbone node {source}, which is not "
                    "the last row of its stride (a pyramid output)."
                )

    head_levels = []
    for k, head_row in enumerate(head_rows):
        conv = row_nodes[head_row][0]
        stride = strides[conv["id"]]
        level_anchors = anchors[k]
        head_levels.append(
            HeadLevel(
                level=level_name(stride),
                stride=stride,
                input_id=conv["inputs"][0],
                conv=conv,
                implicit_add_name=f"model.{detect_row}.ia.{k}",
                output_conv_name=f"model.{detect_row}.m.{k}",
                implicit_multiply_name=f"model.{detect_row}.im.{k}",
                anchors=[
                    [float(level_anchors[2 * a]), float(level_anchors[2 * a + 1])]
                    for a in range(len(level_anchors) // 2)
                ],
            )
        )
    level_strides = [level.stride for level in head_levels]
    if level_strides != sorted(set(level_strides)):
        raise ValueError(f"IDetect levels must have increasing strides; got {level_strides}.")
    return GraphPlan(
        branch="paper",
        bn_epsilon=PAPER_BN_EPSILON,
        backbone_nodes=backbone,
        pyramid=pyramid,
        pyramid_strides={level: strides[node] for level, node in pyramid.items()},
        neck_nodes=neck,
        neck_outputs={level.level: level.input_id for level in head_levels},
        head_levels=head_levels,
        num_classes=num_classes,
        channels=dict(compiler.channels),
    )


def resolved_rows(architecture):
    """The rows with absolute ``from`` indices and YAML's ``'None'`` as None.

    Two architectures with equal resolved rows are the same network up to
    the width and depth multiples.
    """
    rows = list(architecture["backbone"]) + list(architecture["head"])
    resolved = []
    for row_index, (source, repeats, module, args) in enumerate(rows):
        sources, _ = _sources(source, row_index)
        args = [None if arg == "None" else arg for arg in args]
        resolved.append((sources, int(repeats), module, args))
    return resolved
