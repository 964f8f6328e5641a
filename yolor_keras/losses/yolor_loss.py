"""`YOLORLoss`: the official YOLOR training loss, returned per sample."""

import keras
import numpy as np
from keras import ops

from yolor_keras.losses.iou import complete_iou
from yolor_keras.losses.target_assignment import NEIGHBOR_RULES
from yolor_keras.losses.target_assignment import assign_targets
from yolor_keras.losses.target_assignment import scatter_last_write

# The official per-level objectness weights, P3 first.
DEFAULT_BALANCE = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.4, 0.1], 5: [4.0, 1.0, 0.5, 0.4, 0.1]}

# Stands in for the target of candidates that are not assignments, so that
# their (masked out) CIoU stays finite and so do the gradients.
_PLACEHOLDER_BOX = (0.5, 0.5, 1.0, 1.0)


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORLoss(keras.losses.Loss):
    """The loss YOLOR is trained with: CIoU box, IoU-target objectness, BCE class.

    Per pyramid level, targets are assigned to anchors and cells as the
    official ``build_targets`` does (see `assign_targets`). For the assigned
    predictions, ``xy = 2 * sigmoid(t) - 0.5`` (relative to the cell) and
    ``wh = (2 * sigmoid(t))² * anchor`` are compared with the target by CIoU;
    the box loss is the mean of ``1 - CIoU``. Every prediction's objectness is
    trained by BCE towards ``(1 - iou_ratio) + iou_ratio * max(CIoU, 0)`` at
    assigned cells (the CIoU taken as a constant) and 0 elsewhere, weighted
    per level by ``balance``. Classes are trained by BCE against one-hot
    targets, only when ``num_classes > 1``, as in the official code.

    Gains: ``box_gain``, ``obj_gain`` and ``cls_gain`` are the recipe values
    (``box``, ``obj``, ``cls`` in ``hyp.scratch.1280.yaml``), and they are
    scaled exactly as official YOLOR does on both its ``main`` and ``paper``
    branches: ``train.py`` multiplies ``cls`` by ``num_classes / 80``, and
    ``compute_loss`` multiplies all three by ``3 / num_levels`` and ``obj``
    further by 1.4 when there are four or more levels. (The image-size
    scaling of ``obj`` seen in later YOLO versions is not part of YOLOR.)
    The scaled values are `box_weight`, `obj_weight` and `cls_weight`.

    Per-sample values: the official code returns ``(lbox + lobj + lcls) * bs``
    where each term is a mean over the whole batch. This loss returns a
    ``(batch,)`` vector whose **mean over the batch is exactly
    ``lbox + lobj + lcls``**, i.e. the official loss divided by the batch
    size (and, with ``reduction="sum"``, the reduced value *is* the official
    loss). Objectness splits exactly by sample; the box and class means
    divide by the number of assignments in the whole batch, so a sample's
    share is ``batch * (its sum) / (batch count)``. Returning per-sample values
    lets Keras scale the gradients correctly under `tf.distribute`.

    Args:
        anchors: ``(num_levels, num_anchors, 2)`` anchor ``(w, h)`` in input
            pixels, P3 first (``detector.anchors``).
        strides: the levels' strides in pixels, ascending
            (``detector.strides``).
        num_classes: number of classes.
        box_gain: recipe gain of the box loss (0.05).
        obj_gain: recipe gain of the objectness loss (1.0).
        cls_gain: recipe gain of the class loss (0.5).
        anchor_t: anchor-multiple threshold of the assignment (4.0).
        balance: per-level objectness weights; defaults to the official
            ``[4.0, 1.0, 0.4]`` for three levels and ``[4.0, 1.0, 0.4, 0.1]``
            for four.
        iou_ratio: the official ``model.gr``: how much of the objectness
            target is the CIoU rather than 1 (1.0).
        cls_pos_weight: BCE weight of positive class targets (``cls_pw``, 1.0).
        obj_pos_weight: BCE weight of positive objectness targets
            (``obj_pw``, 1.0).
        label_smoothing: class label smoothing eps; targets become
            ``1 - eps / 2`` and ``eps / 2`` (0.0).
        neighbor_rule: ``"main"`` or ``"paper"``: which official branch's
            neighbour-cell test to use (see `assign_targets`); they differ
            only for centres exactly on a cell edge.
        focal_gamma: the recipe's ``fl_gamma``. Above 0, the objectness and
            class BCE become the official focal loss: each element's BCE
            times ``alpha_t * (1 - p_t) ** focal_gamma``, where ``p = sigmoid
            (logit)``, ``p_t = t * p + (1 - t) * (1 - p)`` and ``alpha_t = t *
            alpha + (1 - t) * (1 - alpha)`` for target ``t``. 0 (the
            recipes' value) is the plain BCE.
        focal_alpha: the focal loss ``alpha`` (official: 0.25).
        name: name of the loss.
        reduction: Keras reduction of the per-sample values.
        dtype: dtype of the computation; float32 unless given.

    Example:

    ```python
    loss = YOLORLoss.from_detector(detector)
    raw = detector(images)  # list of (B, H, W, A, 5 + nc) logits
    value = loss({"boxes": boxes, "classes": classes}, raw)
    parts = loss.compute_components({"boxes": boxes, "classes": classes}, raw)
    ```
    """

    def __init__(
        self,
        anchors,
        strides,
        num_classes,
        box_gain=0.05,
        obj_gain=1.0,
        cls_gain=0.5,
        anchor_t=4.0,
        balance=None,
        iou_ratio=1.0,
        cls_pos_weight=1.0,
        obj_pos_weight=1.0,
        label_smoothing=0.0,
        neighbor_rule="main",
        focal_gamma=0.0,
        focal_alpha=0.25,
        name="yolor_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        anchors = np.asarray(anchors, dtype="float32")
        strides = [int(s) for s in strides]
        if anchors.ndim != 3 or anchors.shape[-1] != 2:
            raise ValueError(
                f"`anchors` must have shape (num_levels, num_anchors, 2), got {anchors.shape}."
            )
        if len(strides) != anchors.shape[0]:
            raise ValueError(
                f"`strides` has {len(strides)} levels but `anchors` has {anchors.shape[0]}."
            )
        if np.any(anchors <= 0):
            raise ValueError("`anchors` must all be positive.")
        num_levels = len(strides)
        if balance is None:
            if num_levels not in DEFAULT_BALANCE:
                raise ValueError(f"No default `balance` for {num_levels} levels; pass one.")
            balance = DEFAULT_BALANCE[num_levels]
        balance = [float(b) for b in balance]
        if len(balance) != num_levels:
            raise ValueError(f"`balance` has {len(balance)} entries for {num_levels} levels.")
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}.")
        if neighbor_rule not in NEIGHBOR_RULES:
            raise ValueError(
                f"`neighbor_rule` must be one of {NEIGHBOR_RULES}, got {neighbor_rule!r}."
            )

        self.anchors = anchors
        self.strides = strides
        self.num_classes = int(num_classes)
        self.box_gain = float(box_gain)
        self.obj_gain = float(obj_gain)
        self.cls_gain = float(cls_gain)
        self.anchor_t = float(anchor_t)
        self.balance = balance
        self.iou_ratio = float(iou_ratio)
        self.cls_pos_weight = float(cls_pos_weight)
        self.obj_pos_weight = float(obj_pos_weight)
        self.label_smoothing = float(label_smoothing)
        self.neighbor_rule = neighbor_rule
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = float(focal_alpha)
        if not self.focal_gamma >= 0.0:
            raise ValueError(f"`focal_gamma` (fl_gamma) must be >= 0, got {focal_gamma!r}.")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"`focal_alpha` must be in [0, 1], got {focal_alpha!r}.")

    @classmethod
    def from_detector(cls, detector, **kwargs):
        """Builds the loss for a detector's anchors, strides and classes.

        Args:
            detector: a model with ``anchors``, ``strides`` and
                ``num_classes`` attributes, such as `YOLORObjectDetector`.
            **kwargs: any other constructor arguments.
        """
        return cls(
            anchors=detector.anchors,
            strides=detector.strides,
            num_classes=detector.num_classes,
            **kwargs,
        )

    @property
    def num_levels(self):
        return len(self.strides)

    @property
    def box_weight(self):
        """The box gain as applied: ``box_gain * 3 / num_levels``."""
        return self.box_gain * 3.0 / self.num_levels

    @property
    def obj_weight(self):
        """``obj_gain * 3 / num_levels``, times 1.4 for four or more levels."""
        extra = 1.4 if self.num_levels >= 4 else 1.0
        return self.obj_gain * 3.0 / self.num_levels * extra

    @property
    def cls_weight(self):
        """``cls_gain * num_classes / 80 * 3 / num_levels``."""
        return self.cls_gain * self.num_classes / 80.0 * 3.0 / self.num_levels

    def call(self, y_true, y_pred):
        return self._components(y_true, y_pred)["loss"]

    def compute_components(self, y_true, y_pred):
        """The weighted loss terms, each per sample.

        The batch means of ``"box"``, ``"obj"`` and ``"cls"`` are the official
        ``lbox``, ``lobj`` and ``lcls`` (its progress-bar numbers), and
        ``"loss"`` is their per-sample sum, what calling the loss reduces.

        Args:
            y_true: dict with ``"boxes"`` ``(batch, max_boxes, 4)`` xyxy in
                input pixels and ``"classes"`` ``(batch, max_boxes)`` with
                ``-1`` padding.
            y_pred: list of the detector's raw outputs, P3 first, each
                ``(batch, H, W, num_anchors, 5 + num_classes)`` logits.

        Returns:
            A dict of ``(batch,)`` tensors: ``"box"``, ``"obj"``, ``"cls"``,
            ``"loss"``.
        """
        # The same conversions as `__call__`; anything malformed is left for
        # the checks in `_components` to name.
        if isinstance(y_true, dict):
            y_true = {k: ops.convert_to_tensor(v, dtype=self.dtype) for k, v in y_true.items()}
        if isinstance(y_pred, (list, tuple)):
            y_pred = [ops.convert_to_tensor(x, dtype=self.dtype) for x in y_pred]
        return self._components(y_true, y_pred)

    def _components(self, y_true, y_pred):
        boxes, classes = self._read_labels(y_true)
        outputs = self._check_outputs(y_pred)
        batch = ops.cast(ops.shape(outputs[0])[0], self.dtype)
        num_anchors = self.anchors.shape[1]
        box_loss = obj_loss = cls_loss = 0.0
        for level, raw in enumerate(outputs):
            height, width = raw.shape[1], raw.shape[2]
            if height is None or width is None:
                height, width = ops.shape(raw)[1], ops.shape(raw)[2]
            num_cells = height * width * num_anchors
            flat = ops.reshape(raw, (-1, num_cells, 5 + self.num_classes))
            assigned = assign_targets(
                boxes,
                classes,
                self.anchors[level],
                self.strides[level],
                (height, width),
                anchor_t=self.anchor_t,
                neighbor_rule=self.neighbor_rule,
            )
            valid = assigned["valid"]
            weight = ops.cast(valid, self.dtype)
            # The official means run over all assignments of the batch; a
            # level without any contributes no box or class loss.
            count = ops.maximum(ops.sum(weight), 1.0)
            chosen = gather_cells(flat, assigned["cell"], num_cells)

            pred_xy = ops.sigmoid(chosen[..., 0:2]) * 2.0 - 0.5
            pred_wh = (ops.sigmoid(chosen[..., 2:4]) * 2.0) ** 2 * assigned["anchor_wh"]
            target = ops.where(
                valid[..., None],
                assigned["target_box"],
                ops.convert_to_tensor(_PLACEHOLDER_BOX, dtype=self.dtype),
            )
            ciou = complete_iou(ops.concatenate([pred_xy, pred_wh], axis=-1), target)
            box_loss += batch * ops.sum(weight * (1.0 - ciou), axis=1) / count

            obj_target_values = (1.0 - self.iou_ratio) + self.iou_ratio * ops.maximum(
                ops.stop_gradient(ciou), 0.0
            )
            obj_target = scatter_last_write(obj_target_values, assigned["cell"], valid, num_cells)
            obj_bce = self._criterion(flat[..., 4], obj_target, self.obj_pos_weight)
            obj_loss += self.balance[level] * ops.mean(obj_bce, axis=1)

            if self.num_classes > 1:
                positive, negative = 1.0 - 0.5 * self.label_smoothing, 0.5 * self.label_smoothing
                one_hot = ops.one_hot(
                    ops.maximum(assigned["class"], 0), self.num_classes, dtype=self.dtype
                )
                cls_target = negative + one_hot * (positive - negative)
                cls_bce = ops.sum(
                    self._criterion(chosen[..., 5:], cls_target, self.cls_pos_weight),
                    axis=-1,
                )
                cls_loss += batch * ops.sum(weight * cls_bce, axis=1) / (count * self.num_classes)

        box_loss = box_loss * self.box_weight
        obj_loss = obj_loss * self.obj_weight
        cls_loss = cls_loss * self.cls_weight
        if self.num_classes == 1:
            cls_loss = ops.zeros_like(obj_loss)
        return {
            "box": box_loss,
            "obj": obj_loss,
            "cls": cls_loss,
            "loss": box_loss + obj_loss + cls_loss,
        }

    def _criterion(self, logits, targets, pos_weight):
        """Element-wise BCE, wrapped in the focal loss when ``focal_gamma > 0``."""
        bce = _bce_with_logits(logits, targets, pos_weight)
        if self.focal_gamma == 0.0:
            # Exactly the plain BCE: the official code only wraps it for g > 0.
            return bce
        return bce * _focal_factor(logits, targets, self.focal_gamma, self.focal_alpha)

    def _read_labels(self, y_true):
        if not isinstance(y_true, dict) or not {"boxes", "classes"} <= set(y_true):
            raise ValueError(
                "YOLORLoss: `y_true` must be a dict with 'boxes' (batch, max_boxes, 4) "
                f"and 'classes' (batch, max_boxes), got {type(y_true).__name__}"
                + (f" with keys {sorted(y_true)}" if isinstance(y_true, dict) else "")
                + "."
            )
        boxes, classes = y_true["boxes"], y_true["classes"]
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                "YOLORLoss: y_true['boxes'] must have shape (batch, max_boxes, 4), "
                f"got {tuple(boxes.shape)}."
            )
        if len(classes.shape) != 2:
            raise ValueError(
                "YOLORLoss: y_true['classes'] must have shape (batch, max_boxes), "
                f"got {tuple(classes.shape)}."
            )
        # Keras hands labels over as floats; class ids are small integers.
        return boxes, ops.cast(ops.round(ops.cast(classes, "float32")), "int32")

    def _check_outputs(self, y_pred):
        outputs = list(y_pred) if isinstance(y_pred, (list, tuple)) else None
        if outputs is None or len(outputs) != self.num_levels:
            raise ValueError(
                f"YOLORLoss: `y_pred` must be a list of {self.num_levels} raw "
                "outputs (one per stride, P3 first), got "
                + (f"{len(outputs)}." if outputs is not None else f"{type(y_pred).__name__}.")
            )
        expected_channels = 5 + self.num_classes
        num_anchors = self.anchors.shape[1]
        input_sizes = set()
        for level, (raw, stride) in enumerate(zip(outputs, self.strides)):
            shape = tuple(raw.shape)
            if (
                len(shape) != 5
                or shape[3] not in (None, num_anchors)
                or shape[4] not in (None, expected_channels)
            ):
                raise ValueError(
                    f"YOLORLoss: y_pred[{level}] (stride {stride}) must have shape "
                    f"(batch, H, W, {num_anchors}, {expected_channels}), got {shape}."
                )
            if shape[1] is not None and shape[2] is not None:
                input_sizes.add((shape[1] * stride, shape[2] * stride))
        if len(input_sizes) > 1:
            raise ValueError(
                "YOLORLoss: the grids of `y_pred` do not match `strides` "
                f"{self.strides}: grid size times stride gives input sizes "
                f"{sorted(input_sizes)}."
            )
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "anchors": self.anchors.tolist(),
                "strides": list(self.strides),
                "num_classes": self.num_classes,
                "box_gain": self.box_gain,
                "obj_gain": self.obj_gain,
                "cls_gain": self.cls_gain,
                "anchor_t": self.anchor_t,
                "balance": list(self.balance),
                "iou_ratio": self.iou_ratio,
                "cls_pos_weight": self.cls_pos_weight,
                "obj_pos_weight": self.obj_pos_weight,
                "label_smoothing": self.label_smoothing,
                "neighbor_rule": self.neighbor_rule,
                "focal_gamma": self.focal_gamma,
                "focal_alpha": self.focal_alpha,
            }
        )
        return config


