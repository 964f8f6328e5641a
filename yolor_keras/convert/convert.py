"""`convert_checkpoint`: an official YOLOR ``.pt`` file -> a Keras `YOLORObjectDetector`."""

import os
import re

from yolor_keras.atomic import write_file_atomically
from yolor_keras.convert.checkpoint import read_checkpoint
from yolor_keras.convert.weight_mapping import check_anchors
from yolor_keras.convert.weight_mapping import load_official_weights
from yolor_keras.models import PRESETS
from yolor_keras.models import get_preset
from yolor_keras.models import make_plan
from yolor_keras.models.darknet_architecture import darknet_blocks
from yolor_keras.models.yaml_architecture import resolved_rows
from yolor_keras.tasks import YOLORObjectDetector

_CONV_WEIGHT = re.compile(r"^module_list\.(\d+)\.Conv2d\.weight$")
# Sizes a file may ask for before any weight is checked. The model is built
# from them, so a hostile file could otherwise ask for a model of terabytes
# (a zero-sized tensor may claim any width). The official models use
# multiples up to 1.25 and 80 classes.
MAX_MULTIPLIER = 4.0
MAX_CLASSES = 10_000


def _check_size(path, what, value, limit):
    if not 0 < value <= limit:
        raise ValueError(f"'{path}' implies a {what} of {value:g}; at most {limit:g} is accepted.")


def expected_weight_names(plan):
    """The official state_dict keys (without BN step counters) a plan implies."""
    names = []

    def conv(node):
        names.append(f"{node['conv_name']}.weight")
        if node["bias"]:
            names.append(f"{node['conv_name']}.bias")
        if node["bn_name"]:
            names.extend(batchnorm(node["bn_name"]))

    def batchnorm(name):
        return [f"{name}.{field}" for field in ("weight", "bias", "running_mean", "running_var")]

    for node in plan.backbone_nodes + plan.neck_nodes:
        if node["op"] == "conv":
            conv(node)
        elif node["op"] == "bn_act":
            names.extend(batchnorm(node["bn_name"]))
    for level in plan.head_levels:
        conv(level.conv)
        names.append(f"{level.implicit_add_name}.implicit")
        names.extend([f"{level.output_conv_name}.weight", f"{level.output_conv_name}.bias"])
        names.append(f"{level.implicit_multiply_name}.implicit")
    return names


def _weight_names(state_dict):
    return {
        k
        for k in state_dict
        if not k.endswith((".num_batches_tracked", ".anchors", ".anchor_grid"))
    }


def _main_num_classes(state_dict, num_anchors, path):
    """Classes from the detection convs: the only main-branch convs with a bias."""
    widths = {
        value.shape[0]
        for key, value in state_dict.items()
        if re.match(r"^module_list\.\d+\.Conv2d\.bias$", key)
    }
    if len(widths) != 1:
        raise ValueError(
            f"'{path}': cannot infer the number of classes; the detection convs have "
            f"output widths {sorted(widths)}."
        )
    (width,) = widths
    if width % num_anchors or width // num_anchors <= 5:
        raise ValueError(
            f"'{path}': detection conv width {width} is not {num_anchors} x (5 + classes)."
        )
    return width // num_anchors - 5


def _main_width_multiplier(state_dict, architecture):
    """Ratio of the widest BatchNorm conv in the file to the full-size model's."""
    full_size, _ = darknet_blocks(architecture)
    widest_full = max(
        block["filters"]
        for block in full_size
        if block["type"] == "convolutional" and block["batch_normalize"]
    )
    widest = max(
        (
            value.shape[0]
            for key, value in state_dict.items()
            if _CONV_WEIGHT.match(key)
            and f"module_list.{_CONV_WEIGHT.match(key).group(1)}.BatchNorm2d.weight" in state_dict
        ),
        default=widest_full,
    )
    return widest / widest_full


