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


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory):
    """A function giving a private copy of one SavedModel export of `tiny_detector`.

    Exporting costs tens of seconds on CI's two cores, and the serving and
    robustness modules all serve the same export (`tiny_detector(image_size)`
    with `max_detections`), so each test process exports each variant once.
    Every call copies it to ``destination`` (``<root>/<name>/<version>``):
    a test may change its copy without touching another's.
    """
    import shutil

    exports = {}

    def copy(destination, image_size=128, max_detections=50):
        from deployment_helper import tiny_detector

        from yolor_keras.export import export_saved_model

        key = (image_size, max_detections)
        if key not in exports:
            folder = tmp_path_factory.mktemp("shared_export") / "1"
            export_saved_model(
                tiny_detector(image_size=image_size),
                folder,
                image_size=image_size,
                max_detections=max_detections,
            )
            exports[key] = folder
        shutil.copytree(exports[key], destination)
        return destination

    return copy
