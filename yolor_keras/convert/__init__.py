"""Converting official YOLOR PyTorch checkpoints to Keras, safely."""

from yolor_keras.convert.checkpoint import OfficialCheckpoint
from yolor_keras.convert.checkpoint import read_checkpoint
from yolor_keras.convert.convert import convert_checkpoint
from yolor_keras.convert.convert import save_atomically
from yolor_keras.convert.weight_mapping import load_official_weights

__all__ = [
    "OfficialCheckpoint",
    "convert_checkpoint",
    "load_official_weights",
    "read_checkpoint",
    "save_atomically",
]
