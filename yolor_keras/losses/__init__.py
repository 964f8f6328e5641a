"""YOLOR's training loss: target assignment, CIoU box loss, objectness and classes."""

from yolor_keras.losses.complete_iou import complete_iou
from yolor_keras.losses.multi_task import MultiLabelBinaryCrossentropy
from yolor_keras.losses.multi_task import SupervisedContrastiveLoss
from yolor_keras.losses.target_assignment import NEIGHBOR_RULES
from yolor_keras.losses.target_assignment import assign_targets
from yolor_keras.losses.target_assignment import scatter_last_write
from yolor_keras.losses.yolor_loss import DEFAULT_BALANCE
from yolor_keras.losses.yolor_loss import YOLORLoss

__all__ = [
    "DEFAULT_BALANCE",
    "MultiLabelBinaryCrossentropy",
    "NEIGHBOR_RULES",
    "SupervisedContrastiveLoss",
    "YOLORLoss",
    "assign_targets",
    "complete_iou",
    "scatter_last_write",
]

# Loading a `.keras` file may need the other subpackages' classes too.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
