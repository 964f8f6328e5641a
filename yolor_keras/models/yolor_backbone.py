"""`YOLORBackbone`: image -> the shared representation (fused pyramid features)."""

import keras

from yolor_keras.layers import InputSizeCheck
from yolor_keras.models.graph_builder import build_nodes
from yolor_keras.models.model_config import image_shape
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.preset_folder import load_preset_config
from yolor_keras.models.yolor_presets import get_preset
from yolor_keras.models.yolor_presets import make_plan

# The backbone does not depend on the number of classes; plans need one.
ANY_NUM_CLASSES = 1


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORBackbone(keras.Model):
    """The CSP-Darknet backbone and FPN/PAN neck of a YOLOR architecture.

    A functional model from NHWC images in [0, 1] (sides multiples of the
    largest stride) to a dict of fused pyramid features, ``{"P3": ..., "P4":
    ..., ...}`` (stride 8 first): the representation every task head of
    `YOLORObjectDetector` shares. Layers are named after the official PyTorch
    modules (``module_list.12.Conv2d``, ``model.3.cv1.conv``), so official
    checkpoints map by name.

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
    backbone = YOLORBackbone.from_preset("yolor_p6", width_multiplier=0.25)
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
        plan = make_plan(architecture, ANY_NUM_CLASSES, width_multiplier, depth_multiplier)

        # === Functional graph ===
        images = keras.Input(shape=image_shape(image_size), name="images")
        checked = InputSizeCheck(plan.max_stride, name="input_size_check")(images)
        tensors = build_nodes(
            plan.backbone_nodes + plan.neck_nodes,
            {"image": checked},
            bn_epsilon=plan.bn_epsilon,
            deploy=deploy,
        )
        features = {level: tensors[node] for level, node in plan.neck_outputs.items()}
        kwargs.setdefault("name", "backbone")
        super().__init__(inputs=images, outputs=features, **kwargs)

        # === Config ===
        self.architecture = plain_copy(architecture)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.image_size = image_size
        self.deploy = bool(deploy)
        self.branch = plan.branch
        self.max_stride = int(plan.max_stride)
        self.pyramid_strides = dict(plan.pyramid_strides)
        self.output_channels = {
            level: plan.channels[node] for level, node in plan.neck_outputs.items()
        }

    def plan(self, num_classes=ANY_NUM_CLASSES):
        """The architecture's `GraphPlan` at this scaling, for heads of ``num_classes``."""
        return make_plan(
            self.architecture, num_classes, self.width_multiplier, self.depth_multiplier
        )

    @classmethod
    def from_preset(
        cls, preset, width_multiplier=1.0, depth_multiplier=1.0, image_size=None, **kwargs
    ):
        """An official variant by name (random weights), or a saved preset folder.

        Args:
            preset: one of `yolor_presets.PRESETS` (``"yolor_p6"``, ...), or
                a local preset folder written by `YOLORObjectDetector.save_to_preset`
                (its backbone config and weights are loaded; the scaling
                arguments must then be left at their defaults).
            width_multiplier, depth_multiplier, image_size: scaling of a named
                variant; 0.125 gives tiny test models.
            **kwargs: further constructor arguments (``deploy``, ``name``).
        """
        folder = load_preset_config(preset)
        if folder is not None:
            backbone = keras.saving.deserialize_keras_object(folder.config["backbone"])
            folder.load_backbone_weights(backbone)
            return backbone
        return cls(
            architecture=get_preset(preset)["architecture"],
            width_multiplier=width_multiplier,
            depth_multiplier=depth_multiplier,
            image_size=image_size,
            **kwargs,
        )

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
