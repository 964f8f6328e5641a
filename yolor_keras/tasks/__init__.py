"""The task: `YOLORObjectDetector`, backbone + heads + preprocessor + prediction decoder."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "YOLORObjectDetector": "yolor_object_detector",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
