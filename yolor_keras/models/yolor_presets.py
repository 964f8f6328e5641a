"""The official YOLOR variants, as architecture dicts.

Main branch (darknet cfg files, BatchNorm eps 1e-4): ``yolor_csp``,
``yolor_csp_x``, ``yolor_p6``, ``yolor_w6``. Paper branch (YAML files,
BatchNorm eps 1e-3): ``yolor_p6_paper``, ``yolor_w6_paper``,
``yolor_e6_paper``, ``yolor_d6_paper``. The numbers below are the official
widths, repeat counts and anchors; the blocks and rows they expand to are
checked against the official files in the tests.
"""

from yolor_keras.models.darknet_architecture import darknet_plan
from yolor_keras.models.yaml_architecture import paper_rows
from yolor_keras.models.yaml_architecture import yaml_plan

P6_ANCHORS = [
    [19, 27, 44, 40, 38, 94],
    [96, 68, 86, 152, 180, 137],
    [140, 301, 303, 264, 238, 542],
    [436, 615, 739, 380, 925, 792],
]
CSP_ANCHORS = [
    [12, 16, 19, 36, 40, 28],
    [36, 75, 76, 55, 72, 146],
    [142, 110, 192, 243, 459, 401],
]

_P6_WIDTHS = {
    "stages": [[128, 3], [256, 7], [384, 7], [512, 3], [640, 3]],
    "spp_width": 320,
    "neck_widths": [128, 192, 256, 320],
    "head_widths": [256, 384, 512, 640],
}
_W6_WIDTHS = {
    "stages": [[128, 3], [256, 7], [512, 7], [768, 3], [1024, 3]],
    "spp_width": 512,
    "neck_widths": [128, 256, 384, 512],
    "head_widths": [256, 512, 768, 1024],
}
_D6_WIDTHS = {**_W6_WIDTHS, "stages": [[128, 3], [256, 15], [512, 15], [768, 7], [1024, 7]]}


def _main_p6(widths):
    return {
        "branch": "main",
        "stem": "reorg",
        "stem_widths": [64],
        "stage_transition": False,
        "spp_pairs": 1,
        "neck_pairs": 3,
        "anchors": P6_ANCHORS,
        **widths,
    }


def _paper(widths, downsample, width_multiple=1.0):
    rows = paper_rows(
        {
            "stem_width": 64,
            "downsample": downsample,
            "neck_repeats": 3,
            "anchors": P6_ANCHORS,
            **widths,
        }
    )
    # Like the official YAML files, E6 and D6 widen every layer by 1.25.
    return {"branch": "paper", "depth_multiple": 1.0, "width_multiple": width_multiple, **rows}


PRESETS = {
    "yolor_csp": {
        "description": "YOLOR-CSP (main branch, darknet cfg), 3 levels, 640 px.",
        "image_size": 640,
        "architecture": {
            "branch": "main",
            "stem": "bottleneck",
            "stem_widths": [32, 64],
            "stages": [[128, 2], [256, 8], [512, 8], [1024, 4]],
            "stage_transition": True,
            "spp_width": 512,
            "spp_pairs": 1,
            "neck_widths": [128, 256, 512],
            "neck_pairs": 2,
            "head_widths": [256, 512, 1024],
            "anchors": CSP_ANCHORS,
        },
    },
    "yolor_csp_x": {
        "description": "YOLOR-CSP-X (main branch, darknet cfg), 3 levels, 640 px.",
        "image_size": 640,
        "architecture": {
            "branch": "main",
            "stem": "bottleneck",
            "stem_widths": [32, 80],
            "stages": [[160, 3], [320, 10], [640, 10], [1280, 5]],
            "stage_transition": True,
            "spp_width": 640,
            "spp_pairs": 2,
            "neck_widths": [160, 320, 640],
            "neck_pairs": 3,
            "head_widths": [320, 640, 1280],
            "anchors": CSP_ANCHORS,
        },
    },
    "yolor_p6": {
        "description": "YOLOR-P6 (main branch, darknet cfg), 4 levels, 1280 px.",
        "image_size": 1280,
        "architecture": _main_p6(_P6_WIDTHS),
    },
    "yolor_w6": {
        "description": "YOLOR-W6 (main branch, darknet cfg), 4 levels, 1280 px.",
        "image_size": 1280,
        "architecture": _main_p6(_W6_WIDTHS),
    },
    "yolor_p6_paper": {
        "description": "YOLOR-P6 (paper branch, YAML), 4 levels, 1280 px.",
        "image_size": 1280,
        "architecture": _paper(_P6_WIDTHS, "conv"),
    },
    "yolor_w6_paper": {
        "description": "YOLOR-W6 (paper branch, YAML), 4 levels, 1280 px.",
        "image_size": 1280,
        "architecture": _paper(_W6_WIDTHS, "conv"),
    },
    "yolor_e6_paper": {
        "description": "YOLOR-E6 (paper branch, YAML): W6 with DownC downsampling.",
        "image_size": 1280,
        "architecture": _paper(_W6_WIDTHS, "downc", width_multiple=1.25),
    },
    "yolor_d6_paper": {
        "description": "YOLOR-D6 (paper branch, YAML): E6 with deeper stages.",
        "image_size": 1280,
        "architecture": _paper(_D6_WIDTHS, "downc", width_multiple=1.25),
    },
}


def get_preset(name):
    """Returns the preset dict for ``name``, with a clear error for unknown names."""
    if name not in PRESETS:
        raise ValueError(f"Unknown YOLOR preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def make_plan(architecture, num_classes=80, width_multiplier=1.0, depth_multiplier=1.0):
    """Compiles an architecture dict of either branch into a `GraphPlan`."""
    if not isinstance(architecture, dict) or "branch" not in architecture:
        raise ValueError(
            "An architecture must be a dict with a 'branch' key ('main' or 'paper'); "
            f"got {type(architecture).__name__}."
        )
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
    for name, value in (
        ("width_multiplier", width_multiplier),
        ("depth_multiplier", depth_multiplier),
    ):
        if not value > 0:
            raise ValueError(f"`{name}` must be positive, got {value!r}.")
    if architecture["branch"] == "main":
        build = darknet_plan
    elif architecture["branch"] == "paper":
        build = yaml_plan
    else:
        raise ValueError(
            f"Unknown architecture branch {architecture['branch']!r}; expected 'main' or 'paper'."
        )
    return build(architecture, int(num_classes), float(width_multiplier), float(depth_multiplier))
