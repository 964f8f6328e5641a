"""`YOLORHead`: per-level 3x3 conv, implicit knowledge and prediction conv."""

import math

import keras
import numpy as np

from yolor_keras.models.graph_builder import build_head_level
from yolor_keras.models.graph_plan import keras_name
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.yolor_presets import make_plan


def prior_bias(num_anchors, num_classes, stride):
    """The official initial bias of a level's prediction conv (RetinaNet-style).

    Objectness starts near 8 objects per 640x640 image and class scores near
    1 / num_classes, which keeps the first training steps stable. The
    official code adds it to the conv's randomly initialised bias.
    """
    bias = np.zeros((num_anchors, 5 + num_classes), "float32")
    bias[:, 4] += math.log(8 / (640 / stride) ** 2)
    bias[:, 5:] += math.log(0.6 / (num_classes - 0.99))
    return bias.reshape(-1)


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORHead(keras.Model):
    """YOLOR's detection head, one branch per pyramid level.

    Each level computes conv3x3 + BN + SiLU -> `ImplicitAdd` -> 1x1 conv with
    bias -> `ImplicitMultiply`, then splits channels into (anchor, field).
    A functional model from the neck's feature dict to a list of raw tensors
    ``(batch, H, W, num_anchors, 5 + num_classes)``, stride ascending, with
    pre-sigmoid ``[x, y, w, h, obj, cls...]``.

    Args:
        architecture: an architecture dict (see `yolor_presets.PRESETS`).
        num_classes: number of object classes.
        width_multiplier: channel multiplier.
        depth_multiplier: repeat multiplier.
        deploy: build the deploy form (no BatchNorm, no implicit layers).
        **kwargs: standard `keras.Model` arguments.

    Example:

    ```python
    head = YOLORHead(PRESETS["yolor_p6"]["architecture"], num_classes=3)
    raw = head(neck(backbone(images)))  # [P3, P4, P5, P6] raw tensors
    ```
    """

    def __init__(
        self,
        architecture,
        num_classes=80,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        deploy=False,
        **kwargs,
    ):
        # === Plan ===
        plan = make_plan(architecture, num_classes, width_multiplier, depth_multiplier)

        # === Functional graph ===
        inputs = {
            level.level: keras.Input(
                shape=(None, None, plan.channels[level.input_id]), name=level.level
            )
            for level in plan.head_levels
        }
        outputs = [
            build_head_level(
                level,
                inputs[level.level],
                num_classes=plan.num_classes,
                bn_epsilon=plan.bn_epsilon,
                deploy=deploy,
            )
            for level in plan.head_levels
        ]
        kwargs.setdefault("name", "head")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        for level in plan.head_levels:
            # Both official branches add the prior to the conv's default
            # (random uniform) bias rather than replacing it.
            bias = self.get_layer(keras_name(level.output_conv_name)).bias
            bias.assign(
                np.asarray(bias) + prior_bias(plan.num_anchors, plan.num_classes, level.stride)
            )

        # === Config ===
        self.architecture = plain_copy(architecture)
        self.num_classes = int(num_classes)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.deploy = bool(deploy)

    def get_config(self):
        return {
            "architecture": plain_copy(self.architecture),
            "num_classes": self.num_classes,
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "deploy": self.deploy,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
