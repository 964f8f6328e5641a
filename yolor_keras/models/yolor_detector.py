"""`YOLORDetector`: backbone + neck + head, returning raw per-level outputs."""

import keras
import numpy as np

from yolor_keras.models.graph_builder import fold_steps
from yolor_keras.models.graph_builder import head_fold_steps
from yolor_keras.models.model_config import image_shape
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.yolor_backbone import YOLORBackbone
from yolor_keras.models.yolor_head import YOLORHead
from yolor_keras.models.yolor_neck import YOLORNeck
from yolor_keras.models.yolor_presets import get_preset
from yolor_keras.models.yolor_presets import make_plan


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORDetector(keras.Model):
    """A YOLOR object detector of either official branch.

    ``detector(images)`` takes NHWC float32 images in [0, 1] whose height
    and width are multiples of the largest stride, and returns a list of raw
    head tensors, stride ascending, each ``(batch, H / s, W / s, A, 5 + C)``
    with pre-sigmoid ``[x, y, w, h, obj, cls...]``. Turn them into boxes with
    `decode_predictions(raw, detector.anchors, detector.strides)`.

    Args:
        architecture: an architecture dict (see `yolor_presets.PRESETS`);
            paper-branch checkpoints carry one in their ``yaml``.
        num_classes: number of object classes.
        width_multiplier: channel multiplier (``ceil(F * w / 8) * 8``, >= 8).
        depth_multiplier: repeat multiplier (``max(round(n * d), 1)``).
        image_size: None (any valid size), an int or ``(height, width)``.
        deploy: build the deploy form: BatchNorm and implicit layers folded
            into the convolutions. Use `yolor_keras.export.folding` to obtain
            one with weights from a trained model.
        class_names: optional list of ``num_classes`` names, saved with the
            model so that predictions can be labelled after loading.
        **kwargs: standard `keras.Model` arguments.

    Attributes:
        num_classes, strides (list of ints), anchors (float32 array
        ``(levels, anchors, 2)`` of (w, h) in input pixels), backbone, neck,
        head.

    Example:

    ```python
    detector = YOLORDetector.from_preset("yolor_p6", num_classes=3, width_multiplier=0.125)
    raw = detector(np.zeros((1, 128, 128, 3), "float32"))
    boxes = decode_predictions(raw, detector.anchors, detector.strides)  # (1, 1020, 8)
    ```
    """

    def __init__(
        self,
        architecture,
        num_classes=80,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        deploy=False,
        class_names=None,
        **kwargs,
    ):
        if class_names is not None and len(class_names) != int(num_classes):
            raise ValueError(
                f"`class_names` has {len(class_names)} names but `num_classes` is {num_classes}."
            )
        # === Parts ===
        plan = make_plan(architecture, num_classes, width_multiplier, depth_multiplier)
        backbone = YOLORBackbone(
            architecture, width_multiplier, depth_multiplier, image_size=image_size, deploy=deploy
        )
        neck = YOLORNeck(architecture, width_multiplier, depth_multiplier, deploy=deploy)
        head = YOLORHead(
            architecture, num_classes, width_multiplier, depth_multiplier, deploy=deploy
        )

        # === Functional graph ===
        images = keras.Input(shape=image_shape(image_size), name="images")
        raw_outputs = head(neck(backbone(images)))
        kwargs.setdefault("name", "yolor_detector")
        super().__init__(inputs=images, outputs=raw_outputs, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.architecture = plain_copy(architecture)
        self.num_classes = int(num_classes)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.image_size = image_size
        self.deploy = bool(deploy)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.branch = plan.branch
        self.strides = [level.stride for level in plan.head_levels]
        self.anchors = np.array([level.anchors for level in plan.head_levels], "float32")

    @classmethod
    def from_preset(
        cls,
        name,
        num_classes=80,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        **kwargs,
    ):
        """Builds an official variant by preset name (randomly initialised).

        Args:
            name: one of `yolor_presets.PRESETS` (``"yolor_p6"``, ...).
            num_classes: number of object classes.
            width_multiplier: channel multiplier; 0.125 gives tiny test models.
            depth_multiplier: repeat multiplier.
            image_size: None, an int or ``(height, width)``.
            **kwargs: further constructor arguments (``deploy``, ``name``).
        """
        return cls(
            architecture=get_preset(name)["architecture"],
            num_classes=num_classes,
            width_multiplier=width_multiplier,
            depth_multiplier=depth_multiplier,
            image_size=image_size,
            **kwargs,
        )

    def fold_steps(self):
        """How the deploy form's weights derive from this model's layers.

        Returns:
            A list of tuples naming layers: ``("conv_bn", conv, bn)``,
            ``("copy", conv)``, ``("bn_affine", bn)`` and
            ``("implicit_conv", conv, implicit_add, implicit_multiply)``.
            `yolor_keras.export.folding` applies them.
        """
        plan = make_plan(
            self.architecture, self.num_classes, self.width_multiplier, self.depth_multiplier
        )
        return (
            fold_steps(plan.backbone_nodes)
            + fold_steps(plan.neck_nodes)
            + head_fold_steps(plan.head_levels)
        )

    def get_config(self):
        return {
            "architecture": plain_copy(self.architecture),
            "num_classes": self.num_classes,
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "image_size": plain_copy(self.image_size),
            "deploy": self.deploy,
            "class_names": self.class_names,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
