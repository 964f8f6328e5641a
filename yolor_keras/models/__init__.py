"""The YOLOR model family: backbone, neck, head, detector and decoding."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "decode_predictions": "decode",
    "get_preset": "yolor_presets",
    "iter_layers": "layer_walk",
    "keras_name": "graph_plan",
    "make_plan": "yolor_presets",
    "module_path": "graph_plan",
    "PRESETS": "yolor_presets",
    "YOLORBackbone": "yolor_backbone",
    "YOLORDetector": "yolor_detector",
    "YOLORHead": "yolor_head",
    "YOLORNeck": "yolor_neck",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
