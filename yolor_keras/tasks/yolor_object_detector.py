"""`YOLORObjectDetector`: the one YOLOR task, from a detector to the unified multi-task network."""

import contextlib

import keras
import numpy as np
from keras import ops

from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import fold_implicit_conv1x1
from yolor_keras.losses import MultiLabelBinaryCrossentropy
from yolor_keras.losses import SupervisedContrastiveLoss
from yolor_keras.losses import YOLORLoss
from yolor_keras.models import YOLORBackbone
from yolor_keras.models import decode_predictions
from yolor_keras.models import get_preset
from yolor_keras.models import iter_layers
from yolor_keras.models import keras_name
from yolor_keras.models.graph_builder import fold_steps
from yolor_keras.models.heads import HEADS
from yolor_keras.models.heads import DetectionHead
from yolor_keras.models.heads import normalize_heads
from yolor_keras.models.model_config import plain_copy
from yolor_keras.models.preset_folder import load_preset_config
from yolor_keras.models.preset_folder import save_preset

# Name scope of everything after the network in `detect`; int8 export keeps
# these ops in float32, since pixel coordinates and [0, 1] scores cannot
# share an int8 scale.
POSTPROCESS_SCOPE = "postprocess"
# Output names of `detect`: with NMS (boxes x1y1x2y2 in input pixels, scores,
# int32 classes with -1 past the count, int32 count), without NMS, and of
# the classification and embedding heads.
NMS_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
DECODED_OUTPUT = "predictions"
LABEL_OUTPUT = "label_probabilities"
EMBEDDING_OUTPUT = "embedding"
# The progress-bar terms of each head's loss.
LOSS_TERMS = {
    "detection": ("box", "obj", "cls"),
    "classification": ("labels",),
    "embedding": ("contrastive",),
}
# `compile`'s loss settings and their official defaults (hyp.scratch.*.yaml;
# the loss scale is the nominal batch of 64 that the official loss, which
# multiplies the batch mean by the batch size and accumulates gradients over
# 64 / batch batches, is tuned for).
LOSS_DEFAULTS = {
    "box_gain": 0.05,
    "obj_gain": 1.0,
    "cls_gain": 0.5,
    "anchor_t": 4.0,
    "cls_pos_weight": 1.0,
    "obj_pos_weight": 1.0,
    "focal_gamma": 0.0,
    "label_smoothing": 0.0,
    "neighbor_rule": None,
    "loss_scale": 64.0,
    "loss_weights": None,
    "label_pos_weight": 1.0,
    "temperature": 0.1,
}


