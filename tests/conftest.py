"""Suite-wide test setup."""

import os

# Quiet TensorFlow's C++ logging in test output; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_the_test_processes_stderr(monkeypatch):
    """`yolor` commands run in-process leave file descriptor 2 alone.

    The command line's log filter rewires descriptor 2 for the life of a
    process, which would hide later output from pytest's capture.
    """
    from yolor_keras import cli

    monkeypatch.setattr(cli, "quiet_native_logs", lambda verbose=False: None)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with float32 and fresh layer-name counters."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")
