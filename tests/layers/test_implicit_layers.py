"""Tests of ImplicitAdd, ImplicitMultiply and ImplicitConcat in all three forms."""

import keras
import numpy as np
import pytest
from layer_test_helper import run_layer_test

from yolor_keras.layers import FORMS
from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitConcat
from yolor_keras.layers import ImplicitMultiply

WEIGHTS_OF_FORM = {
    "vector": ["implicit"],
    "network": ["prior", "projection"],
    "factorization": ["coefficients", "basis"],
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "layer_cls, extra_kwargs, output_channels",
    [(ImplicitAdd, {}, 6), (ImplicitMultiply, {}, 6), (ImplicitConcat, {"units": 3}, 9)],
    ids=["add", "multiply", "concat"],
)
def test_layer_battery(layer_cls, extra_kwargs, output_channels, form, tmp_path):
    run_layer_test(
        layer_cls,
        {"form": form, **extra_kwargs},
        input_shape=(5, 4, 6),
        expected_output_shape=(5, 4, output_channels),
        weight_names=WEIGHTS_OF_FORM[form],
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("form", FORMS)
def test_outputs_apply_the_implicit_vector(form):
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    add, mul = ImplicitAdd(form=form), ImplicitMultiply(form=form)
    concat = ImplicitConcat(units=2, form=form)
    y_add, y_mul, y_cat = (keras.ops.convert_to_numpy(layer(x)) for layer in (add, mul, concat))
    a, m, c = (keras.ops.convert_to_numpy(layer.implicit_vector()) for layer in (add, mul, concat))
    np.testing.assert_allclose(y_add, x + a.reshape(1, 1, 1, 4), rtol=1e-6)
    np.testing.assert_allclose(y_mul, x * m.reshape(1, 1, 1, 4), rtol=1e-6)
    np.testing.assert_array_equal(y_cat[..., :4], x)
    np.testing.assert_allclose(y_cat[..., 4:], np.broadcast_to(c, (2, 3, 3, 2)), rtol=1e-6)


def test_network_and_factorization_compute_their_formulas():
    net = ImplicitAdd(form="network", prior_dim=5)
    net.build((None, 7))
    prior = np.arange(5, dtype="float32")
    kernel = np.random.default_rng(3).normal(size=(5, 7)).astype("float32")
    net.prior.assign(prior)
    net.projection.assign(kernel)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(net.implicit_vector()), prior @ kernel, rtol=1e-5
    )

    fac = ImplicitMultiply(form="factorization", num_basis=3)
    fac.build((None, 7))
    coefficients = np.array([0.5, -1.0, 2.0], "float32")
    basis = np.random.default_rng(4).normal(size=(3, 7)).astype("float32")
    fac.coefficients.assign(coefficients)
    fac.basis.assign(basis)
    # Zᵀc plus the neutral element of multiplication.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fac.implicit_vector()),
        basis.T @ coefficients + 1.0,
        rtol=1e-5,
    )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "layer_cls, kwargs, mean",
    [(ImplicitAdd, {}, 0.0), (ImplicitMultiply, {}, 1.0), (ImplicitConcat, {"units": 8192}, 0.0)],
    ids=["add", "multiply", "concat"],
)
def test_initial_statistics_match_the_plain_vector(layer_cls, kwargs, mean, form):
    layer = layer_cls(form=form, **kwargs)
    layer.build((None, 8192))
    vector = keras.ops.convert_to_numpy(layer.implicit_vector())
    assert vector.shape == (8192,)
    # Standard error of the mean is 0.02 / sqrt(8192) ≈ 2.2e-4.
    assert abs(vector.mean() - mean) < 1.5e-3, vector.mean()
    assert abs(vector.std() - 0.02) < 0.002, vector.std()


@pytest.mark.parametrize("layer_cls", [ImplicitAdd, ImplicitMultiply])
def test_input_without_channel_axis_is_rejected(layer_cls):
    layer = layer_cls(name="head_shift")
    with pytest.raises(ValueError, match=r"head_shift.*channel axis.*\(4,\)"):
        layer(np.zeros((4,), "float32"))


@pytest.mark.parametrize("layer_cls", [ImplicitAdd, ImplicitMultiply, ImplicitConcat])
def test_input_with_other_channel_count_is_rejected(layer_cls):
    kwargs = {"units": 2} if layer_cls is ImplicitConcat else {}
    layer = layer_cls(name="p3_implicit", **kwargs)
    layer(np.zeros((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match=r"p3_implicit.*8 channels.*\(1, 2, 2, 16\)"):
        layer(np.zeros((1, 2, 2, 16), "float32"))


def test_loading_weights_of_other_width_is_rejected(tmp_path):
    source = keras.Sequential([keras.Input((2, 2, 8)), ImplicitAdd(name="shift")])
    path = str(tmp_path / "wide.weights.h5")
    source.save_weights(path)
    target = keras.Sequential([keras.Input((2, 2, 4)), ImplicitAdd(name="shift")])
    with pytest.raises(ValueError, match=r"shift.*\(4,\).*\(8,\)"):
        target.load_weights(path)


def test_invalid_form_is_rejected():
    with pytest.raises(ValueError, match="form"):
        ImplicitAdd(form="matrix")
