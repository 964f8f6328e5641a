"""`ChannelAffine`: a fixed per-channel scale and offset (a frozen BatchNorm)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolor_keras")
class ChannelAffine(keras.layers.Layer):
    """Computes ``x * scale + offset`` with (C,) vectors over the last axis.

    In the deploy form of a model this replaces a BatchNorm that cannot be
    folded into a convolution: the paper-branch CSP blocks normalise the
    concatenation of a residual branch and a plain conv, and a residual sum
    has no single conv to absorb the normalisation.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    features = keras.Input((80, 80, 64))
    normalised = yolor_keras.models.ChannelAffine()(features)
    ```
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"Layer '{self.name}' (ChannelAffine) needs a known channel count; "
                f"got input shape {input_shape}."
            )
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")
        self.offset = self.add_weight(name="offset", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        scale = ops.cast(self.scale, self.compute_dtype)
        offset = ops.cast(self.offset, self.compute_dtype)
        return inputs * scale + offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
