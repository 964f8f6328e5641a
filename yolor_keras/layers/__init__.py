"""YOLOR's implicit-knowledge layers and their deploy-time folds."""

from yolor_keras.lazy_exports import lazy_getattr

_EXPORTS = {
    "fold_batchnorm": "fold",
    "fold_implicit_conv1x1": "fold",
    "FORMS": "implicit_knowledge",
    "ImplicitAdd": "implicit_add",
    "ImplicitConcat": "implicit_concat",
    "ImplicitKnowledge": "implicit_knowledge",
    "ImplicitMultiply": "implicit_multiply",
    "YOLORImageConverter": "image_converter",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
