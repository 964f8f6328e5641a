"""YOLORLoss on the JAX and PyTorch backends agrees with TensorFlow.

Each backend runs in its own interpreter (Keras fixes the backend at import),
reads the same inputs from an ``.npz`` file and writes back the per-sample
components, the loss and its gradient. JAX computes them under `jax.jit`,
which needs static shapes throughout.
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

from yolor_keras.losses import YOLORLoss

REPO = pathlib.Path(__file__).resolve().parents[2]
STRIDES = [8, 16, 32]
ANCHORS = np.array(
    [
        [[8, 8], [16, 16], [40, 24]],
        [[32, 48], [64, 40], [60, 90]],
        [[96, 96], [128, 80], [200, 160]],
    ],
    "float32",
)
PARTS = ("box", "obj", "cls", "loss")

SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from yolor_keras.losses import YOLORLoss

    backend = keras.backend.backend()
    data = np.load(sys.argv[1])
    raw = [data[f"raw{i}"] for i in range(3)]
    labels = {"boxes": data["boxes"], "classes": data["classes"]}
    loss = YOLORLoss(data["anchors"], [8, 16, 32], num_classes=3)
    if backend == "jax":
        import jax

        def value_and_parts(r):
            parts = loss.compute_components(labels, r)
            return keras.ops.mean(parts["loss"]), parts

        # One compiled program for the loss and its gradient (eager JAX
        # compiles op by op, which is slower).
        (value, parts), grads = jax.jit(jax.value_and_grad(value_and_parts, has_aux=True))(raw)
    else:
        import torch

        tensors = [torch.tensor(r, requires_grad=True) for r in raw]
        parts = loss.compute_components(labels, tensors)
        value = loss(labels, tensors)
        value.backward()
        grads = [t.grad for t in tensors]
    out = {k: keras.ops.convert_to_numpy(v) for k, v in parts.items()}
    out["value"] = keras.ops.convert_to_numpy(value)
    out.update({f"grad{i}": keras.ops.convert_to_numpy(g) for i, g in enumerate(grads)})
    np.savez(sys.argv[2], backend=backend, **out)
    """
)


def _inputs():
    rng = np.random.default_rng(0)
    raw = [rng.normal(size=(2, 64 // s, 64 // s, 3, 8)).astype("float32") for s in STRIDES]
    boxes = np.array(
        [
            [[13, 29, 29, 41], [13, 29, 29, 41], [0, 8, 48, 40]],
            [[2, 0, 10, 6], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        "float32",
    )
    classes = np.array([[1, 1, 2], [0, -1, -1]], "int32")
    return raw, {"boxes": boxes, "classes": classes}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_loss_agrees_with_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed; `make test` installs it.")
    raw, labels = _inputs()
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, anchors=ANCHORS, **labels, **{f"raw{i}": r for i, r in enumerate(raw)})
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(inputs), str(outputs)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    other = np.load(outputs)
    assert str(other["backend"]) == backend

    loss = YOLORLoss(ANCHORS, STRIDES, num_classes=3)
    parts = loss.compute_components(labels, raw)
    for name in PARTS:
        np.testing.assert_allclose(other[name], keras.ops.convert_to_numpy(parts[name]), rtol=1e-5)
    assert np.asarray(parts["box"]).min() > 0  # both images have assignments

    variables = [tf.Variable(r) for r in raw]
    with tf.GradientTape() as tape:
        value = loss(labels, variables)
    assert float(other["value"]) == pytest.approx(float(value), rel=1e-5)
    for i, ours in enumerate(tape.gradient(value, variables)):
        np.testing.assert_allclose(other[f"grad{i}"], ours.numpy(), atol=1e-6)
