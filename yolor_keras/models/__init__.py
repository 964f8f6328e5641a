"""The YOLOR model family: backbone, neck, head, detector and decoding."""

from yolor_keras.models.anchor_split import AnchorSplit
from yolor_keras.models.channel_affine import ChannelAffine
from yolor_keras.models.decode import decode_predictions
from yolor_keras.models.graph_plan import keras_name
from yolor_keras.models.graph_plan import module_path
from yolor_keras.models.input_size_check import InputSizeCheck
from yolor_keras.models.layer_walk import iter_layers
from yolor_keras.models.reorg import ReOrg
from yolor_keras.models.yolor_backbone import YOLORBackbone
from yolor_keras.models.yolor_detector import YOLORDetector
from yolor_keras.models.yolor_head import YOLORHead
from yolor_keras.models.yolor_neck import YOLORNeck
from yolor_keras.models.yolor_presets import PRESETS
from yolor_keras.models.yolor_presets import get_preset
from yolor_keras.models.yolor_presets import make_plan

__all__ = [
    "PRESETS",
    "AnchorSplit",
    "ChannelAffine",
    "InputSizeCheck",
    "ReOrg",
    "YOLORBackbone",
    "YOLORDetector",
    "YOLORHead",
    "YOLORNeck",
    "decode_predictions",
    "get_preset",
    "iter_layers",
    "keras_name",
    "make_plan",
    "module_path",
]

# Loading a `.keras` file may need the other subpackages' classes too.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
