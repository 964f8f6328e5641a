"""`ImplicitMultiply`: x · m, YOLOR's implicit knowledge for refinement."""

import keras

from yolor_keras.layers.implicit_knowledge import ImplicitKnowledge


@keras.saving.register_keras_serializable(package="yolor_keras")
class ImplicitMultiply(ImplicitKnowledge):
    """Scales every channel by a learned, input-independent (C,) vector.

    In YOLOR's heads it refines the predictions coming out of the 1x1 conv;
    since it is a per-output-channel scale it folds into that conv's kernel
    and bias at deploy time (see `fold_implicit_conv1x1`).

    Args:
        form: how the vector is modelled: ``"vector"`` (a free parameter),
            ``"network"`` (z = W z0) or ``"factorization"`` (z = Zᵀ c).
        mean: initial mean of the vector (YOLOR: 1).
        stddev: initial standard deviation of the vector (YOLOR: 0.02).
        prior_dim: size of z0 for ``form="network"``.
        num_basis: number of basis vectors for ``form="factorization"``.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    ```python
    predictions = keras.Input((80, 80, 255))
    refined = yolor_keras.layers.ImplicitMultiply()(predictions)
    ```
    """

    def __init__(self, form="vector", mean=1.0, stddev=0.02, **kwargs):
        super().__init__(form=form, mean=mean, stddev=stddev, **kwargs)

    def call(self, inputs):
        self._check_channels(inputs.shape)
        return inputs * self._vector_in_compute_dtype()
