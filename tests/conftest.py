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


# The optimizer settings of the checkpoint tests' tiny task: the official
# hyp.scratch values with a 2-step warmup, so a few updates cross it.
CHECKPOINT_HYP = dict(
    lr0=0.01,
    lrf=0.2,
    momentum=0.937,
    weight_decay=5e-4,
    warmup_epochs=1.0,
    warmup_momentum=0.8,
    warmup_bias_lr=0.1,
    warmup_min_steps=2,
)


@pytest.fixture(scope="session")
def compiled_tiny_task():
    """A function building the task a training checkpoint holds, fresh on every call.

    A tiny YOLOR-P6 (classes "a" and "b") compiled as the trainer compiles
    it (`build_optimizer` with `CHECKPOINT_HYP`: 3 batches of 4 per epoch,
    4 epochs; the recipe's loss settings at batch 4) with its optimizer
    built, so no training step is traced. The checkpoint, atomic-write and
    continued-stage tests share it; each gets its own task to change.
    """

    def build(seed=0):
        from yolor_keras.tasks import YOLORObjectDetector
        from yolor_keras.training.optimizer import build_optimizer
        from yolor_keras.training.recipe import Recipe
        from yolor_keras.training.recipe import loss_settings

        keras.utils.set_random_seed(seed)
        task = YOLORObjectDetector.from_preset(
            "yolor_p6",
            num_classes=2,
            width_multiplier=0.125,
            depth_multiplier=0.33,
            class_names=["a", "b"],
        )
        task.compile(
            optimizer=build_optimizer(
                CHECKPOINT_HYP, steps_per_epoch=3, epochs=4, batch_size=4, nominal_batch_size=4
            ),
            **(loss_settings(Recipe()) | {"loss_scale": 4.0}),
        )
        return task

    build.hyp = CHECKPOINT_HYP
    return build
