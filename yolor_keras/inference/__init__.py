"""Inference: letterbox, the end-to-end `Predictor`, NMS and letterbox mapping."""

from yolor_keras.inference.letterbox import letterbox
from yolor_keras.inference.postprocess import non_max_suppression
from yolor_keras.inference.postprocess import scale_boxes_to_original
from yolor_keras.inference.predictor import BasePredictor
from yolor_keras.inference.predictor import Predictor
from yolor_keras.inference.predictor import load_detector
from yolor_keras.inference.predictor import read_image

__all__ = [
    "BasePredictor",
    "Predictor",
    "letterbox",
    "load_detector",
    "non_max_suppression",
    "read_image",
    "scale_boxes_to_original",
]

# Keras is loaded by now; make sure `.keras` files can find every class.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
