"""Inference: the end-to-end `Predictor` (letterbox, `task.detect`, map back) and `yolor detect`."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "BasePredictor": "predictor",
    "load_detector": "predictor",
    "Predictor": "predictor",
    "read_class_names": "predictor",
    "read_image": "predictor",
    "with_precision": "predictor",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
