"""`AnchorSplit`: splits a head's channels into (anchor, field) axes."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolor_keras")
class AnchorSplit(keras.layers.Layer):
    """Reshapes (B, H, W, A * F) to (B, H, W, A, F).

    The official head orders its output channels as ``anchor * F + field``,
    so this is a plain reshape: no transpose is needed in NHWC.

    Args:
        num_anchors: A, the number of anchors per grid cell.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    predictions = keras.Input((80, 80, 255))
    raw = yolor_keras.models.AnchorSplit(3)(predictions)  # (None, 80, 80, 3, 85)
    ```
    """

    def __init__(self, num_anchors, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        if self.num_anchors < 1:
            raise ValueError(f"`num_anchors` must be >= 1, got {num_anchors}.")

    def _fields(self, channels):
        if channels % self.num_anchors:
            raise ValueError(
                f"Layer '{self.name}' (AnchorSplit): {channels} channels cannot be "
                f"split evenly over {self.num_anchors} anchors."
            )
        return channels // self.num_anchors

    def call(self, inputs):
        shape = ops.shape(inputs)
        fields = self._fields(inputs.shape[-1])
        return ops.reshape(inputs, (-1, shape[1], shape[2], self.num_anchors, fields))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, height, width, self.num_anchors, self._fields(channels))

    def get_config(self):
        config = super().get_config()
        config["num_anchors"] = self.num_anchors
        return config
