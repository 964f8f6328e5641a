"""The training run end to end: a run killed mid-epoch and resumed ends exactly where an uninterrupted run does."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# Runs `yolor train` and kills itself (SIGKILL: no cleanup, no flushing) right
# after batch KILL_BATCH of epoch KILL_EPOCH, from inside the training loop:
# the kill point is exact, with no polling race.
KILLED_TRAIN = """
import os, signal, sys
from yolor_keras.training import callbacks

kill_epoch, kill_batch = int(os.environ["KILL_EPOCH"]), int(os.environ["KILL_BATCH"])
current = {}

def on_epoch_begin(self, epoch, logs=None):
    current["epoch"] = epoch

def on_train_batch_end(self, batch, logs=None):
    if current.get("epoch") == kill_epoch and batch == kill_batch:
        os.kill(os.getpid(), signal.SIGKILL)

callbacks.EpochCheckpoint.on_epoch_begin = on_epoch_begin
callbacks.EpochCheckpoint.on_train_batch_end = on_train_batch_end
from yolor_keras.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Batch 4 accumulated to a nominal 8 (the official ramp: 1 -> 2 over a
# 3-batch warmup), 3 batches per epoch: 6 optimizer updates in 3 epochs, and
# a half-filled gradient accumulator in the checkpoint after epoch 1 (the
# one resumed). Three epochs are the fewest that give the killed run a
# previous checkpoint, an accumulator in use, and a resumed epoch.
RECIPE = """
train: {model: yolor_p6, image_size: 64, epochs: 3, batch_size: 4, nominal_batch_size: 8, eval_interval: 100}
optimizer: {warmup_epochs: 1.0, warmup_min_steps: 3}
augment: {mosaic: 1.0, mixup: 0.0}
"""


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from yolor_keras.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(str(root), num_train=16, num_val=4, image_size=128, seed=3)
    return root


def _train_args(data, out, recipe, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--recipe",
        str(recipe),
        "--width-multiplier",
        "0.125",
        "--depth-multiplier",
        "0.33",
        "--steps-per-epoch",
        "3",
        "--seed",
        "5",
        *extra,
    ]


@pytest.fixture
def processes():
    """The training processes a test starts; any left running when it fails are killed."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.log_file.close()


def _start(args, log_path, env, script=None):
    # Output goes to a file: nothing blocks on an unread pipe.
    log = open(log_path, "w")
    command = (
        [sys.executable, "-c", script, *args]
        if script
        else [sys.executable, "-m", "yolor_keras.cli", *args]
    )
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_file = log
    return process


def _finish(process, timeout=1200):
    try:
        return process.wait(timeout=timeout)
    finally:
        process.log_file.close()


def _archive_arrays(checkpoint):
    """Every array of a checkpoint's task.keras: layer weights and optimizer variables."""
    arrays = {}
    with (
        zipfile.ZipFile(checkpoint / "task.keras") as archive,
        archive.open("model.weights.h5") as handle,
    ):
        with h5py.File(handle, "r") as weights:
            weights.visititems(
                lambda name, item: (
                    arrays.__setitem__(name, np.array(item))
                    if isinstance(item, h5py.Dataset)
                    else None
                )
            )
    return arrays


def _optimizer_arrays(arrays):
    return {name: value for name, value in arrays.items() if name.startswith("optimizer/")}


# Three training processes, side by side: the resumed run starts as soon
# as the killed one is dead, while the uninterrupted one still trains.
@pytest.mark.timeout(1800)
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tiny_dataset, tmp_path, processes):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed_out, straight_out = tmp_path / "killed", tmp_path / "straight"
    killed = _start(
        _train_args(tiny_dataset, killed_out, recipe),
        tmp_path / "killed.log",
        {**env, "KILL_EPOCH": "2", "KILL_BATCH": "1"},
        script=KILLED_TRAIN,
    )
    straight = _start(
        _train_args(tiny_dataset, straight_out, recipe), tmp_path / "straight.log", env
    )
    processes += [killed, straight]
    killed_rc = _finish(killed)
    assert killed_rc == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-4000:]

    # Killed in epoch 2 after two of its batches: the latest checkpoint is
    # after epoch 1, with optimizer updates made and an accumulator in use.
    pointer = json.loads((killed_out / "checkpoint.json").read_text())
    assert pointer == {"latest": "epoch_001", "previous": "epoch_000"}
    state = json.loads((killed_out / "checkpoints" / "epoch_001" / "state.json").read_text())
    # Updates at batches 0, 1, 2 (accumulation 1, 1, 2 on the ramp) and 4.
    assert (state["epoch"], state["step"], state["updates"]) == (2, 6, 4)
    # The checkpoint as the kill left it, examined while the resumed run trains.
    at_kill_folder = tmp_path / "at_kill"
    shutil.copytree(killed_out / "checkpoints" / "epoch_001", at_kill_folder)

    resumed = _start(
        _train_args(tiny_dataset, killed_out, recipe, "--resume"), tmp_path / "resumed.log", env
    )
    processes.append(resumed)
    import keras

    from yolor_keras.training.callbacks import load_checkpoint

    at_kill, _ = load_checkpoint(str(at_kill_folder))
    accumulators = at_kill.optimizer._accumulated_gradients
    assert accumulators and any(
        np.abs(keras.ops.convert_to_numpy(a)).max() > 0 for a in accumulators
    )
    del at_kill
    kill_arrays = _archive_arrays(at_kill_folder)

    resumed_rc, straight_rc = _finish(resumed), _finish(straight)
    assert straight_rc == 0, (tmp_path / "straight.log").read_text()[-4000:]
    assert resumed_rc == 0, (tmp_path / "resumed.log").read_text()[-4000:]
    assert (
        "Resuming " + str(killed_out) + " at epoch 2, step 6."
        in (tmp_path / "resumed.log").read_text()
    )

    final = {}
    for name, out in (("resumed", killed_out), ("straight", straight_out)):
        final[name] = json.loads((out / "checkpoints" / "epoch_002" / "state.json").read_text())
        assert (out / "model.keras").exists()
    # Updates at batches 0, 1, 2, 4, 6, 8 of 9.
    assert (final["resumed"]["step"], final["resumed"]["updates"]) == (9, 6)
    assert (final["straight"]["step"], final["straight"]["updates"]) == (9, 6)
    assert final["resumed"]["logs"]["loss"] == final["straight"]["logs"]["loss"]
    assert "val_mAP" in final["resumed"]["logs"]

    resumed_arrays = _archive_arrays(killed_out / "checkpoints" / "epoch_002")
    straight_arrays = _archive_arrays(straight_out / "checkpoints" / "epoch_002")
    assert resumed_arrays.keys() == straight_arrays.keys()
    # The archive holds the optimizer's variables by index: the counter, and
    # per trainable weight its accumulator, momentum and EMA, plus the EMA of
    # the BatchNorm statistics.
    optimizer = _optimizer_arrays(straight_arrays)
    assert (
        len(optimizer)
        > 3 * len([k for k in straight_arrays if not k.startswith("optimizer/")]) // 2
    )
    for name in straight_arrays:
        np.testing.assert_array_equal(resumed_arrays[name], straight_arrays[name], err_msg=name)
    # And the resumed epochs really trained: the weights moved from the checkpoint resumed.
    moved = [
        k
        for k in kill_arrays
        if not k.startswith("optimizer/") and not np.array_equal(kill_arrays[k], straight_arrays[k])
    ]
    assert len(moved) > 10

    epochs_logged = [
        line.split(",")[0] for line in (killed_out / "results.csv").read_text().splitlines()[1:]
    ]
    assert epochs_logged == ["0", "1", "2"]
