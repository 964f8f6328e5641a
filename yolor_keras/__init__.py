"""yolor-keras: YOLOR (You Only Learn One Representation) in Keras 3.

Importing the package registers every serializable class (layers, models,
tasks, losses), which `keras.saving.load_model` needs to read `.keras` files.
These modules use only `keras.ops`, so they load on any Keras backend.
"""

__version__ = "0.1.0"

from yolor_keras import layers  # noqa: F401
from yolor_keras import losses  # noqa: F401
from yolor_keras import models  # noqa: F401
from yolor_keras import tasks  # noqa: F401
