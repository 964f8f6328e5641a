"""Evaluation: the one loop (`evaluate`), COCO scoring, head metrics, the official protocol."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "COCO_CATEGORY_IDS": "protocol",
    "COCO_EVAL_NMS": "protocol",
    "COCO_STAT_NAMES": "protocol",
    "COCOEvaluator": "coco_evaluator",
    "detection_function": "evaluation_loop",
    "evaluate": "evaluation_loop",
    "evaluation_batches": "evaluation_loop",
    "evaluation_decoder": "evaluation_loop",
    "multilabel_average_precision": "head_metrics",
    "multilabel_f1": "head_metrics",
    "recall_at_1": "head_metrics",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
