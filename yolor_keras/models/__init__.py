"""The YOLOR model family: the backbone (with its neck), the task heads, box decoding."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "decode_predictions": "box_decoding",
    "ClassificationHead": "heads",
    "DetectionHead": "heads",
    "EmbeddingHead": "heads",
    "get_preset": "yolor_presets",
    "HEADS": "heads",
    "iter_layers": "layer_walk",
    "keras_name": "graph_plan",
    "make_plan": "yolor_presets",
    "module_path": "graph_plan",
    "PRESETS": "yolor_presets",
    "YOLORBackbone": "yolor_backbone",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
