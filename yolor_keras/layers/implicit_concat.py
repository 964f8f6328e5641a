"""`ImplicitConcat`: [x, c], implicit knowledge appended as extra channels."""

import keras
from keras import ops

from yolor_keras.layers.implicit_knowledge import ImplicitKnowledge


@keras.saving.register_keras_serializable(package="yolor_keras")
class ImplicitConcat(ImplicitKnowledge):
    """Appends a learned, input-independent vector of ``units`` channels.

    The vector is repeated at every batch and spatial position and
    concatenated after the input's channels, so the output has
    ``C + units`` channels.

    Args:
        units: number of implicit channels to append.
        form: how the vector is modelled: ``"vector"`` (a free parameter),
            ``"network"`` (z = W z0) or ``"factorization"`` (z = Zᵀ c).
        mean: initial mean of the vector (0).
        stddev: initial standard deviation of the vector (0.02).
        prior_dim: size of z0 for ``form="network"``.
        num_basis: number of basis vectors for ``form="factorization"``.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    features = keras.Input((20, 20, 512))
    widened = yolor_keras.layers.ImplicitConcat(units=32)(features)  # 544 ch
    ```
    """

    def __init__(self, units, form="vector", mean=0.0, stddev=0.02, **kwargs):
        super().__init__(form=form, mean=mean, stddev=stddev, **kwargs)
        if int(units) < 1:
            raise ValueError(f"Layer '{self.name}': `units` must be >= 1, got {units}.")
        self.units = int(units)

    def _vector_size(self, channels):
        return self.units

    def call(self, inputs):
        self._check_channels(inputs.shape)
        # zeros of shape (..., 1) + (units,) broadcasts the vector to every
        # position without needing the dynamic batch/spatial shape.
        implicit = ops.zeros_like(inputs[..., :1]) + self._vector_in_compute_dtype()
        return ops.concatenate([inputs, implicit], axis=-1)

    def compute_output_shape(self, input_shape):
        self._check_channels(input_shape)
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config
