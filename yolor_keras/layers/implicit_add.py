"""`ImplicitAdd`: x + a, YOLOR's implicit knowledge for feature alignment."""

import keras

from yolor_keras.layers.implicit_knowledge import ImplicitKnowledge


@keras.saving.register_keras_serializable(package="yolor_keras")
class ImplicitAdd(ImplicitKnowledge):
    """Adds a learned, input-independent (C,) vector to every position.

    The vector broadcasts over the batch and spatial axes of an NHWC (or any
    channels-last) input. In YOLOR's heads it shifts the features entering the
    1x1 prediction conv, which is why it can later be folded into that conv's
    bias (see `fold_implicit_conv1x1`).

    Args:
        form: how the vector is modelled: ``"vector"`` (a free parameter),
            ``"network"`` (z = W z0) or ``"factorization"`` (z = Zᵀ c).
        mean: initial mean of the vector (YOLOR: 0).
        stddev: initial standard deviation of the vector (YOLOR: 0.02).
        prior_dim: size of z0 for ``form="network"``.
        num_basis: number of basis vectors for ``form="factorization"``.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    features = keras.Input((80, 80, 256))
    aligned = yolor_keras.layers.ImplicitAdd()(features)
    ```
    """

    def __init__(self, form="vector", mean=0.0, stddev=0.02, **kwargs):
        super().__init__(form=form, mean=mean, stddev=stddev, **kwargs)

    def call(self, inputs):
        self._check_channels(inputs.shape)
        return inputs + self._vector_in_compute_dtype()
