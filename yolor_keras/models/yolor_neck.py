"""`YOLORNeck`: the FPN/PAN that fuses the pyramid features."""

import keras

from yolor_keras.models.graph_builder import build_nodes
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.yolor_backbone import _ANY_NUM_CLASSES
from yolor_keras.models.yolor_presets import make_plan


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORNeck(keras.Model):
    """SPP-CSP on the top level, a top-down path, then a bottom-up path.

    A functional model from the backbone's feature dict to a dict of fused
    features with the same level names (the inputs of the heads).

    Args:
        architecture: an architecture dict (see `yolor_presets.PRESETS`).
        width_multiplier: channel multiplier.
        depth_multiplier: repeat multiplier.
        deploy: build the deploy form (BatchNorm folded into the convs).
        **kwargs: standard `keras.Model` arguments.

    Example:

    ```python
    neck = YOLORNeck(PRESETS["yolor_csp"]["architecture"], width_multiplier=0.25)
    fused = neck(backbone(images))
    ```
    """

    def __init__(
        self, architecture, width_multiplier=1.0, depth_multiplier=1.0, deploy=False, **kwargs
    ):
        # === Plan ===
        plan = make_plan(architecture, _ANY_NUM_CLASSES, width_multiplier, depth_multiplier)

        # === Functional graph ===
        inputs = {
            level: keras.Input(shape=(None, None, plan.channels[node]), name=level)
            for level, node in plan.pyramid.items()
        }
        tensors = {node: inputs[level] for level, node in plan.pyramid.items()}
        build_nodes(plan.neck_nodes, tensors, bn_epsilon=plan.bn_epsilon, deploy=deploy)
        outputs = {level: tensors[node] for level, node in plan.neck_outputs.items()}
        kwargs.setdefault("name", "neck")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.architecture = plain_copy(architecture)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.deploy = bool(deploy)
        self.output_channels = {
            level: plan.channels[node] for level, node in plan.neck_outputs.items()
        }

    def get_config(self):
        return {
            "architecture": plain_copy(self.architecture),
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "deploy": self.deploy,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
