"""yolor-keras: YOLOR (You Only Learn One Representation) in Keras 3."""

__version__ = "0.1.0"

from yolor_keras import layers  # noqa: F401  (registers the serializable layers)