def gather_cells(flat, cell, num_cells):
    """``flat[b, cell[b, k], :]`` for every sample ``b`` and candidate ``k``.

    One row gather from the predictions seen as ``(batch * num_cells,
    channels)``. `ops.take_along_axis` would give the same values, but on
    TensorFlow it broadcasts the indices to every channel and moves the
    channels first, a transposed copy of each level's whole prediction
    tensor (and of its gradient) in every training step.

    Args:
        flat: ``(batch, num_cells, channels)`` predictions.
        cell: ``(batch, K)`` int32 cell indices in ``[0, num_cells)``.
        num_cells: cells per sample (an int or a scalar tensor).

    Returns:
        ``(batch, K, channels)``.
    """
    channels = flat.shape[-1]
    batch = ops.shape(cell)[0]
    rows = ops.cast(cell, "int32") + ops.arange(batch, dtype="int32")[:, None] * num_cells
    picked = ops.take(ops.reshape(flat, (-1, channels)), ops.reshape(rows, (-1,)), axis=0)
    return ops.reshape(picked, (batch, -1, channels))


def _bce_with_logits(logits, targets, pos_weight):
    """Element-wise BCE on logits with a positive-class weight, as PyTorch's."""
    return pos_weight * targets * ops.softplus(-logits) + (1.0 - targets) * ops.softplus(logits)


def _focal_factor(logits, targets, gamma, alpha):
    """The official `FocalLoss` factor ``alpha_t * (1 - p_t) ** gamma``.

    ``p_t`` and ``alpha_t`` are linear in the target, so soft targets (the
    IoU objectness target, label smoothing) are weighted as the official code
    weights them.
    """
    probability = ops.sigmoid(logits)
    p_t = targets * probability + (1.0 - targets) * (1.0 - probability)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return alpha_t * ops.power(1.0 - p_t, gamma)
