"""`yolor_keras.layers.BatchNormalization` computes what Keras' layer computes.

The fused TensorFlow training path is compared with Keras' own
`BatchNormalization` (same weights, same input) and with the textbook
formulas in NumPy: outputs, the gradients of a weighted sum with respect to
the input, gamma and beta, and the moving mean and variance after one
training call (Keras' momentum rule with the biased batch variance). The
portable path (other backends) is Keras' own code; it is run on JAX here.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.layers import BatchNormalization

REPO = pathlib.Path(__file__).resolve().parents[2]
EPSILON = 1e-4
MOMENTUM = 0.97


def _setup(layer, channels, seed):
    rng = np.random.default_rng(seed)
    if not layer.built:
        layer.build((None, 5, 6, channels))
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return layer


def _train_call(layer, x, weights, traced=False):
    """Output, d(sum(y * weights))/d(x, gamma, beta), moving statistics after the call."""

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            objective = tf.reduce_sum(tf.cast(y, "float32") * weights)
        return y, tape.gradient(objective, [x, layer.gamma, layer.beta])

    function = tf.function(step) if traced else step
    y, grads = function(tf.constant(x))
    return (
        np.asarray(tf.cast(y, "float32")),
        [np.asarray(g) for g in grads],
        np.asarray(layer.moving_mean),
        np.asarray(layer.moving_variance),
    )


def _numpy_reference(x, weights, gamma, beta, moving_mean, moving_variance):
    """Batch normalisation in training and its gradients, by the formulas (float64)."""
    x = x.astype("float64")
    n = np.prod(x.shape[:-1])
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))  # biased, as the normalisation uses it
    inv = 1.0 / np.sqrt(variance + EPSILON)
    x_hat = (x - mean) * inv
    y = gamma * x_hat + beta
    dy = weights.astype("float64")
    d_beta = dy.sum(axis=(0, 1, 2))
    d_gamma = (dy * x_hat).sum(axis=(0, 1, 2))
    d_xhat = dy * gamma
    d_x = (
        inv
        / n
        * (n * d_xhat - d_xhat.sum(axis=(0, 1, 2)) - x_hat * (d_xhat * x_hat).sum(axis=(0, 1, 2)))
    )
    new_mean = moving_mean * MOMENTUM + mean * (1 - MOMENTUM)
    new_variance = moving_variance * MOMENTUM + variance * (1 - MOMENTUM)
    return y, [d_x, d_gamma, d_beta], new_mean, new_variance


@pytest.mark.parametrize("traced", [False, True])
def test_fused_training_matches_keras_and_the_formulas(traced):
    channels = 8
    rng = np.random.default_rng(0)
    # A mean far from 0 and unequal channel scales: the statistics matter.
    x = (rng.normal(size=(2, 5, 6, channels)) * rng.uniform(0.5, 3.0, channels) + 2.0).astype(
        "float32"
    )
    weights = rng.normal(size=x.shape).astype("float32")
    ours = _setup(BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM), channels, 1)
    keras_bn = _setup(
        keras.layers.BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM), channels, 1
    )
    reference = _numpy_reference(
        x,
        weights,
        np.asarray(ours.gamma),
        np.asarray(ours.beta),
        np.asarray(ours.moving_mean),
        np.asarray(ours.moving_variance),
    )
    got = _train_call(ours, x, weights, traced)
    expected = _train_call(keras_bn, x, weights, traced)

    for actual in (got, expected):
        np.testing.assert_allclose(actual[0], reference[0], rtol=1e-5, atol=2e-5)
        for grad, ref in zip(actual[1], reference[1]):
            np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(actual[2], reference[2], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(actual[3], reference[3], rtol=1e-6, atol=1e-6)
    # And the two layers agree with each other to float32 round-off.
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    for a, b in zip(got[1], expected[1]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(got[2], expected[2], atol=1e-7)
    np.testing.assert_allclose(got[3], expected[3], rtol=1e-6)


def _op_types(layer, x, training):
    function = tf.function(lambda x: layer(x, training=training))
    graph = function.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_the_fused_op_is_used_only_where_it_applies():
    x = tf.zeros((2, 4, 4, 3))
    fused = _setup(BatchNormalization(epsilon=EPSILON), 3, 0)
    assert "FusedBatchNormV3" in _op_types(fused, x, training=True)
    # Inference and the switched-off layer take Keras' own ops.
    assert "FusedBatchNormV3" not in _op_types(fused, x, training=False)
    plain = _setup(BatchNormalization(epsilon=EPSILON, fused=False), 3, 0)
    assert "FusedBatchNormV3" not in _op_types(plain, x, training=True)
    frozen = _setup(BatchNormalization(epsilon=EPSILON), 3, 0)
    frozen.trainable = False
    assert "FusedBatchNormV3" not in _op_types(frozen, x, training=True)


def test_mixed_bfloat16_matches_keras():
    channels = 4
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(2, 3, 3, channels)) * 2.0 + 1.0).astype("float32")
    weights = rng.normal(size=x.shape).astype("float32")
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        ours = _setup(BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM), channels, 3)
        keras_bn = _setup(
            keras.layers.BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM), channels, 3
        )
        assert ours(tf.constant(x, "bfloat16"), training=True).dtype == tf.bfloat16
        _setup(ours, channels, 3)
        got = _train_call(ours, tf.cast(x, "bfloat16"), weights)
        expected = _train_call(keras_bn, tf.cast(x, "bfloat16"), weights)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    # Both normalise in float32 and round the output to bfloat16 (8 bits).
    np.testing.assert_allclose(got[0], expected[0], rtol=2**-7, atol=2**-7)
    for a, b in zip(got[1], expected[1]):
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[3], expected[3], rtol=1e-6, atol=1e-6)


def test_weights_and_config_are_keras_batchnorm():
    ours = _setup(BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM, name="bn"), 3, 0)
    keras_bn = _setup(
        keras.layers.BatchNormalization(epsilon=EPSILON, momentum=MOMENTUM, name="bn"), 3, 0
    )
    assert isinstance(ours, keras.layers.BatchNormalization)
    assert [w.path for w in ours.weights] == [w.path for w in keras_bn.weights]
    assert [w.path.split("/")[-1] for w in ours.weights] == [
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    ]
    config = ours.get_config()
    assert config["fused"] is True
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(restored) is BatchNormalization and restored.get_config() == config


PORTABLE = textwrap.dedent(
    """
    import keras, numpy as np
    from yolor_keras.layers import BatchNormalization
    assert keras.backend.backend() == "jax"
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 3, 4, 5)).astype("float32")
    layer = BatchNormalization(epsilon=1e-4, momentum=0.97)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-4), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer.moving_mean), 0.03 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(layer.moving_variance), 0.97 + 0.03 * var, rtol=1e-5, atol=1e-6
    )
    print("PORTABLE_OK")
    """
)


# A fresh interpreter that imports JAX: tens of seconds on CI's two cores.
@pytest.mark.slow
def test_portable_path_on_jax():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed in this environment (the dev extra installs it).")
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", PORTABLE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "PORTABLE_OK" in result.stdout, result.stderr[-3000:]
