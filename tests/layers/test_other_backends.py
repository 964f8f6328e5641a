"""The implicit layers on the JAX and PyTorch backends, each in a subprocess.

The Keras backend is fixed when keras is first imported, so each backend
needs its own interpreter.
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
    from yolor_keras.layers import ImplicitAdd, ImplicitConcat, ImplicitMultiply
    assert keras.backend.backend() == "{backend}", keras.backend.backend()
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    for form in ("vector", "network", "factorization"):
        add, mul = ImplicitAdd(form=form), ImplicitMultiply(form=form)
        cat = ImplicitConcat(units=2, form=form)
        out = keras.ops.convert_to_numpy(mul(add(x)))
        a = keras.ops.convert_to_numpy(add.implicit_vector())
        m = keras.ops.convert_to_numpy(mul.implicit_vector())
        np.testing.assert_allclose(out, (x + a) * m, rtol=1e-5, atol=1e-6)
        assert tuple(cat(x).shape) == (2, 3, 3, 6)
        inputs = keras.Input((3, 3, 4))
        model = keras.Model(inputs, mul(add(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        before = [np.array(w) for w in model.trainable_weights]
        model.fit(x, np.zeros_like(x), epochs=1, verbose=0)
        after = [np.array(w) for w in model.trainable_weights]
        assert all(not np.allclose(b, c) for b, c in zip(before, after)), form
    print("BACKEND_OK")
    """
)


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_layers_run_on_backend(backend, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{module} is not installed in this environment; `make test` installs it "
            "(jax via the dev extra, torch via the convert extra)."
        )
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=backend)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BACKEND_OK" in result.stdout
