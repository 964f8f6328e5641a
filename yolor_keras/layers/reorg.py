"""`ReOrg`: YOLOR's space-to-depth stem, in the official channel order."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolor_keras")
class ReOrg(keras.layers.Layer):
    """Moves each 2x2 pixel block into channels, halving height and width.

    The output is the channel concatenation of four sub-images, each holding
    all C input channels: even rows & even columns, odd rows & even columns,
    even rows & odd columns, odd rows & odd columns. That is the official
    YOLOR order; `tf.nn.space_to_depth` swaps the middle two sub-images, so
    pretrained weights would see scrambled channels through it.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    images = keras.Input((640, 640, 3))
    stem = yolor_keras.models.ReOrg()(images)  # (None, 320, 320, 12)
    ```
    """

    def call(self, inputs):
        return ops.concatenate(
            [
                inputs[:, 0::2, 0::2, :],
                inputs[:, 1::2, 0::2, :],
                inputs[:, 0::2, 1::2, :],
                inputs[:, 1::2, 1::2, :],
            ],
            axis=-1,
        )

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        height = None if height is None else height // 2
        width = None if width is None else width // 2
        channels = None if channels is None else 4 * channels
        return (batch, height, width, channels)
