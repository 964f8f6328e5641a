"""Converting official YOLOR PyTorch checkpoints to Keras, safely.

`read_checkpoint` needs only NumPy; `convert_checkpoint` and the rest load
Keras, so they are imported on first use.
"""

import importlib

_EXPORTS = {
    "OfficialCheckpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "convert_checkpoint": "convert",
    "save_atomically": "convert",
    "load_official_weights": "weight_mapping",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
