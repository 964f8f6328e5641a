"""`YOLORBackbone`: image -> named pyramid features."""

import keras

from yolor_keras.models.graph_builder import build_nodes
from yolor_keras.layers.input_size_check import InputSizeCheck
from yolor_keras.models.model_config import image_shape
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.yolor_presets import make_plan

# The backbone and neck do not depend on the number of classes; plans need one.
_ANY_NUM_CLASSES = 1


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORBackbone(keras.Model):
    """The CSP-Darknet backbone of a YOLOR architecture (either branch).

    A functional model from NHWC images in [0, 1] to a dict of pyramid
    features, ``{"P3": ..., "P4": ..., ...}`` (stride 8 first). Layers are
    named after the official PyTorch modules (``module_list.12.Conv2d``,
    ``model.3.cv1.conv``), so official checkpoints map by name.

    Args:
        architecture: an architecture dict (see `yolor_presets.PRESETS`).
        width_multiplier: channel multiplier (``ceil(F * w / 8) * 8``, >= 8).
        depth_multiplier: repeat multiplier (``max(round(n * d), 1)``).
        image_size: None (any size that is a multiple of the largest
            stride), an int or ``(height, width)``.
        deploy: build the deploy form (BatchNorm folded into the convs).
        **kwargs: standard `keras.Model` arguments (``name``, ...).

    Example:

    ```python
    from yolor_keras.models import PRESETS, YOLORBackbone
    backbone = YOLORBackbone(PRESETS["yolor_p6"]["architecture"], width_multiplier=0.25)
    features = backbone(np.zeros((1, 256, 256, 3), "float32"))  # features["P6"]: (1, 4, 4, 160)
    ```
    """

    def __init__(
        self,
        architecture,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        deploy=False,
        **kwargs,
    ):
        # === Plan ===
        plan = make_plan(architecture, _ANY_NUM_CLASSES, width_multiplier, depth_multiplier)

        # === Functional graph ===
        images = keras.Input(shape=image_shape(image_size), name="images")
        checked = InputSizeCheck(plan.max_stride, name="input_size_check")(images)
        tensors = build_nodes(
            plan.backbone_nodes, {"image": checked}, bn_epsilon=plan.bn_epsilon, deploy=deploy
        )
        features = {level: tensors[node] for level, node in plan.pyramid.items()}
        kwargs.setdefault("name", "backbone")
        super().__init__(inputs=images, outputs=features, **kwargs)

        # === Config ===
        self.architecture = plain_copy(architecture)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.image_size = image_size
        self.deploy = bool(deploy)
        self.pyramid_strides = dict(plan.pyramid_strides)
        self.pyramid_channels = {level: plan.channels[node] for level, node in plan.pyramid.items()}

    def get_config(self):
        return {
            "architecture": plain_copy(self.architecture),
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "image_size": plain_copy(self.image_size),
            "deploy": self.deploy,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