def _matching_presets(names, branch, num_classes, width, depth):
    matches = []
    for name, preset in PRESETS.items():
        if preset["architecture"]["branch"] != branch:
            continue
        try:
            plan = make_plan(preset["architecture"], num_classes, width, depth)
        except ValueError:
            continue
        if set(expected_weight_names(plan)) == names:
            matches.append(name)
    return matches


def _paper_architecture(checkpoint, model_name):
    yaml = checkpoint.yaml
    for key in ("anchors", "backbone", "head"):
        if key not in yaml:
            raise ValueError(f"'{checkpoint.path}': the model's yaml has no '{key}' entry.")
    try:
        architecture = {
            "branch": "paper",
            "depth_multiple": float(yaml.get("depth_multiple", 1.0)),
            "width_multiple": float(yaml.get("width_multiple", 1.0)),
            "anchors": yaml["anchors"],
            "backbone": yaml["backbone"],
            "head": yaml["head"],
        }
        rows = resolved_rows(architecture)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(
            f"'{checkpoint.path}': its yaml is not a YOLOR architecture "
            f"({type(error).__name__}: {str(error)[:200]})."
        ) from None
    for key in ("depth_multiple", "width_multiple"):
        _check_size(checkpoint.path, key, architecture[key], MAX_MULTIPLIER)
    if rows != resolved_rows(get_preset(model_name)["architecture"]):
        same = [
            name
            for name, preset in PRESETS.items()
            if preset["architecture"]["branch"] == "paper"
            and resolved_rows(preset["architecture"]) == rows
        ]
        hint = f"; it matches {same}" if same else "; it matches no preset"
        raise ValueError(
            f"'{checkpoint.path}' does not hold a {model_name} model (its yaml rows differ){hint}."
        )
    return architecture


def _detector_nc(checkpoint, num_anchors):
    """Classes from a paper checkpoint's first prediction-conv bias."""
    for key, value in checkpoint.state_dict.items():
        if re.match(r"^model\.\d+\.m\.0\.bias$", key):
            return value.shape[0] // num_anchors - 5
    raise ValueError(f"'{checkpoint.path}': no IDetect prediction conv (model.<i>.m.0.bias) found.")


def save_atomically(model, out_path):
    """Saves ``model`` to ``out_path`` (``.keras``) so that the file is whole or untouched.

    The model is written to a temporary sibling, loaded back and compared
    weight by weight, and only then renamed over ``out_path``
    (`yolor_keras.atomic.write_file_atomically`). A failed or interrupted
    save, or a file that does not load back identically, leaves the
    previous ``out_path`` as it was and no partial file.
    """
    import keras
    import numpy as np

    out_path = os.fspath(out_path)
    if not out_path.endswith(".keras"):
        raise ValueError(f"Output path '{out_path}' must end with '.keras'.")

    def check(temporary):
        try:
            restored = keras.saving.load_model(temporary, compile=False)
        except Exception as error:
            raise ValueError(
                f"The converted model written for '{out_path}' does not load back "
                f"({type(error).__name__}: {str(error)[:300]}); '{out_path}' was not changed."
            ) from None
        saved = [keras.ops.convert_to_numpy(w) for w in model.weights]
        loaded = [keras.ops.convert_to_numpy(w) for w in restored.weights]
        if len(saved) != len(loaded) or not all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(saved, loaded)
        ):
            raise ValueError(
                f"The converted model written for '{out_path}' loads back with different "
                f"weights; '{out_path}' was not changed."
            )

    write_file_atomically(out_path, lambda temporary: model.save(temporary), check=check)


