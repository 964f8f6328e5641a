"""Tasks: trainable wrappers that own their losses (keras-hub style)."""

from yolor_keras.tasks.multi_task_config import HEADS
from yolor_keras.tasks.yolor_multi_task import YOLORMultiTask
from yolor_keras.tasks.yolor_object_detector import YOLORObjectDetector

__all__ = ["HEADS", "YOLORMultiTask", "YOLORObjectDetector"]
