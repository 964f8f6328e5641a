"""Tasks: trainable wrappers that own their losses (keras-hub style)."""

from yolor_keras.tasks.multi_task_config import HEADS
from yolor_keras.tasks.yolor_multi_task import YOLORMultiTask
from yolor_keras.tasks.yolor_object_detector import YOLORObjectDetector

__all__ = ["HEADS", "YOLORMultiTask", "YOLORObjectDetector"]

# Loading a `.keras` file may need the other subpackages' classes too.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
