"""YOLOR's training loss: target assignment, CIoU box loss, objectness and classes."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "assign_targets": "target_assignment",
    "complete_iou": "iou",
    "DEFAULT_BALANCE": "yolor_loss",
    "MultiLabelBinaryCrossentropy": "multi_task",
    "NEIGHBOR_RULES": "target_assignment",
    "scatter_last_write": "target_assignment",
    "SupervisedContrastiveLoss": "multi_task",
    "YOLORLoss": "yolor_loss",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
