"""The deploy-time folds are exact: checked against the unfolded layers."""

import keras
import numpy as np
import pytest

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.layers import fold_batchnorm
from yolor_keras.layers import fold_implicit_conv1x1


def _head(cin, cout, form):
    inputs = keras.Input((6, 5, cin))
    shifted = ImplicitAdd(form=form, stddev=0.5)(inputs)
    conv = keras.layers.Conv2D(cout, 1, use_bias=True, bias_initializer="random_normal")
    scaled = ImplicitMultiply(form=form, stddev=0.5)(conv(shifted))
    return keras.Model(inputs, scaled)


@pytest.mark.parametrize("form", ["vector", "network", "factorization"])
def test_implicit_fold_matches_the_head(form):
    model = _head(cin=16, cout=24, form=form)
    add, conv, mul = model.layers[1], model.layers[2], model.layers[3]
    kernel, bias = fold_implicit_conv1x1(
        conv.kernel.numpy(),
        conv.bias.numpy(),
        keras.ops.convert_to_numpy(add.implicit_vector()),
        keras.ops.convert_to_numpy(mul.implicit_vector()),
    )
    folded = keras.layers.Conv2D(24, 1)
    x = np.random.default_rng(0).normal(size=(3, 6, 5, 16)).astype("float32")
    folded.build(x.shape)
    folded.set_weights([kernel, bias])
    expected = keras.ops.convert_to_numpy(model(x))
    actual = keras.ops.convert_to_numpy(folded(x))
    assert np.abs(expected - actual).max() <= 1e-5


def test_implicit_fold_by_hand():
    # W = [[1, 2], [3, 4]] (Cin=2 rows, Cout=2 columns), b = [1, -1],
    # a = [1, 1], m = [2, 0.5]:
    # aᵀW = [4, 6]; b' = m ⊙ (b + aᵀW) = [10, 2.5]; W' = [[2, 1], [6, 2]].
    kernel = np.array([[1.0, 2.0], [3.0, 4.0]], "float32").reshape(1, 1, 2, 2)
    new_kernel, new_bias = fold_implicit_conv1x1(
        kernel, np.array([1.0, -1.0]), np.array([1.0, 1.0]), np.array([2.0, 0.5])
    )
    np.testing.assert_allclose(new_kernel.reshape(2, 2), [[2.0, 1.0], [6.0, 2.0]])
    np.testing.assert_allclose(new_bias, [10.0, 2.5])


def test_implicit_fold_rejects_non_1x1_and_wrong_widths():
    with pytest.raises(ValueError, match="1x1"):
        fold_implicit_conv1x1(np.zeros((3, 3, 2, 2)), None, np.zeros(2), None)
    with pytest.raises(ValueError, match="add_vector.*\\(2,\\)"):
        fold_implicit_conv1x1(np.zeros((1, 1, 2, 3)), None, np.zeros(5), None)
    with pytest.raises(ValueError, match="mul_vector.*\\(3,\\)"):
        fold_implicit_conv1x1(np.zeros((1, 1, 2, 3)), None, None, np.zeros(2))


def test_batchnorm_fold_matches_keras_batchnorm():
    rng = np.random.default_rng(1)
    inputs = keras.Input((7, 7, 5))
    conv = keras.layers.Conv2D(8, 3, use_bias=False)
    bn = keras.layers.BatchNormalization(epsilon=1e-4)
    model = keras.Model(inputs, bn(conv(inputs), training=False))
    bn.set_weights(
        [
            rng.uniform(0.5, 1.5, 8),
            rng.normal(size=8),
            rng.normal(size=8),
            rng.uniform(0.5, 2.0, 8),
        ]
    )
    kernel, bias = fold_batchnorm(conv.kernel.numpy(), None, *bn.get_weights(), bn.epsilon)
    folded = keras.layers.Conv2D(8, 3)
    x = rng.normal(size=(2, 7, 7, 5)).astype("float32")
    folded.build(x.shape)
    folded.set_weights([kernel, bias])
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
