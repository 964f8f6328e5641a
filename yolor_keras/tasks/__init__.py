"""Tasks: trainable wrappers that own their losses (keras-hub style)."""

from yolor_keras.tasks.yolor_object_detector import YOLORObjectDetector

__all__ = ["YOLORObjectDetector"]
