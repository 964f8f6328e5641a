"""YOLOR's implicit-knowledge layers and their deploy-time folds."""

from yolor_keras.layers.fold import fold_batchnorm
from yolor_keras.layers.fold import fold_implicit_conv1x1
from yolor_keras.layers.implicit_add import ImplicitAdd
from yolor_keras.layers.implicit_concat import ImplicitConcat
from yolor_keras.layers.implicit_knowledge import FORMS
from yolor_keras.layers.implicit_knowledge import ImplicitKnowledge
from yolor_keras.layers.implicit_multiply import ImplicitMultiply

__all__ = [
    "FORMS",
    "ImplicitAdd",
    "ImplicitConcat",
    "ImplicitKnowledge",
    "ImplicitMultiply",
    "fold_batchnorm",
    "fold_implicit_conv1x1",
]

# Loading a `.keras` file may need the other subpackages' classes too.
from yolor_keras import register_serializable_classes  # noqa: E402

register_serializable_classes(finished=__name__)
