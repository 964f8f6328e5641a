"""`YOLORObjectDetector` with every head and its losses on the JAX backend (keras.ops only).

JAX runs in its own interpreter (Keras fixes the backend at import). The
script builds a tiny multi-task model, runs every head and the jitted
multi-task loss and gradient, and checks the contrastive loss against the
hand-computed value of `tests/losses/test_multi_task_losses.py`.
"""

import importlib.util
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import keras
    import numpy as np
    from yolor_keras.losses import SupervisedContrastiveLoss
    from yolor_keras.models import ClassificationHead, DetectionHead, EmbeddingHead
    from yolor_keras.tasks import YOLORObjectDetector

    assert keras.backend.backend() == "jax"
    embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], "float32")
    contrastive = jax.jit(lambda z: SupervisedContrastiveLoss(0.5).call(np.array([5, 5, 7]), z))

    model = YOLORObjectDetector.from_preset(
        "yolor_p6", width_multiplier=0.125, depth_multiplier=0.33,
        heads=[
            DetectionHead(3, implicit="network"),
            ClassificationHead(3, hidden_units=16, implicit="factorization"),
            EmbeddingHead(8, hidden_units=16, implicit="vector"),
        ],
    )
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    images = rng.random((4, 64, 64, 3), dtype="float32")
    targets = {
        "detection": {
            "boxes": np.array([[[4, 4, 30, 30], [0, 0, 0, 0]]] * 4, "float32"),
            "classes": np.array([[1, -1]] * 4, "int32"),
        },
        "classification": np.array([[0, 1, 0]] * 4, "float32"),
        "embedding": np.array([1, 1, 2, 2], "int32"),
    }
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(trainable):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=True)
        # The loss trackers' updates stay inside the scope, as in Keras' JAX trainer.
        with keras.StatelessScope():
            return model.compute_loss(images, targets, outputs)

    value, grads = jax.jit(jax.value_and_grad(loss_of))(trainable)
    outputs = model(images)
    print(json.dumps({
        "contrastive": np.asarray(contrastive(embeddings)).tolist(),
        "shapes": {k: [list(t.shape) for t in keras.tree.flatten(v)] for k, v in outputs.items()},
        "loss": float(value),
        "grads_finite": all(bool(np.isfinite(np.asarray(g)).all()) for g in grads),
        "grad_norm": float(sum(float((np.asarray(g) ** 2).sum()) for g in grads) ** 0.5),
    }))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_multi_task_model_and_losses_run_on_jax():
    import json

    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    loss_0 = -math.log(math.exp(1.2) / (math.exp(1.2) + 1.0))
    loss_1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
    assert report["contrastive"] == pytest.approx([1.5 * loss_0, 1.5 * loss_1, 0.0], rel=1e-5)
    assert report["shapes"] == {
        "detection": [[4, 8, 8, 3, 8], [4, 4, 4, 3, 8], [4, 2, 2, 3, 8], [4, 1, 1, 3, 8]],
        "classification": [[4, 3]],
        "embedding": [[4, 8]],
    }
    assert math.isfinite(report["loss"]) and report["loss"] > 0
    assert report["grads_finite"] and report["grad_norm"] > 0
