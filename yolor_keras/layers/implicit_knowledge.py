"""The shared machinery of YOLOR's implicit-knowledge layers.

Implicit knowledge is a learned per-channel vector z that does not depend on
the input. Section 3.3 of the YOLOR paper models z three ways, all offered
here through the ``form`` argument:

* ``"vector"``: z is a free (C,) parameter.
* ``"network"``: z = W z0, a learned prior z0 of size ``prior_dim`` passed
  through a learned dense map W.
* ``"factorization"``: z = Zᵀ c, ``num_basis`` learned basis vectors Z mixed by
  learned coefficients c.

Every form starts out producing a vector with the plain form's statistics:
mean ``mean`` and standard deviation ``stddev`` over channels. The network and
factorization forms model the deviation from ``mean`` (0 for addition and
concatenation, 1 for multiplication); the offset is a constant so that the
factorised forms stay what the paper describes.
"""

import math

import keras
from keras import ops

FORMS = ("vector", "network", "factorization")


class ImplicitKnowledge(keras.layers.Layer):
    """Base class: owns the implicit vector and its three parameterisations.

    Subclasses decide how the vector meets the input (``call``) and how wide
    it is (``_vector_size``).

    Args:
        form: one of ``"vector"``, ``"network"`` or ``"factorization"``.
        mean: mean of the vector at initialisation.
        stddev: standard deviation of the vector at initialisation.
        prior_dim: size of the learned prior z0 for the ``"network"`` form.
        num_basis: number of basis vectors k for the ``"factorization"`` form.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        form="vector",
        mean=0.0,
        stddev=0.02,
        prior_dim=64,
        num_basis=8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if form not in FORMS:
            raise ValueError(f"Layer '{self.name}': `form` must be one of {FORMS}, got {form!r}.")
        if prior_dim < 1 or num_basis < 1:
            raise ValueError(
                f"Layer '{self.name}': `prior_dim` and `num_basis` must be >= 1, "
                f"got prior_dim={prior_dim}, num_basis={num_basis}."
            )
        self.form = form
        self.mean = float(mean)
        self.stddev = float(stddev)
        self.prior_dim = int(prior_dim)
        self.num_basis = int(num_basis)
        self.channels = None

    # -- shape handling ---------------------------------------------------

    def _input_channels(self, input_shape):
        if input_shape is None or len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) needs an input with a "
                f"channel axis (batch, ..., channels); got shape {input_shape}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) needs a known channel "
                f"count on the last axis; got shape {input_shape}."
            )
        return int(channels)

    def _check_channels(self, shape):
        channels = self._input_channels(shape)
        if self.channels is not None and channels != self.channels:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) was built for "
                f"{self.channels} channels (input shape (..., {self.channels})) but "
                f"received an input of shape {tuple(shape)} with {channels} channels."
            )
        return channels

    def _vector_size(self, channels):
        return channels

    # -- weights ----------------------------------------------------------

    def build(self, input_shape):
        self.channels = self._input_channels(input_shape)
        size = self._vector_size(self.channels)
        if self.form == "vector":
            self.implicit = self.add_weight(
                name="implicit",
                shape=(size,),
                initializer=keras.initializers.RandomNormal(self.mean, self.stddev),
            )
        elif self.form == "network":
            # z = z0 W. A gradient step moves z by about lr * |z0|^2 * dL/dz,
            # so z0 starts at 1 / sqrt(d) (|z0| = 1): every form then steps
            # like the plain vector at the same learning rate (with z0 at
            # ones the step is d times larger and YOLOR's rate diverges).
            # W starts at N(0, stddev), so z has the plain form's spread.
            self.prior = self.add_weight(
                name="prior",
                shape=(self.prior_dim,),
                initializer=keras.initializers.Constant(1.0 / math.sqrt(self.prior_dim)),
            )
            self.projection = self.add_weight(
                name="projection",
                shape=(self.prior_dim, size),
                initializer=keras.initializers.RandomNormal(0.0, self.stddev),
            )
        else:
            # Same reasoning with k basis vectors and unit-norm coefficients.
            self.coefficients = self.add_weight(
                name="coefficients",
                shape=(self.num_basis,),
                initializer=keras.initializers.Constant(1.0 / math.sqrt(self.num_basis)),
            )
            self.basis = self.add_weight(
                name="basis",
                shape=(self.num_basis, size),
                initializer=keras.initializers.RandomNormal(0.0, self.stddev),
            )

    def implicit_vector(self):
        """Returns the effective (C,) implicit vector as a float32 tensor."""
        if self.form == "vector":
            return ops.convert_to_tensor(self.implicit)
        if self.form == "network":
            product = ops.matmul(ops.expand_dims(self.prior, 0), self.projection)
        else:
            product = ops.matmul(ops.expand_dims(self.coefficients, 0), self.basis)
        return ops.squeeze(product, 0) + self.mean

    def _vector_in_compute_dtype(self):
        return ops.cast(self.implicit_vector(), self.compute_dtype)

    def load_own_variables(self, store):
        # Keras' own message on a shape mismatch does not say which layer, so
        # check first and name both shapes.
        for index, variable in enumerate(self.variables):
            key = str(index)
            if key in store and tuple(store[key].shape) != tuple(variable.shape):
                raise ValueError(
                    f"Layer '{self.name}' ({type(self).__name__}) cannot load weight "
                    f"'{variable.name}': the layer has shape {tuple(variable.shape)} "
                    f"but the saved weight has shape {tuple(store[key].shape)}."
                )
        super().load_own_variables(store)

    def compute_output_shape(self, input_shape):
        self._check_channels(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "form": self.form,
                "mean": self.mean,
                "stddev": self.stddev,
                "prior_dim": self.prior_dim,
                "num_basis": self.num_basis,
            }
        )
        return config
