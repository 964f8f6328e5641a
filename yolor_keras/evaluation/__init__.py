"""COCO evaluation: the evaluator and the official protocol's constants."""

from yolor_keras.evaluation.coco_evaluator import COCOEvaluator
from yolor_keras.evaluation.protocol import COCO_CATEGORY_IDS
from yolor_keras.evaluation.protocol import COCO_EVAL_NMS
from yolor_keras.evaluation.protocol import COCO_STAT_NAMES

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_EVAL_NMS",
    "COCO_STAT_NAMES",
    "COCOEvaluator",
]
