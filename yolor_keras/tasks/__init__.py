"""Tasks: trainable wrappers that own their losses (keras-hub style)."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "HEADS": "multi_task_config",
    "YOLORMultiTask": "yolor_multi_task",
    "YOLORObjectDetector": "yolor_object_detector",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
