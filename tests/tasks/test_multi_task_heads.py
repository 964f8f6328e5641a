"""The learning-rate balance of network/factorization implicit layers in the heads."""

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.tasks.multi_task_heads import balance_implicit_learning_rate

CHANNELS = 24
LEARNING_RATE = 0.01


def sgd_step_of_vector(layer):
    """How much one plain SGD step on L = g . z moves the implicit vector z."""
    g = np.random.default_rng(1).normal(size=CHANNELS).astype("float32")
    before = layer.implicit_vector().numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(g * layer.implicit_vector())
    for variable, gradient in zip(
        layer.trainable_variables, tape.gradient(loss, layer.trainable_variables)
    ):
        variable.assign_sub(LEARNING_RATE * gradient)
    return layer.implicit_vector().numpy() - before, g


@pytest.mark.parametrize("layer_class", [ImplicitAdd, ImplicitMultiply])
@pytest.mark.parametrize("form, size", [("network", 64), ("factorization", 8)])
def test_balanced_layers_keep_their_vector_and_step_like_the_vector_form(layer_class, form, size):
    layer = layer_class(form=form)
    layer.build((None, CHANNELS))
    vector = layer.implicit_vector().numpy()
    balance_implicit_learning_rate(layer)
    np.testing.assert_allclose(layer.implicit_vector().numpy(), vector, rtol=1e-5, atol=1e-6)

    def relative_error(step, expected):
        return np.linalg.norm(step - expected) / np.linalg.norm(expected)

    # The vector form moves by exactly -lr * g; the balanced form within a
    # few percent (its small W^T W term), the unbalanced one `size` times as far.
    step, g = sgd_step_of_vector(layer)
    assert relative_error(step, -LEARNING_RATE * g) < 0.1
    unbalanced = layer_class(form=form)
    unbalanced.build((None, CHANNELS))
    step, g = sgd_step_of_vector(unbalanced)
    assert relative_error(step, -LEARNING_RATE * size * g) < 0.1


def test_vector_form_is_left_alone():
    layer = ImplicitAdd(form="vector")
    layer.build((None, CHANNELS))
    vector = layer.implicit_vector().numpy()
    balance_implicit_learning_rate(layer)
    np.testing.assert_array_equal(layer.implicit_vector().numpy(), vector)
