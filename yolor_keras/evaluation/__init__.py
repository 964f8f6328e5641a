"""COCO evaluation: the evaluator and the official protocol's constants."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "COCO_CATEGORY_IDS": "protocol",
    "COCO_EVAL_NMS": "protocol",
    "COCO_STAT_NAMES": "protocol",
    "COCOEvaluator": "coco_evaluator",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
