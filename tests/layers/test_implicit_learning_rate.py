"""Every implicit-knowledge form steps like the plain vector at the same learning rate.

The network form is z = z0 W and the factorization z = c Z. One SGD step on
L = g . z moves z by about lr * |z0|^2 * g (plus a small W^T W term), so the
layer must start with |z0| = 1: with z0 at ones the step is d times the
vector form's and YOLOR's learning rate diverges within the first epoch.
"""

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply

CHANNELS = 24
LEARNING_RATE = 0.01


def sgd_step_of_vector(layer):
    """How much one plain SGD step on L = g . z moves the implicit vector z."""
    g = np.random.default_rng(1).normal(size=CHANNELS).astype("float32")
    before = layer.implicit_vector().numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.constant(g) * layer.implicit_vector())
    for variable, gradient in zip(
        layer.trainable_variables, tape.gradient(loss, layer.trainable_variables)
    ):
        variable.assign_sub(LEARNING_RATE * gradient)
    return layer.implicit_vector().numpy() - before, g


def relative_error(step, expected):
    return np.linalg.norm(step - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("layer_class", [ImplicitAdd, ImplicitMultiply])
@pytest.mark.parametrize("form", ["vector", "network", "factorization"])
def test_every_form_steps_like_the_vector_form(layer_class, form):
    layer = layer_class(form=form)
    layer.build((None, CHANNELS))
    # The vector form moves by exactly -lr * g; the others within a few
    # percent (their small W^T W term).
    step, g = sgd_step_of_vector(layer)
    assert relative_error(step, -LEARNING_RATE * g) < 0.1


@pytest.mark.parametrize("layer_class, mean", [(ImplicitAdd, 0.0), (ImplicitMultiply, 1.0)])
@pytest.mark.parametrize("form, size", [("network", 64), ("factorization", 8)])
def test_factorised_forms_start_with_the_vector_forms_statistics(layer_class, mean, form, size):
    keras_seed = 3
    tf.keras.utils.set_random_seed(keras_seed)
    layer = layer_class(form=form)
    layer.build((None, 4096))
    vector = layer.implicit_vector().numpy()
    assert abs(vector.mean() - mean) < 0.002
    assert abs(vector.std() - 0.02) < 0.002
    coefficients = layer.prior if form == "network" else layer.coefficients
    assert coefficients.shape == (size,)
    np.testing.assert_allclose(np.linalg.norm(coefficients.numpy()), 1.0, rtol=1e-6)
