"""Local preset folders: a task's config and weights, loadable by `from_preset`.

The layout follows keras-hub's presets: ``config.json`` holds the backbone's
config, ``task.json`` the task's, ``model.weights.h5`` the backbone's weights
and ``task.weights.h5`` the whole task's. `YOLORBackbone.from_preset(folder)`
reads the first pair, `YOLORObjectDetector.from_preset(folder)` the second.
"""

import json
import os

import keras

from yolor_keras.atomic import write_directory_atomically

BACKBONE_CONFIG = "config.json"
TASK_CONFIG = "task.json"
BACKBONE_WEIGHTS = "model.weights.h5"
TASK_WEIGHTS = "task.weights.h5"


class PresetFolder:
    """A preset folder that has been found and whose configs have been read.

    Attributes:
        path: the folder.
        config: ``{"backbone": <serialized backbone>, "task": <serialized
            task> or None}``.
    """

    def __init__(self, path, config):
        self.path = path
        self.config = config

    def _weights(self, name):
        path = os.path.join(self.path, name)
        if not os.path.isfile(path):
            raise ValueError(f"{self.path}: the preset folder has no {name}.")
        return path

    def load_backbone_weights(self, backbone):
        backbone.load_weights(self._weights(BACKBONE_WEIGHTS))

    def load_task_weights(self, task):
        task.load_weights(self._weights(TASK_WEIGHTS))


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the preset config ({error}).") from None


def load_preset_config(preset):
    """Returns a `PresetFolder` when ``preset`` names a local preset folder, else None.

    Args:
        preset: a preset name or a path.

    Raises:
        ValueError: ``preset`` is a folder without a preset config.
    """
    if not isinstance(preset, (str, os.PathLike)) or not os.path.isdir(preset):
        return None
    path = os.fspath(preset)
    backbone_config = os.path.join(path, BACKBONE_CONFIG)
    if not os.path.isfile(backbone_config):
        raise ValueError(f"{path}: not a preset folder (no {BACKBONE_CONFIG}).")
    task_config = os.path.join(path, TASK_CONFIG)
    return PresetFolder(
        path,
        {
            "backbone": _read_json(backbone_config),
            "task": _read_json(task_config) if os.path.isfile(task_config) else None,
        },
    )


def save_preset(task, path):
    """Writes ``task`` (a `YOLORObjectDetector`) as a preset folder at ``path``.

    The folder is written aside and renamed into place; an existing preset
    there is replaced only once the new one is complete.
    """

    def write(folder):
        with open(os.path.join(folder, BACKBONE_CONFIG), "w", encoding="utf-8") as file:
            json.dump(keras.saving.serialize_keras_object(task.backbone), file, indent=2)
        with open(os.path.join(folder, TASK_CONFIG), "w", encoding="utf-8") as file:
            json.dump(keras.saving.serialize_keras_object(task), file, indent=2)
        task.backbone.save_weights(os.path.join(folder, BACKBONE_WEIGHTS))
        task.save_weights(os.path.join(folder, TASK_WEIGHTS))

    def check(folder):
        # The folder is put in place only if it loads back to the same weights.
        preset = load_preset_config(folder)
        restored = keras.saving.deserialize_keras_object(preset.config["task"])
        preset.load_task_weights(restored)
        saved = [keras.ops.convert_to_numpy(w) for w in task.weights]
        loaded = [keras.ops.convert_to_numpy(w) for w in restored.weights]
        if len(saved) != len(loaded) or not all(
            a.shape == b.shape and (a == b).all() for a, b in zip(saved, loaded)
        ):
            raise ValueError(f"{path}: the preset written does not load back to the same weights.")

    write_directory_atomically(path, write, check=check)
    return path
