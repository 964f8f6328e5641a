"""Inference: letterbox, the end-to-end `Predictor`, NMS and letterbox mapping."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "BasePredictor": "predictor",
    "letterbox": "letterboxing",
    "load_detector": "predictor",
    "Predictor": "predictor",
    "read_image": "predictor",
    "scale_boxes_to_original": "postprocess",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
