"""Deployment of YOLOR detectors: fold, SavedModel, TFLite and ONNX."""

from yolor_keras.export.file_predictors import LiteRTPredictor
from yolor_keras.export.file_predictors import ONNXPredictor
from yolor_keras.export.fold import fold
from yolor_keras.export.litert import export_tflite
from yolor_keras.export.onnx import export_onnx
from yolor_keras.export.saved_model import export_saved_model
from yolor_keras.export.saved_model import serving_directory

__all__ = [
    "LiteRTPredictor",
    "ONNXPredictor",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "fold",
    "serving_directory",
]

# Keras is loaded by now; make sure `.keras` files can find every class.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
