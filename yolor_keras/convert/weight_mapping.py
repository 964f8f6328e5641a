"""Copying an official state_dict into a Keras YOLOR model, by layer name.

Keras layers are named after the official module paths (with ``-`` for
``.``, see `graph_plan.keras_name`), so each weight's PyTorch key is the
module path plus the PyTorch parameter name:

* ``Conv2D`` ``N``: ``N.weight`` (out, in, kh, kw -> kh, kw, in, out) and ``N.bias``.
* ``BatchNormalization`` ``N``: ``N.weight`` / ``N.bias`` / ``N.running_mean`` /
  ``N.running_var`` -> gamma / beta / moving_mean / moving_variance.
* ``ImplicitAdd`` / ``ImplicitMultiply`` ``N``: ``N.implicit`` (1, C, 1, 1) -> (C,).
"""

import re

import keras
import numpy as np

from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.models.graph_plan import module_path
from yolor_keras.models.layer_walk import iter_layers

# Official entries that are not weights: BN step counters and the paper
# head's anchors (checked separately against the model's anchors).
_IGNORED_SUFFIXES = (".num_batches_tracked", ".anchors", ".anchor_grid")
_SHOWN = 10


def _conv_kernel(array):
    return np.transpose(array, (2, 3, 1, 0))


def _flat(array):
    return array.reshape(-1)


def weight_targets(model):
    """Official key -> (Keras variable, transform from the official array)."""
    targets = {}
    for layer in iter_layers(model):
        name = module_path(layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            targets[f"{name}.weight"] = (layer.kernel, _conv_kernel)
            if layer.use_bias:
                targets[f"{name}.bias"] = (layer.bias, None)
        elif isinstance(layer, keras.layers.BatchNormalization):
            targets[f"{name}.weight"] = (layer.gamma, None)
            targets[f"{name}.bias"] = (layer.beta, None)
            targets[f"{name}.running_mean"] = (layer.moving_mean, None)
            targets[f"{name}.running_var"] = (layer.moving_variance, None)
        elif isinstance(layer, ImplicitKnowledge):
            if layer.form != "vector":
                raise ValueError(
                    f"Layer '{name}' uses the '{layer.form}' implicit form; official "
                    "checkpoints hold plain vectors."
                )
            targets[f"{name}.implicit"] = (layer.implicit, _flat)
        elif layer.weights:
            raise ValueError(
                f"Layer '{name}' ({type(layer).__name__}) has no official counterpart; "
                "convert into a training-form model (deploy=False)."
            )
    return targets


def _natural_key(name):
    """``module_list.10`` after ``module_list.9``: numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listing(names):
    names = sorted(names, key=_natural_key)
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{shown}{more}"


def check_anchors(state_dict, anchors):
    """Compares a paper checkpoint's ``anchor_grid`` (pixels) with the model's."""
    anchors = np.asarray(anchors, "float32")
    for key, value in state_dict.items():
        if key.endswith(".anchor_grid"):
            stored = np.asarray(value, "float32").reshape(-1)
            if stored.size != anchors.size or not np.allclose(stored, anchors.reshape(-1)):
                raise ValueError(
                    f"The checkpoint's anchors ({key}, pixels) {stored.tolist()} differ from "
                    f"the model's {anchors.reshape(-1).tolist()}."
                )


def load_official_weights(model, state_dict, source="checkpoint"):
    """Copies an official state_dict into ``model`` after checking it fits exactly.

    Args:
        model: a training-form YOLOR Keras model.
        state_dict: official key -> NumPy array.
        source: how to name the state_dict in errors (e.g. its path).

    Raises:
        ValueError: listing (the first ten) missing keys, unexpected keys and
            shape mismatches. Nothing is assigned unless everything fits.
    """
    targets = weight_targets(model)
    keys = [k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)]
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in keys if k not in targets]
    mismatched = []
    values = {}
    for key in keys:
        if key not in targets:
            continue
        variable, transform = targets[key]
        array = np.asarray(state_dict[key], "float32")
        array = transform(array) if transform else array
        if tuple(array.shape) != tuple(variable.shape):
            mismatched.append(
                f"{key} (checkpoint {tuple(state_dict[key].shape)} -> {tuple(array.shape)}, "
                f"model {tuple(variable.shape)})"
            )
        values[key] = array
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} model weights missing from the {source}: {_listing(missing)}"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} {source} entries the model does not have: {_listing(unexpected)}"
        )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise ValueError(
            f"The {source} does not fit model '{model.name}':\n- " + "\n- ".join(problems)
        )
    for key, array in values.items():
        targets[key][0].assign(array)
