"""`YOLORMultiTask`: one shared representation, several task heads, per-task implicit knowledge."""

import keras
import numpy as np
from keras import ops

from yolor_keras.losses import MultiLabelBinaryCrossentropy
from yolor_keras.losses import SupervisedContrastiveLoss
from yolor_keras.losses import YOLORLoss
from yolor_keras.models import YOLORBackbone
from yolor_keras.models import YOLORNeck
from yolor_keras.models import decode_predictions
from yolor_keras.models import get_preset
from yolor_keras.models import iter_layers
from yolor_keras.models import keras_name
from yolor_keras.models import make_plan
from yolor_keras.models.graph_builder import fold_steps
from yolor_keras.models.model_config import image_shape
from yolor_keras.models.model_config import plain_copy
from yolor_keras.tasks.distribution import scale_for_replicas
from yolor_keras.tasks.multi_task_config import HEADS
from yolor_keras.tasks.multi_task_config import normalize_heads
from yolor_keras.tasks.multi_task_config import normalize_implicit
from yolor_keras.tasks.multi_task_config import normalize_loss_weights
from yolor_keras.tasks.multi_task_heads import build_detection_head
from yolor_keras.tasks.multi_task_heads import build_pooled_head
from yolor_keras.tasks.multi_task_heads import detection_fold_steps
from yolor_keras.tasks.multi_task_heads import pooled_fold_steps


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORMultiTask(keras.Model):
    """YOLOR's unified network: a shared backbone and neck, one head per task.

    ``model(images)`` takes NHWC float32 images in [0, 1] (sides multiples of
    the largest stride) and returns a dict with one entry per enabled head:

    - ``"detection"``: list of raw ``(batch, H / s, W / s, A, 5 + C)``
      tensors, stride ascending, exactly the `YOLORDetector` contract
      (decode with `decode_predictions(raw, model.anchors, model.strides)`);
    - ``"classification"``: ``(batch, num_labels)`` multi-label logits;
    - ``"embedding"``: ``(batch, embedding_dim)`` L2-normalised vectors.

    Each head has its own implicit knowledge (see `multi_task_heads`): an
    `ImplicitAdd` on the shared features entering it and an
    `ImplicitMultiply` on its output, each modelled as a vector, a network
    or a factorization, or left out (``implicit`` argument).

    ``fit`` takes ``(images, targets)`` with ``targets`` a dict keyed like
    the outputs (see `yolor_keras.data.build_multi_task_dataset`):
    ``"detection"``: ``{"boxes", "classes"}`` as for `YOLORObjectDetector`;
    ``"classification"``: ``(batch, num_labels)`` multi-hot;
    ``"embedding"``: ``(batch,)`` integer identities (-1: none). The loss is
    ``sum_head loss_weights[head] * L_head`` per sample, with `YOLORLoss`,
    `MultiLabelBinaryCrossentropy` and `SupervisedContrastiveLoss`; its batch
    mean is multiplied by ``loss_scale`` (the trainer's nominal batch, as for
    `YOLORObjectDetector`) and divided by the replicas in sync.

    Args:
        architecture: an architecture dict (see `yolor_presets.PRESETS`).
        num_classes: object classes of the detection head.
        num_labels: labels of the classification head (default:
            ``num_classes``).
        embedding_dim: size of the embedding.
        heads: the enabled heads, any of ``HEADS``. A head that is off has
            no layers and no weights.
        implicit: implicit knowledge per head and use: a form
            (``"vector"``, ``"network"``, ``"factorization"``), None for none,
            or a dict (see `multi_task_config.normalize_implicit`).
        head_width: hidden width of the classification and embedding heads.
        width_multiplier, depth_multiplier: model scaling.
        image_size: None (any valid size), an int or ``(height, width)``.
        deploy: build the deploy form (BatchNorm and implicit layers folded);
            `yolor_keras.export.fold_multi_task` makes one from a trained
            model.
        loss_weights: ``{head: weight}``; missing heads weigh 1.
        box_gain, obj_gain, cls_gain, anchor_t: the detection loss's recipe
            values (see `YOLORLoss`).
        label_pos_weight: positive weight of the classification BCE.
        temperature: temperature of the contrastive embedding loss.
        loss_scale: multiplier of the mean loss before gradients.
        class_names: optional list of class names, kept with the model.
        **kwargs: standard `keras.Model` arguments.

    Example:

    ```python
    model = YOLORMultiTask.from_preset(
        "yolor_p6", num_classes=5, width_multiplier=0.125, depth_multiplier=0.33,
        implicit={"detection": "vector", "classification": "network", "embedding": None},
    )
    outputs = model(np.zeros((2, 128, 128, 3), "float32"))
    outputs["classification"].shape  # (2, 5)
    model.compile(optimizer="adam")
    model.fit(dataset, epochs=3)  # from build_multi_task_dataset
    ```
    """

    def __init__(
        self,
        architecture,
        num_classes=80,
        num_labels=None,
        embedding_dim=128,
        heads=HEADS,
        implicit="vector",
        head_width=256,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        deploy=False,
        loss_weights=None,
        box_gain=0.05,
        obj_gain=1.0,
        cls_gain=0.5,
        anchor_t=4.0,
        label_pos_weight=1.0,
        temperature=0.1,
        loss_scale=1.0,
        class_names=None,
        **kwargs,
    ):
        # === Settings ===
        heads = normalize_heads(heads)
        implicit = normalize_implicit(implicit, heads)
        num_labels = int(num_classes if num_labels is None else num_labels)
        for name, value in (
            ("num_labels", num_labels),
            ("embedding_dim", embedding_dim),
            ("head_width", head_width),
        ):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        plan = make_plan(architecture, num_classes, width_multiplier, depth_multiplier)

        # === Shared representation ===
        backbone = YOLORBackbone(
            architecture, width_multiplier, depth_multiplier, image_size=image_size, deploy=deploy
        )
        neck = YOLORNeck(architecture, width_multiplier, depth_multiplier, deploy=deploy)

        # === Functional graph ===
        images = keras.Input(shape=image_shape(image_size), name="images")
        features = neck(backbone(images))
        outputs = {}
        if "detection" in heads:
            outputs["detection"] = build_detection_head(
                plan, features, implicit["detection"], deploy=deploy
            )
        if "classification" in heads:
            outputs["classification"] = build_pooled_head(
                "classification",
                features,
                num_labels,
                int(head_width),
                implicit["classification"],
                normalize=False,
                deploy=deploy,
            )
        if "embedding" in heads:
            outputs["embedding"] = build_pooled_head(
                "embedding",
                features,
                int(embedding_dim),
                int(head_width),
                implicit["embedding"],
                normalize=True,
                deploy=deploy,
            )
        kwargs.setdefault("name", "yolor_multi_task")
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.neck = neck
        self.architecture = plain_copy(architecture)
        self.num_classes = int(num_classes)
        self.num_labels = num_labels
        self.embedding_dim = int(embedding_dim)
        self.heads = heads
        self.implicit = implicit
        self.head_width = int(head_width)
        self.width_multiplier = float(width_multiplier)
        self.depth_multiplier = float(depth_multiplier)
        self.image_size = image_size
        self.deploy = bool(deploy)
        self.loss_weights = normalize_loss_weights(loss_weights, heads)
        self.box_gain = float(box_gain)
        self.obj_gain = float(obj_gain)
        self.cls_gain = float(cls_gain)
        self.anchor_t = float(anchor_t)
        self.label_pos_weight = float(label_pos_weight)
        self.temperature = float(temperature)
        self.loss_scale = float(loss_scale)
        self.class_names = list(class_names) if class_names is not None else None
        self.branch = plan.branch
        self.strides = [level.stride for level in plan.head_levels]
        self.anchors = np.array([level.anchors for level in plan.head_levels], "float32")

        # === Losses and their progress-bar trackers ===
        self.detection_loss = YOLORLoss.from_detector(
            self,
            box_gain=self.box_gain,
            obj_gain=self.obj_gain,
            cls_gain=self.cls_gain,
            anchor_t=self.anchor_t,
        )
        self.classification_loss = MultiLabelBinaryCrossentropy(pos_weight=self.label_pos_weight)
        self.embedding_loss = SupervisedContrastiveLoss(temperature=self.temperature)
        tracked = {
            "detection": ("box", "obj", "cls"),
            "classification": ("labels",),
            "embedding": ("contrastive",),
        }
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name) for head in heads for name in tracked[head]
        }

    @classmethod
    def from_preset(cls, name, **kwargs):
        """Builds an official variant's backbone and neck by preset name, with task heads.

        Args:
            name: one of `yolor_presets.PRESETS` (``"yolor_p6"``, ...).
            **kwargs: any other constructor argument.
        """
        return cls(architecture=get_preset(name)["architecture"], **kwargs)

    # -- training -----------------------------------------------------------

    @property
    def metrics(self):
        return super().metrics + list(self.loss_trackers.values())

    def _targets(self, y, head):
        if not isinstance(y, dict) or head not in y:
            keys = sorted(y) if isinstance(y, dict) else type(y).__name__
            raise ValueError(
                f"{self.name}: the targets must be a dict with a {head!r} entry for the "
                f"{head} head (heads {list(self.heads)}); got {keys}."
            )
        return y[head]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        per_sample = 0.0
        if "detection" in self.heads:
            raw = [ops.cast(output, "float32") for output in y_pred["detection"]]
            terms = self.detection_loss.compute_components(self._targets(y, "detection"), raw)
            for name in ("box", "obj", "cls"):
                self.loss_trackers[name].update_state(terms[name])
            per_sample = per_sample + self.loss_weights["detection"] * terms["loss"]
        if "classification" in self.heads:
            labels = self.classification_loss.call(
                self._targets(y, "classification"), y_pred["classification"]
            )
            self.loss_trackers["labels"].update_state(labels)
            per_sample = per_sample + self.loss_weights["classification"] * labels
        if "embedding" in self.heads:
            contrastive = self.embedding_loss.call(
                self._targets(y, "embedding"), y_pred["embedding"]
            )
            self.loss_trackers["contrastive"].update_state(contrastive)
            per_sample = per_sample + self.loss_weights["embedding"] * contrastive
        loss = ops.mean(per_sample) * self.loss_scale
        return scale_for_replicas(loss)

    def decode(self, raw_outputs):
        """Raw detection tensors to ``(batch, N, 5 + C)`` boxes in input pixels."""
        return decode_predictions(raw_outputs, self.anchors, self.strides)

    # -- structure ----------------------------------------------------------

    def head_layers(self, head):
        """The layers that belong to one head (empty when the head is off)."""
        if head not in HEADS:
            raise ValueError(f"Unknown head {head!r}; choose among {list(HEADS)}.")
        if head not in self.heads:
            return []
        if head == "detection":
            plan = make_plan(
                self.architecture, self.num_classes, self.width_multiplier, self.depth_multiplier
            )
            names = set()
            for level in plan.head_levels:
                conv = level.conv
                names.update(
                    keras_name(path)
                    for path in (conv["conv_name"], conv["bn_name"], conv["act_name"])
                    if path
                )
                names.update(
                    keras_name(path)
                    for path in (
                        level.implicit_add_name,
                        level.output_conv_name,
                        level.implicit_multiply_name,
                    )
                )
                names.add(f"{level.level}_raw")
            return [layer for layer in self.layers if layer.name in names]
        return [layer for layer in self.layers if layer.name.startswith(f"{head}_")]

    def fold_steps(self):
        """How the deploy form's weights derive from this model's layers.

        Returns:
            A list of tuples naming layers by official module path (or own
            name): ``("conv_bn", conv, bn)``, ``("copy", conv)``,
            ``("bn_affine", bn)`` and ``("implicit_linear", layer,
            implicit_add or None, implicit_multiply or None)``.
            `yolor_keras.export.fold_multi_task` applies them.
        """
        plan = make_plan(
            self.architecture, self.num_classes, self.width_multiplier, self.depth_multiplier
        )
        steps = fold_steps(plan.backbone_nodes) + fold_steps(plan.neck_nodes)
        if "detection" in self.heads:
            steps += detection_fold_steps(plan, self.implicit["detection"])
        for head in ("classification", "embedding"):
            if head in self.heads:
                steps += pooled_fold_steps(head, self.implicit[head])
        return steps

    def load_detector_weights(self, detector):
        """Copies a trained `YOLORDetector`'s backbone, neck and head into this model.

        The detection head's implicit vectors are copied where this model
        uses the ``"vector"`` form, and folded into the 1x1 prediction conv
        where it has none, so that the detection outputs equal the
        detector's exactly. A detector checkpoint (e.g. converted official
        weights) can so start multi-task training.

        Args:
            detector: a training-form `YOLORDetector` of the same
                architecture, scaling and number of classes.
        """
        from yolor_keras.layers import fold_implicit_conv1x1

        mismatches = [
            name
            for name in ("architecture", "num_classes", "width_multiplier", "depth_multiplier")
            if plain_copy(getattr(detector, name, None)) != plain_copy(getattr(self, name))
        ]
        if mismatches:
            raise ValueError(
                f"load_detector_weights: the detector differs from '{self.name}' in {mismatches}."
            )
        if getattr(detector, "deploy", False) or self.deploy:
            raise ValueError("load_detector_weights copies between training-form models.")
        if "detection" not in self.heads:
            raise ValueError(f"'{self.name}' has no detection head to load a detector into.")
        setting = self.implicit["detection"]
        for use in ("add", "multiply"):
            if setting[use] not in ("vector", None):
                raise ValueError(
                    f"load_detector_weights: the detection head's implicit {use} uses the "
                    f"{setting[use]!r} form, which a detector's vector cannot be copied into."
                )
        self.backbone.set_weights(detector.backbone.get_weights())
        self.neck.set_weights(detector.neck.get_weights())

        source = {layer.name: layer for layer in iter_layers(detector.head)}
        plan = make_plan(
            self.architecture, self.num_classes, self.width_multiplier, self.depth_multiplier
        )
        for level in plan.head_levels:
            conv = level.conv
            for path in (conv["conv_name"], conv["bn_name"]):
                if path:
                    name = keras_name(path)
                    self.get_layer(name).set_weights(source[name].get_weights())
            add_name = keras_name(level.implicit_add_name)
            multiply_name = keras_name(level.implicit_multiply_name)
            output_name = keras_name(level.output_conv_name)
            kernel, bias = source[output_name].get_weights()
            add_vector = multiply_vector = None
            if setting["add"] == "vector":
                self.get_layer(add_name).set_weights(source[add_name].get_weights())
            else:
                add_vector = ops.convert_to_numpy(source[add_name].implicit_vector())
            if setting["multiply"] == "vector":
                self.get_layer(multiply_name).set_weights(source[multiply_name].get_weights())
            else:
                multiply_vector = ops.convert_to_numpy(source[multiply_name].implicit_vector())
            self.get_layer(output_name).set_weights(
                list(fold_implicit_conv1x1(kernel, bias, add_vector, multiply_vector))
            )

    # -- serialization ------------------------------------------------------

    def get_config(self):
        return {
            "architecture": plain_copy(self.architecture),
            "num_classes": self.num_classes,
            "num_labels": self.num_labels,
            "embedding_dim": self.embedding_dim,
            "heads": list(self.heads),
            "implicit": plain_copy(self.implicit),
            "head_width": self.head_width,
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "image_size": plain_copy(self.image_size),
            "deploy": self.deploy,
            "loss_weights": dict(self.loss_weights),
            "box_gain": self.box_gain,
            "obj_gain": self.obj_gain,
            "cls_gain": self.cls_gain,
            "anchor_t": self.anchor_t,
            "label_pos_weight": self.label_pos_weight,
            "temperature": self.temperature,
            "loss_scale": self.loss_scale,
            "class_names": self.class_names,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
