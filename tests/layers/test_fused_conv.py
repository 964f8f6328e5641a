"""`FusedConv2D` computes conv (PyTorch-style symmetric padding) + bias + SiLU.

The reference is a direct NumPy convolution; the TensorFlow fast path, the
portable `keras.ops` path and the JAX / PyTorch backends must all match it.
The deploy form built from it must still equal the training form, and on
TensorFlow the conv, bias and SiLU must run as one fused oneDNN op.
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
from layer_test_helper import run_layer_test

from yolor_keras.layers import FusedConv2D

REPO = pathlib.Path(__file__).resolve().parents[2]


def reference_conv(x, kernel, bias, stride, pad, silu):
    """Zero-pad ``pad`` on every side (PyTorch), correlate, add bias, SiLU."""
    x = np.pad(x.astype(np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    size = kernel.shape[0]
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(size):
        for j in range(size):
            patch = x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
            y += np.einsum("bhwc,co->bhwo", patch, kernel[i, j])
    y += bias
    return y / (1.0 + np.exp(-y)) if silu else y


CASES = [
    # (height/width, kernel, stride, activation)
    (9, 3, 1, "silu"),
    (8, 3, 1, "silu"),
    (9, 3, 2, "silu"),
    (8, 3, 2, None),
    (7, 1, 1, "silu"),
    (10, 1, 2, None),
]


@pytest.mark.parametrize("size, kernel_size, stride, activation", CASES)
def test_matches_numpy_reference(size, kernel_size, stride, activation):
    rng = np.random.default_rng(size * 10 + stride)
    layer = FusedConv2D(5, kernel_size, strides=stride, pad=kernel_size // 2, activation=activation)
    x = rng.normal(size=(2, size, size, 4)).astype("float32")
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=5).astype("float32"))
    kernel = np.asarray(layer.kernel)
    expected = reference_conv(
        x, kernel, np.asarray(layer.bias), stride, kernel_size // 2, activation == "silu"
    )
    # Odd and even sizes at stride 2 are where Keras "same" (bottom/right
    # only) and PyTorch (both sides) differ; the output size is PyTorch's.
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == expected.shape
    assert tuple(layer.compute_output_shape(x.shape)) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The portable keras.ops path (JAX / PyTorch) computes the same thing.
    portable = layer._call_portable(x, layer.kernel, layer.bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(portable), expected, rtol=1e-5, atol=1e-5)


def test_layer_battery(tmp_path):
    run_layer_test(
        FusedConv2D,
        {"filters": 6, "kernel_size": (3, 3), "strides": (2, 2), "pad": 1, "activation": "silu"},
        input_shape=(7, 7, 3),
        expected_output_shape=(4, 4, 6),
        weight_names=["kernel", "bias"],
        tmp_path=tmp_path,
    )


def test_rejects_unsupported_arguments():
    with pytest.raises(ValueError, match="activation"):
        FusedConv2D(4, 3, activation="relu")
    with pytest.raises(ValueError, match="padding"):
        FusedConv2D(4, 3, padding="same")
    with pytest.raises(ValueError, match="pad"):
        FusedConv2D(4, 3, pad=-1)


def _partition_graph_ops(function, x):
    """Op types and fused ops TensorFlow actually runs for ``function`` (frozen)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(
        tf.function(function).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    )
    graph_def = frozen.graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    placeholder = [n.name for n in graph_def.node if n.op == "Placeholder"][0]
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(
            [t.name for t in frozen.outputs],
            {f"{placeholder}:0": x},
            options=tf.compat.v1.RunOptions(output_partition_graphs=True),
            run_metadata=metadata,
        )
    return [
        (node.op, [s.decode() for s in node.attr["fused_ops"].list.s])
        for graph in metadata.partition_graphs
        for node in graph.node
    ]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph rewrite")
def test_tensorflow_runs_conv_bias_silu_as_one_op():
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        pytest.skip("oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)")
    x = np.random.default_rng(0).random((1, 9, 9, 4)).astype("float32")
    for stride in (1, 2):
        layer = FusedConv2D(8, 3, strides=stride, pad=1, activation="silu")
        layer.build(x.shape)
        layer.bias.assign(np.linspace(-1, 1, 8).astype("float32"))
        ops = _partition_graph_ops(layer, x)
        convs = [(op, fused) for op, fused in ops if "Conv2D" in op]
        # One conv op carrying the bias and the SiLU; no separate Sigmoid/Mul/Pad.
        assert len(convs) == 1, ops
        assert "BiasAdd" in convs[0][1] and any("Swish" in f for f in convs[0][1]), ops
        assert not {op for op, _ in ops} & {"Sigmoid", "Mul", "Pad", "AddV2", "_MklSwish"}, ops


SCRIPT = textwrap.dedent(
    """
    import keras, numpy as np
    from yolor_keras.layers import FusedConv2D
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    layer = FusedConv2D(4, 3, strides=2, pad=1, activation="silu")
    out = keras.ops.convert_to_numpy(layer(x))
    np.save("{out}", out)
    np.save("{kernel}", keras.ops.convert_to_numpy(layer.kernel))
    np.save("{bias}", keras.ops.convert_to_numpy(layer.bias))
    """
)


# A fresh interpreter per backend takes 15-20 s on CI's cores; the portable
# path itself is checked fast above through `_call_portable`.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backend_matches_reference(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment.")
    paths = {name: str(tmp_path / f"{name}.npy") for name in ("out", "kernel", "bias")}
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=backend, **paths)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    expected = reference_conv(x, np.load(paths["kernel"]), np.load(paths["bias"]), 2, 1, True)
    np.testing.assert_allclose(np.load(paths["out"]), expected, rtol=1e-5, atol=1e-5)


def test_folded_tiny_p6_equals_training_form():
    from yolor_keras.export.folding import fold
    from yolor_keras.models.layer_walk import iter_layers
    from yolor_keras.tasks import YOLORObjectDetector

    model = YOLORObjectDetector.from_preset(
        "yolor_p6", num_classes=3, width_multiplier=0.125, depth_multiplier=0.34, image_size=64
    )
    rng = np.random.default_rng(0)
    # Non-trivial BatchNorm statistics, so the fold has something to fold.
    for weight in model.weights:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
        elif "moving_mean" in weight.path or "beta" in weight.path:
            weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    folded = fold(model)
    kinds = {type(layer).__name__ for layer in iter_layers(folded)}
    assert "FusedConv2D" in kinds
    assert not kinds & {"BatchNormalization", "ZeroPadding2D", "Activation"}, kinds
    x = rng.random((2, 64, 64, 3)).astype("float32")
    expected = keras.tree.flatten(model(x, training=False))
    actual = keras.tree.flatten(folded(x, training=False))
    assert len(expected) == len(actual) == 4
    for e, a in zip(expected, actual):
        e, a = keras.ops.convert_to_numpy(e), keras.ops.convert_to_numpy(a)
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
