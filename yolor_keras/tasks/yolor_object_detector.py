"""`YOLORObjectDetector`: the trainable detection task around a `YOLORDetector`."""

import keras
from keras import ops

from yolor_keras.losses import YOLORLoss
from yolor_keras.models import YOLORDetector
from yolor_keras.models import decode_predictions
from yolor_keras.tasks.distribution import scale_for_replicas
from yolor_keras.training.ema import average_batchnorm_statistics


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORObjectDetector(keras.Model):
    """A YOLOR detector ready for `fit`: it owns the YOLOR loss.

    Like a keras-hub Task, ``task(images)`` returns the raw head tensors (what
    is trained); decoding and NMS belong to inference
    (`yolor_keras.inference.Predictor`). ``fit`` takes batches of
    ``(images, {"boxes", "classes"})`` from `yolor_keras.data.build_dataset`.

    The loss is the official one (`YOLORLoss`), returned per sample. The mean
    is multiplied by ``loss_scale``, which the trainer sets to the nominal
    batch (64): the official code multiplies its loss by the batch size and
    sums gradients over accumulated batches, and its learning rate is tuned
    for that magnitude. The progress bar shows the unscaled official
    ``box``, ``obj`` and ``cls`` terms.

    Compiled with `YOLORSGD`, the task also has the optimizer average its
    BatchNorm moving statistics, so that the EMA model (evaluated and saved)
    is the official one: averaged weights *and* averaged statistics.

    Args:
        detector: a `YOLORDetector` (the network).
        box_gain, obj_gain, cls_gain, anchor_t, cls_pos_weight,
            obj_pos_weight, focal_gamma: the recipe's loss values (``box``,
            ``obj``, ``cls``, ``anchor_t``, ``cls_pw``, ``obj_pw``,
            ``fl_gamma``).
        neighbor_rule: the neighbour-cell rule of the target assignment,
            ``"main"`` or ``"paper"``; None (default) takes the detector's
            branch, so the ``*_paper`` presets train with the paper
            branch's rule.
        loss_scale: multiplier of the mean loss before gradients.
        class_names: optional list of class names, kept with the model.
        **kwargs: standard `keras.Model` arguments.

    Example:

    ```python
    detector = YOLORDetector.from_preset("yolor_p6", num_classes=3, width_multiplier=0.125)
    task = YOLORObjectDetector(detector)
    task.compile(optimizer=yolor_keras.training.YOLORSGD())
    task.fit(train_dataset, epochs=10)
    ```
    """

    def __init__(
        self,
        detector,
        box_gain=0.05,
        obj_gain=1.0,
        cls_gain=0.5,
        anchor_t=4.0,
        cls_pos_weight=1.0,
        obj_pos_weight=1.0,
        loss_scale=1.0,
        class_names=None,
        focal_gamma=0.0,
        neighbor_rule=None,
        **kwargs,
    ):
        # === Layers ===
        self.detector = detector

        # === Functional model ===
        images = keras.Input(shape=detector.input_shape[1:], name="images")
        raw_outputs = detector(images)
        kwargs.setdefault("name", "yolor_object_detector")
        super().__init__(inputs=images, outputs=raw_outputs, **kwargs)

        # === Config ===
        self.box_gain = float(box_gain)
        self.obj_gain = float(obj_gain)
        self.cls_gain = float(cls_gain)
        self.anchor_t = float(anchor_t)
        self.cls_pos_weight = float(cls_pos_weight)
        self.obj_pos_weight = float(obj_pos_weight)
        self.focal_gamma = float(focal_gamma)
        if neighbor_rule is None:
            neighbor_rule = "paper" if getattr(detector, "branch", "main") == "paper" else "main"
        self.neighbor_rule = neighbor_rule
        self.loss_scale = float(loss_scale)
        self.class_names = list(class_names) if class_names is not None else None
        self.yolor_loss = YOLORLoss.from_detector(
            detector,
            box_gain=self.box_gain,
            obj_gain=self.obj_gain,
            cls_gain=self.cls_gain,
            anchor_t=self.anchor_t,
            cls_pos_weight=self.cls_pos_weight,
            obj_pos_weight=self.obj_pos_weight,
            focal_gamma=self.focal_gamma,
            neighbor_rule=self.neighbor_rule,
        )
        self.box_tracker = keras.metrics.Mean(name="box")
        self.obj_tracker = keras.metrics.Mean(name="obj")
        self.cls_tracker = keras.metrics.Mean(name="cls")

    @property
    def num_classes(self):
        return self.detector.num_classes

    @property
    def strides(self):
        return self.detector.strides

    @property
    def anchors(self):
        return self.detector.anchors

    @property
    def metrics(self):
        return super().metrics + [self.box_tracker, self.obj_tracker, self.cls_tracker]

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # Before the optimizer is built (first step, or loading a
        # checkpoint, whose optimizer state then includes the averages).
        average_batchnorm_statistics(self)

    def compile_from_config(self, config):
        # Keras skips compiling on load for a model whose `compile` is
        # overridden unless this is too; it does what Keras' own does.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        raw = [ops.cast(output, "float32") for output in y_pred]
        terms = self.yolor_loss.compute_components(y, raw)
        self.box_tracker.update_state(terms["box"])
        self.obj_tracker.update_state(terms["obj"])
        self.cls_tracker.update_state(terms["cls"])
        loss = ops.mean(terms["loss"]) * self.loss_scale
        return scale_for_replicas(loss)

    def decode(self, raw_outputs):
        """Raw head tensors to ``(batch, N, 5 + C)`` boxes in input pixels."""
        return decode_predictions(raw_outputs, self.anchors, self.strides)

    def get_config(self):
        return {
            "detector": keras.saving.serialize_keras_object(self.detector),
            "box_gain": self.box_gain,
            "obj_gain": self.obj_gain,
            "cls_gain": self.cls_gain,
            "anchor_t": self.anchor_t,
            "cls_pos_weight": self.cls_pos_weight,
            "obj_pos_weight": self.obj_pos_weight,
            "focal_gamma": self.focal_gamma,
            "neighbor_rule": self.neighbor_rule,
            "loss_scale": self.loss_scale,
            "class_names": self.class_names,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        detector = config.pop("detector")
        if isinstance(detector, dict):
            detector = keras.saving.deserialize_keras_object(detector)
        return cls(detector=detector, **config)

    @classmethod
    def from_recipe(cls, detector, recipe, loss_scale=1.0, class_names=None):
        """Builds the task with a `Recipe`'s loss values."""
        loss = recipe.loss
        return cls(
            detector,
            box_gain=loss.box,
            obj_gain=loss.obj,
            cls_gain=loss.cls,
            anchor_t=loss.anchor_t,
            cls_pos_weight=loss.cls_pw,
            obj_pos_weight=loss.obj_pw,
            focal_gamma=loss.fl_gamma,
            loss_scale=loss_scale,
            class_names=class_names,
        )
