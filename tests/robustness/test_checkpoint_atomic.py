"""Training checkpoints survive failures injected mid-write: the previous one stays loadable and resumable.

Each test writes a good checkpoint, then makes the next write fail at one
point (the model save, the folder rename, the pointer update, a process
killed mid-save) and checks that the run directory still names a complete
checkpoint whose state agrees with its optimizer, and that training can
carry on from it.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import yolor_keras.atomic
from yolor_keras.training.callbacks import load_checkpoint
from yolor_keras.training.callbacks import optimizer_counters
from yolor_keras.training.callbacks import read_pointer
from yolor_keras.training.callbacks import resolve_checkpoint
from yolor_keras.training.callbacks import save_checkpoint
from yolor_keras.training.trainer import prepare_run_directory

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def task(compiled_tiny_task):
    return compiled_tiny_task(seed=1)


def _step(task, seed):
    rng = np.random.default_rng(seed)
    variables = task.trainable_variables
    task.optimizer.apply(
        [rng.normal(scale=0.1, size=v.shape).astype("float32") for v in variables], variables
    )


def _state(task, epoch):
    step, updates = optimizer_counters(task.optimizer)
    return {"epoch": epoch, "step": step, "updates": updates, "logs": {}}


def _good_run(task, run):
    """A run directory whose latest checkpoint is after epoch 1; returns its kernel snapshot."""
    _step(task, 0)
    save_checkpoint(task, _state(task, 1), str(run))
    snapshot = np.array(task.trainable_variables[0])
    _step(task, 1)  # the state the failed write was saving
    return snapshot


def _assert_previous_intact(run, snapshot, epoch=1):
    assert read_pointer(str(run))["latest"] == f"epoch_{epoch - 1:03d}"
    prepare_run_directory(str(run), resume=True)  # `--resume` accepts it
    restored, state = load_checkpoint(resolve_checkpoint(str(run)))
    assert state["epoch"] == epoch
    assert optimizer_counters(restored.optimizer) == (state["step"], state["updates"])
    np.testing.assert_array_equal(np.array(restored.trainable_variables[0]), snapshot)
    # No half-written checkpoint is visible.
    visible = [name for name in os.listdir(run / "checkpoints") if not name.startswith(".")]
    assert visible == [f"epoch_{epoch - 1:03d}"]
    return restored


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint(task, tmp_path, monkeypatch):
    run = tmp_path / "run"
    snapshot = _good_run(task, run)
    original = type(task).save

    def half_save(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(type(task), "save", half_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(task, _state(task, 2), str(run))
    monkeypatch.setattr(type(task), "save", original)
    _assert_previous_intact(run, snapshot)
    assert os.listdir(run / "checkpoints") == ["epoch_000"]  # the partial folder was removed


def test_a_failed_rename_of_the_new_folder_leaves_the_previous_checkpoint(
    task, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    snapshot = _good_run(task, run)
    real_replace = os.replace

    def failing_replace(source, target):
        if os.path.basename(target) == "epoch_001":
            raise OSError("EIO while renaming")
        return real_replace(source, target)

    monkeypatch.setattr(yolor_keras.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="EIO"):
        save_checkpoint(task, _state(task, 2), str(run))
    monkeypatch.setattr(yolor_keras.atomic.os, "replace", real_replace)
    _assert_previous_intact(run, snapshot)


def test_a_failed_pointer_update_keeps_pointing_at_a_complete_checkpoint(
    task, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    snapshot = _good_run(task, run)
    real_replace = os.replace

    def failing_replace(source, target):
        if os.path.basename(target) == "checkpoint.json":
            raise OSError("EIO while renaming the pointer")
        return real_replace(source, target)

    monkeypatch.setattr(yolor_keras.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="pointer"):
        save_checkpoint(task, _state(task, 2), str(run))
    monkeypatch.setattr(yolor_keras.atomic.os, "replace", real_replace)
    # The new folder is complete but not yet named: the pointer still names
    # the previous checkpoint, which loads and matches its state.
    assert read_pointer(str(run))["latest"] == "epoch_000"
    restored, state = load_checkpoint(resolve_checkpoint(str(run)))
    np.testing.assert_array_equal(np.array(restored.trainable_variables[0]), snapshot)
    # The run carries on: the retried save replaces the unnamed folder.
    save_checkpoint(task, _state(task, 2), str(run))
    assert read_pointer(str(run)) == {"latest": "epoch_001", "previous": "epoch_000"}
    _, state = load_checkpoint(resolve_checkpoint(str(run)))
    assert (state["step"], state["updates"]) == optimizer_counters(task.optimizer)


def test_a_checkpoint_that_fails_its_check_is_never_put_in_place(task, tmp_path, monkeypatch):
    run = tmp_path / "run"
    snapshot = _good_run(task, run)
    original = type(task).save

    def truncated_save(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 3)

    monkeypatch.setattr(type(task), "save", truncated_save)
    with pytest.raises(ValueError, match="not a complete Keras archive"):
        save_checkpoint(task, _state(task, 2), str(run))
    monkeypatch.setattr(type(task), "save", original)
    _assert_previous_intact(run, snapshot)


KILLED_WRITER = """
import json, os, signal, sys

from yolor_keras.training.callbacks import save_checkpoint

class Task:
    def save(self, path):
        with open(path, "wb") as handle:
            handle.write(b"PK\\x03\\x04" + b"x" * 4096)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # the machine dies mid-write

save_checkpoint(Task(), {"epoch": 2, "step": 99, "updates": 99, "logs": {}}, sys.argv[1])
"""


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_resumable(task, tmp_path):
    run = tmp_path / "run"
    snapshot = _good_run(task, run)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftovers = [name for name in os.listdir(run / "checkpoints") if name.startswith(".")]
    assert leftovers and all(name.startswith(".epoch_001.partial-") for name in leftovers)
    _assert_previous_intact(run, snapshot)
    # Resuming cleared what the killed write left behind.
    assert os.listdir(run / "checkpoints") == ["epoch_000"]
    # The next save of the run goes through and the pointer moves on.
    save_checkpoint(task, _state(task, 2), str(run))
    assert json.loads((run / "checkpoint.json").read_text())["latest"] == "epoch_001"
