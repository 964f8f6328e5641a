"""Every Keras layer of the package: implicit knowledge and its folds, the structural layers."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "AnchorSplit": "anchor_split",
    "ChannelAffine": "channel_affine",
    "fold_batchnorm": "fold",
    "fold_implicit_conv1x1": "fold",
    "FORMS": "implicit_knowledge",
    "FusedConv2D": "fused_conv",
    "ImplicitAdd": "implicit_add",
    "ImplicitConcat": "implicit_concat",
    "ImplicitKnowledge": "implicit_knowledge",
    "ImplicitMultiply": "implicit_multiply",
    "InputSizeCheck": "input_size_check",
    "non_max_suppression": "nms",
    "NonMaxSuppression": "nms",
    "ReOrg": "reorg",
    "YOLORImageConverter": "image_converter",
    "BatchNormalization": "batch_normalization",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
