"""Deployment of YOLOR tasks (any heads): fold, SavedModel, TFLite and ONNX."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "export_onnx": "onnx",
    "export_saved_model": "saved_model",
    "export_tflite": "litert",
    "deploy_form": "folding",
    "ExportCheckError": "checks",
    "fold": "folding",
    "LiteRTPredictor": "file_predictors",
    "ONNXPredictor": "file_predictors",
    "serving_directory": "saved_model",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