def scale_for_replicas(loss):
    """Divides a per-replica mean loss by the number of replicas in sync.

    Each replica computes the mean over its local batch; gradients are then
    summed across replicas, so without this the update would be
    ``num_replicas`` times too large. (Keras does this for losses given to
    `compile`; a task that computes its own loss must do it too.)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss * ops.cast(1.0 / replicas, loss.dtype)
    return loss


def batchnorm_statistics(model):
    """The moving mean and variance of every BatchNormalization in ``model``.

    In a fixed order (layers depth first, mean before variance), which is
    the order of their averages in the optimizer's saved state.
    """
    statistics = []
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in seen:
            seen.add(id(layer))
            statistics.extend([layer.moving_mean, layer.moving_variance])
    return statistics


def _postprocess_scope():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.name_scope(POSTPROCESS_SCOPE)
    return contextlib.nullcontext()


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORObjectDetector(keras.Model):
    """YOLOR as one keras-hub-style Task: backbone, task heads, preprocessor, decoder.

    ``task(images)`` takes NHWC float32 images in [0, 1] whose sides are
    multiples of the largest stride and returns the raw head outputs (what
    is trained). With only a `DetectionHead` (the default) that is a list of
    ``(batch, H / s, W / s, A, 5 + C)`` pre-sigmoid tensors, stride
    ascending; with more heads a dict keyed by head name (``"detection"``,
    ``"classification"``: ``(batch, num_labels)`` logits, ``"embedding"``:
    ``(batch, dim)`` unit vectors).

    ``task.detect(images)`` (and ``task.predict``) is the one path from
    images to final outputs that prediction, evaluation and every export
    use: the network, `decode`, then the ``prediction_decoder`` (NMS), plus
    label probabilities and embeddings for the other heads. Exports start
    from the deploy form (`yolor_keras.export.fold`), in which BatchNorm and
    the implicit layers are folded into the convolutions.

    Training: ``compile`` takes the loss settings with the official
    defaults, so a hand-built task trains at the official gradient scale;
    ``fit`` takes ``(images, targets)`` batches of
    `yolor_keras.data.build_dataset`: ``{"boxes", "classes"}`` for a
    detector, a dict keyed by head for several heads. The loss is
    ``sum_head loss_weights[head] * L_head`` per sample, with `YOLORLoss`,
    `MultiLabelBinaryCrossentropy` and `SupervisedContrastiveLoss`; the batch
    mean is multiplied by ``loss_scale`` (the nominal batch, 64: the
    official loss is the batch mean times the batch size, summed over the
    batches accumulated up to 64 images). Compiled with `YOLORSGD`, the
    optimizer also averages the BatchNorm statistics, so the EMA model
    (evaluated and saved) is the official one.

    Args:
        backbone: a `YOLORBackbone` (backbone and neck, the shared
            representation).
        heads: a head or list of heads (`DetectionHead`, `ClassificationHead`,
            `EmbeddingHead`, at most one of each); default ``DetectionHead(80)``.
        preprocessor: optional `YOLORImageConverter` (letterbox and pad
            value) used by `Predictor` and the exported image signatures.
        prediction_decoder: a `NonMaxSuppression` layer holding the NMS
            settings of `detect`; default ``NonMaxSuppression()``.
        class_names: optional list of the detection head's class names.
        **kwargs: standard `keras.Model` arguments.

    Example:

    ```python
    task = YOLORObjectDetector.from_preset("yolor_p6", num_classes=3, width_multiplier=0.125)
    task.compile(optimizer=yolor_keras.training.YOLORSGD())
    task.fit(train_dataset, epochs=10)
    detections = task.predict(images)  # {"boxes", "scores", "classes", "num_detections"}
    ```
    """

    def __init__(
        self,
        backbone,
        heads=None,
        preprocessor=None,
        prediction_decoder=None,
        class_names=None,
        **kwargs,
    ):
        # === Parts ===
        heads = normalize_heads(DetectionHead() if heads is None else heads)
        head_by_name = {head.name: head for head in heads}
        detection = head_by_name.get("detection")
        num_classes = detection.num_classes if detection is not None else 1
        if class_names is not None and detection is None:
            raise ValueError("`class_names` name the detection head's classes; there is none.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} names but the detection head has "
                f"{num_classes} classes."
            )
        plan = backbone.plan(num_classes)

        # === Functional graph ===
        images = keras.Input(shape=backbone.input_shape[1:], name="images")
        features = backbone(images)
        outputs = {head.name: head.build(plan, features, deploy=backbone.deploy) for head in heads}
        if list(outputs) == ["detection"]:
            outputs = outputs["detection"]
        kwargs.setdefault("name", "yolor_object_detector")
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone = backbone
        self._heads = heads
        self.preprocessor = preprocessor
        self.prediction_decoder = prediction_decoder or NonMaxSuppression()
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.num_classes = num_classes
        self.strides = [level.stride for level in plan.head_levels]
        self.anchors = np.array([level.anchors for level in plan.head_levels], "float32")
        self.loss_settings = None

    # -- structure ------------------------------------------------------------

    @property
    def heads(self):
        """The task's heads, in the order of `HEADS`."""
        return self._heads

    @property
    def head_names(self):
        return tuple(head.name for head in self._heads)

    def head(self, name):
        """The head called ``name``, or None."""
        return next((head for head in self._heads if head.name == name), None)

    @property
    def architecture(self):
        return self.backbone.architecture

    @property
    def branch(self):
        return self.backbone.branch

    @property
    def width_multiplier(self):
        return self.backbone.width_multiplier

    @property
    def depth_multiplier(self):
        return self.backbone.depth_multiplier

    @property
    def image_size(self):
        return self.backbone.image_size

    @property
    def deploy(self):
        return self.backbone.deploy

    def plan(self):
        return self.backbone.plan(self.num_classes)

    def head_layers(self, name):
        """The layers that belong to one head (empty when the task has none)."""
        if name not in HEADS:
            raise ValueError(f"Unknown head {name!r}; choose among {list(HEADS)}.")
        head = self.head(name)
        if head is None:
            return []
        names = head.layer_names(self.plan())
        if names is None:
            return [layer for layer in self.layers if layer.name.startswith(f"{name}_")]
        return [layer for layer in self.layers if layer.name in names]

    def fold_steps(self):
        """How the deploy form's weights derive from this task's layers.

        Returns:
            A list of tuples naming layers by official module path (or own
            name): ``("conv_bn", conv, bn)``, ``("copy", conv)``,
            ``("bn_affine", bn)`` and ``("implicit_linear", layer,
            implicit_add or None, implicit_multiply or None)``.
            `yolor_keras.export.fold` applies them.
        """
        plan = self.plan()
        steps = fold_steps(plan.backbone_nodes) + fold_steps(plan.neck_nodes)
        for head in self._heads:
            steps += head.fold_steps(plan)
        return steps

    # -- inference ------------------------------------------------------------

    def outputs_by_head(self, outputs):
        """The raw outputs as a dict keyed by head name, whatever their structure."""
        if isinstance(outputs, dict):
            return outputs
        return {"detection": outputs}

    def decode(self, raw_outputs):
        """Raw detection tensors to ``(batch, N, 5 + C)`` boxes in input pixels, float32."""
        raw = [ops.cast(level, "float32") for level in raw_outputs]
        return decode_predictions(raw, self.anchors, self.strides)

    def detect(self, images, nms=True, prediction_decoder=None):
        """Images in [0, 1] -> final outputs: the one inference path.

        Args:
            images: ``(batch, H, W, 3)`` float images, sides multiples of the
                largest stride (letterboxed by the ``preprocessor``).
            nms: end the detection head with the ``prediction_decoder``
                (outputs `NMS_OUTPUTS`, boxes x1y1x2y2 in input pixels);
                False returns the decoded predictions (`DECODED_OUTPUT`).
            prediction_decoder: a `NonMaxSuppression` to use instead of the
                task's own (other NMS settings for one call or one export).

        Returns:
            A dict of float32/int32 tensors: the detection outputs,
            `LABEL_OUTPUT` (sigmoid of the classification logits) and
            `EMBEDDING_OUTPUT`, for the heads the task has.
        """
        outputs = self.outputs_by_head(self(images, training=False))
        results = {}
        if "detection" in outputs:
            with _postprocess_scope():
                decoded = self.decode(outputs["detection"])
                if nms:
                    decoder = prediction_decoder or self.prediction_decoder
                    detections = decoder(decoded)
                    results.update({name: detections[name] for name in NMS_OUTPUTS})
                else:
                    results[DECODED_OUTPUT] = decoded
        if "classification" in outputs:
            results[LABEL_OUTPUT] = ops.sigmoid(ops.cast(outputs["classification"], "float32"))
        if "embedding" in outputs:
            results[EMBEDDING_OUTPUT] = ops.cast(outputs["embedding"], "float32")
        return results

    def detect_output_names(self, nms=True):
        """The names of `detect`'s outputs for this task, in a fixed order."""
        names = []
        if "detection" in self.head_names:
            names.extend(NMS_OUTPUTS if nms else (DECODED_OUTPUT,))
        if "classification" in self.head_names:
            names.append(LABEL_OUTPUT)
        if "embedding" in self.head_names:
            names.append(EMBEDDING_OUTPUT)
        return names

    def predict_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(images)

    # -- training -------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss_settings=None, **kwargs):
        """Configures training; the loss settings have the official defaults.

        Args:
            optimizer: the optimizer (`yolor_keras.training.YOLORSGD` for the
                official recipe).
            loss_settings: optional dict of the settings below (what
                `get_compile_config` saves); keyword arguments override it.
            box_gain, obj_gain, cls_gain, anchor_t, cls_pos_weight,
                obj_pos_weight, focal_gamma, label_smoothing: the recipe's
                loss values (``box``, ``obj``, ``cls``, ``anchor_t``,
                ``cls_pw``, ``obj_pw``, ``fl_gamma``, label smoothing).
            neighbor_rule: the target assignment's neighbour-cell rule,
                ``"main"`` or ``"paper"``; None takes the backbone's branch.
            loss_scale: multiplier of the mean loss (default 64, the
                official nominal batch).
            loss_weights: ``{head: weight}``; missing heads weigh 1.
            label_pos_weight: positive weight of the classification BCE.
            temperature: temperature of the contrastive embedding loss.
            **kwargs: further `keras.Model.compile` arguments.
        """
        settings = dict(LOSS_DEFAULTS)
        settings.update(loss_settings or {})
        for name in LOSS_DEFAULTS:
            if name in kwargs:
                settings[name] = kwargs.pop(name)
        self.loss_settings = self._check_loss_settings(settings)
        self._build_losses()
        super().compile(optimizer=optimizer, **kwargs)
        # Before the optimizer is built (first step, or loading a checkpoint,
        # whose optimizer state then includes the averages).
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if getattr(optimizer, "ema_decay", None) is not None and hasattr(
            optimizer, "average_statistics"
        ):
            optimizer.average_statistics(batchnorm_statistics(self))
        # Built now rather than inside the first traced train step: a
        # tf.function that creates variables while tracing is traced twice,
        # which doubled the cost of the first step.
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def _check_loss_settings(self, settings):
        if settings["neighbor_rule"] is None:
            settings["neighbor_rule"] = "paper" if self.branch == "paper" else "main"
        weights = dict(settings["loss_weights"] or {})
        unknown = sorted(set(weights) - set(self.head_names))
        if unknown:
            raise ValueError(
                f"loss_weights: no head {unknown} in this task (heads {list(self.head_names)})."
            )
        for head in self.head_names:
            weight = weights.get(head, 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(
                    f"loss_weights[{head!r}] must be a non-negative number; got {weight!r}."
                )
            weights[head] = float(weight)
        settings["loss_weights"] = weights
        for name, value in settings.items():
            if name not in ("neighbor_rule", "loss_weights"):
                settings[name] = float(value)
        return settings

    def _build_losses(self):
        settings = self.loss_settings
        self.head_losses = {}
        if "detection" in self.head_names:
            self.head_losses["detection"] = YOLORLoss(
                self.anchors,
                self.strides,
                self.num_classes,
                box_gain=settings["box_gain"],
                obj_gain=settings["obj_gain"],
                cls_gain=settings["cls_gain"],
                anchor_t=settings["anchor_t"],
                cls_pos_weight=settings["cls_pos_weight"],
                obj_pos_weight=settings["obj_pos_weight"],
                label_smoothing=settings["label_smoothing"],
                neighbor_rule=settings["neighbor_rule"],
                focal_gamma=settings["focal_gamma"],
            )
        if "classification" in self.head_names:
            self.head_losses["classification"] = MultiLabelBinaryCrossentropy(
                pos_weight=settings["label_pos_weight"]
            )
        if "embedding" in self.head_names:
            self.head_losses["embedding"] = SupervisedContrastiveLoss(
                temperature=settings["temperature"]
            )
        self.loss_trackers = {
            term: keras.metrics.Mean(name=term)
            for head in self.head_names
            for term in LOSS_TERMS[head]
        }

    @property
    def metrics(self):
        return super().metrics + list(getattr(self, "loss_trackers", {}).values())

    def _targets(self, y, head):
        if self.head_names == ("detection",):
            return y
        if not isinstance(y, dict) or head not in y:
            keys = sorted(y) if isinstance(y, dict) else type(y).__name__
            raise ValueError(
                f"{self.name}: the targets must be a dict with a {head!r} entry for the "
                f"{head} head (heads {list(self.head_names)}); got {keys}."
            )
        return y[head]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.loss_settings is None:
            raise ValueError(f"{self.name}: call `compile()` before training.")
        outputs = self.outputs_by_head(y_pred)
        weights = self.loss_settings["loss_weights"]
        per_sample = 0.0
        if "detection" in outputs:
            raw = [ops.cast(level, "float32") for level in outputs["detection"]]
            terms = self.head_losses["detection"].compute_components(
                self._targets(y, "detection"), raw
            )
            for term in LOSS_TERMS["detection"]:
                self.loss_trackers[term].update_state(terms[term])
            per_sample = per_sample + weights["detection"] * terms["loss"]
        for head, term in (("classification", "labels"), ("embedding", "contrastive")):
            if head in outputs:
                value = self.head_losses[head].call(self._targets(y, head), outputs[head])
                self.loss_trackers[term].update_state(value)
                per_sample = per_sample + weights[head] * value
        loss = ops.mean(per_sample) * self.loss_settings["loss_scale"]
        return scale_for_replicas(loss)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        if self.loss_settings is not None:
            config["loss_settings"] = dict(self.loss_settings)
        return config

    def compile_from_config(self, config):
        # Keras skips compiling on load for a model whose `compile` is
        # overridden unless this is too; it does what Keras' own does.
        config = keras.saving.deserialize_keras_object(config)
        if "loss_settings" in config:
            # Keras' own part of the config has a `loss_weights` too (None),
            # which would override the task's saved head weights.
            config.pop("loss_weights", None)
        self.compile(**config)

    # -- weights from another task --------------------------------------------

    def load_detector_weights(self, detector):
        """Copies a trained detector's backbone and detection head into this task.

        The detection head's implicit vectors are copied where this task uses
        the ``"vector"`` form, and folded into the 1x1 prediction conv where
        it has none, so that the detection outputs equal the detector's
        exactly. A detector checkpoint (e.g. converted official weights) can
        so start multi-task training.

        Args:
            detector: a training-form `YOLORObjectDetector` with a vector-form
                detection head, of the same architecture, scaling and classes.
        """
        mismatches = [
            name
            for name in ("architecture", "num_classes", "width_multiplier", "depth_multiplier")
            if plain_copy(getattr(detector, name, None)) != plain_copy(getattr(self, name))
        ]
        if mismatches:
            raise ValueError(
                f"load_detector_weights: the detector differs from '{self.name}' in {mismatches}."
            )
        if detector.deploy or self.deploy:
            raise ValueError("load_detector_weights copies between training-form models.")
        head = self.head("detection")
        source_head = detector.head("detection")
        if head is None or source_head is None:
            raise ValueError("load_detector_weights needs a detection head on both models.")
        for use in ("add", "multiply"):
            if head.implicit[use] not in ("vector", None):
                raise ValueError(
                    f"load_detector_weights: the detection head's implicit {use} uses the "
                    f"{head.implicit[use]!r} form, which a detector's vector cannot be copied into."
                )
            if source_head.implicit[use] != "vector":
                raise ValueError(
                    f"load_detector_weights: the detector's implicit {use} is not a vector."
                )
        self.backbone.set_weights(detector.backbone.get_weights())

        source = {layer.name: layer for layer in iter_layers(detector)}
        for level in self.plan().head_levels:
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
            if head.implicit["add"] == "vector":
                self.get_layer(add_name).set_weights(source[add_name].get_weights())
            else:
                add_vector = ops.convert_to_numpy(source[add_name].implicit_vector())
            if head.implicit["multiply"] == "vector":
                self.get_layer(multiply_name).set_weights(source[multiply_name].get_weights())
            else:
                multiply_vector = ops.convert_to_numpy(source[multiply_name].implicit_vector())
            self.get_layer(output_name).set_weights(
                list(fold_implicit_conv1x1(kernel, bias, add_vector, multiply_vector))
            )

    # -- construction and serialization ---------------------------------------

    @classmethod
    def from_architecture(
        cls,
        architecture,
        num_classes=80,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        deploy=False,
        heads=None,
        **kwargs,
    ):
        """A task on an architecture dict (e.g. a checkpoint's), randomly initialised."""
        backbone = YOLORBackbone(
            architecture, width_multiplier, depth_multiplier, image_size=image_size, deploy=deploy
        )
        if heads is None:
            heads = DetectionHead(num_classes)
        return cls(backbone, heads=heads, **kwargs)

    @classmethod
    def from_preset(
        cls,
        preset,
        num_classes=80,
        width_multiplier=1.0,
        depth_multiplier=1.0,
        image_size=None,
        deploy=False,
        heads=None,
        **kwargs,
    ):
        """An official variant by name (random weights), or a saved preset folder.

        Args:
            preset: one of `yolor_presets.PRESETS` (``"yolor_p6"``, ...), or a
                local folder written by `save_to_preset` (e.g. by ``yolor
                convert --preset``), whose config and weights are loaded.
            num_classes: classes of the default `DetectionHead`.
            width_multiplier, depth_multiplier, image_size, deploy: the
                backbone's scaling and form (0.125 gives tiny test models).
            heads: the task heads; default ``DetectionHead(num_classes)``.
            **kwargs: further constructor arguments (``class_names``,
                ``prediction_decoder``, ``name``).
        """
        folder = load_preset_config(preset)
        if folder is not None:
            if folder.config["task"] is None:
                raise ValueError(f"{folder.path}: the preset folder has no task.json.")
            task = keras.saving.deserialize_keras_object(folder.config["task"])
            folder.load_task_weights(task)
            return task
        return cls.from_architecture(
            get_preset(preset)["architecture"],
            num_classes=num_classes,
            width_multiplier=width_multiplier,
            depth_multiplier=depth_multiplier,
            image_size=image_size,
            deploy=deploy,
            heads=heads,
            **kwargs,
        )

    def save_to_preset(self, path):
        """Writes this task as a preset folder that `from_preset` loads."""
        return save_preset(self, path)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "backbone": serialize(self.backbone),
            "heads": [serialize(head) for head in self._heads],
            "preprocessor": None if self.preprocessor is None else serialize(self.preprocessor),
            "prediction_decoder": serialize(self.prediction_decoder),
            "class_names": self.class_names,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("backbone", "preprocessor", "prediction_decoder"):
            if isinstance(config.get(key), dict):
                config[key] = deserialize(config[key])
        config["heads"] = [
            deserialize(head) if isinstance(head, dict) else head for head in config["heads"]
        ]
        return cls(**config)
