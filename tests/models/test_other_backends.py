"""The converted model, its decode and its fold on the PyTorch and JAX backends.

The model code uses keras.ops only; this runs the paper-branch parity
fixture through a subprocess per backend (the Keras backend is fixed at
import time).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import keras, numpy as np
    from yolor_keras.convert import convert_checkpoint
    from yolor_keras.export import fold
    from yolor_keras.models import decode_predictions
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    fixtures = "{fixtures}"
    model = convert_checkpoint(fixtures + "/tiny_yolor_p6_paper.pt", "yolor_p6_paper")
    image = np.load(fixtures + "/tiny_input.npz")["x"].transpose(0, 2, 3, 1)
    reference = np.load(fixtures + "/tiny_yolor_p6_paper_output.npz")
    raw = model(image)
    for level, output in enumerate(raw):
        expected = reference[f"raw_{{level}}_f64"].transpose(0, 2, 3, 1, 4)
        error = np.abs(keras.ops.convert_to_numpy(output) - expected).max()
        assert error <= 0.004, (level, error)
    decoded = keras.ops.convert_to_numpy(decode_predictions(raw, model.anchors, model.strides))
    assert np.abs(decoded[..., 4:] - reference["inference_f64"][..., 4:]).max() <= 5 * 8.8e-5
    for a, b in zip(raw, fold(model)(image)):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        assert np.abs(a - b).max() <= 3e-2 * a.std()
    print("BACKEND_OK")
    """
)


def _run(backend, module, fixtures_dir):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment.")
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=backend, fixtures=fixtures_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BACKEND_OK" in result.stdout


def test_parity_on_torch_backend(fixtures_dir):
    _run("torch", "torch", fixtures_dir)


@pytest.mark.slow
def test_parity_on_jax_backend(fixtures_dir):
    # Eager JAX dispatches op by op: about 40 s on two cores.
    _run("jax", "jax", fixtures_dir)