def convert_checkpoint(
    path,
    model_name,
    out_path=None,
    num_classes=None,
    width_multiplier=None,
    depth_multiplier=None,
):
    """Converts an official YOLOR checkpoint into a Keras `YOLORObjectDetector`.

    Reads both official formats without the official code (see
    `restricted_pickle`): main-branch state_dicts (float32) and paper-branch
    pickled models (float16, loaded as float32). The architecture comes
    from the preset ``model_name`` (main) or from the checkpoint's own yaml,
    which must match that preset's rows (paper).

    Args:
        path: the official ``.pt`` file.
        model_name: a preset name, e.g. ``"yolor_p6"`` or ``"yolor_p6_paper"``.
        out_path: if given, the ``.keras`` file to write (atomically).
        num_classes: expected number of classes; None infers it from the
            checkpoint (a different value is an error).
        width_multiplier: main branch only; None infers it from the widest
            conv (paper checkpoints carry theirs in the yaml).
        depth_multiplier: main branch only; None means 1.0.

    Returns:
        The `YOLORObjectDetector` with the checkpoint's weights.

    Raises:
        ValueError: for a file that is not a YOLOR checkpoint, a checkpoint
            of another model, a class-count mismatch, or weights that do not
            fit (the first offending keys are listed).
    """
    preset = get_preset(model_name)
    checkpoint = read_checkpoint(path)
    preset_branch = preset["architecture"]["branch"]
    if checkpoint.branch != preset_branch:
        choices = sorted(
            n for n, p in PRESETS.items() if p["architecture"]["branch"] == checkpoint.branch
        )
        raise ValueError(
            f"'{path}' is a {checkpoint.branch}-branch checkpoint but '{model_name}' is a "
            f"{preset_branch}-branch model; use one of {choices}."
        )
    num_anchors = len(preset["architecture"]["anchors"][0]) // 2

    if checkpoint.branch == "paper":
        if width_multiplier not in (None, 1.0) or depth_multiplier not in (None, 1.0):
            raise ValueError(
                "Paper-branch checkpoints carry their width and depth multiples in their "
                "yaml; do not pass width_multiplier or depth_multiplier."
            )
        architecture = _paper_architecture(checkpoint, model_name)
        found_classes = _detector_nc(checkpoint, num_anchors)
        if "nc" in checkpoint.yaml and int(checkpoint.yaml["nc"]) != found_classes:
            raise ValueError(
                f"'{path}': its yaml says nc={checkpoint.yaml['nc']} but its prediction "
                f"convs are sized for {found_classes} classes."
            )
        width, depth = 1.0, 1.0
        expected_epsilon = make_plan(architecture, found_classes).bn_epsilon
        odd = [eps for eps in checkpoint.batchnorm_epsilons if abs(eps - expected_epsilon) > 1e-9]
        if odd:
            raise ValueError(
                f"'{path}' has BatchNorm eps {odd}, but the paper branch uses "
                f"{expected_epsilon}; its outputs would not be reproduced."
            )
    else:
        architecture = preset["architecture"]
        found_classes = _main_num_classes(checkpoint.state_dict, num_anchors, path)
        width = width_multiplier or _main_width_multiplier(checkpoint.state_dict, architecture)
        if width_multiplier is None:
            _check_size(path, "width multiplier", width, MAX_MULTIPLIER)
        depth = depth_multiplier or 1.0
    _check_size(path, "number of classes", found_classes, MAX_CLASSES)
    if num_classes not in (None, "auto") and int(num_classes) != found_classes:
        raise ValueError(
            f"'{path}' predicts {found_classes} classes, not the requested {num_classes}."
        )

    plan = make_plan(architecture, found_classes, width, depth)
    names = _weight_names(checkpoint.state_dict)
    if set(expected_weight_names(plan)) != names:
        matches = _matching_presets(names, checkpoint.branch, found_classes, width, depth)
        if matches and model_name not in matches:
            raise ValueError(
                f"'{path}' does not hold a {model_name} model; its weights match {matches}."
            )
    detector = YOLORObjectDetector.from_architecture(
        architecture,
        num_classes=found_classes,
        width_multiplier=width,
        depth_multiplier=depth,
        name=model_name,
    )
    check_anchors(checkpoint.state_dict, detector.anchors)
    load_official_weights(detector, checkpoint.state_dict, source=f"checkpoint '{path}'")
    if out_path is not None:
        save_atomically(detector, out_path)
    return detector
