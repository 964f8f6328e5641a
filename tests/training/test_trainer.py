"""The training run end to end: checkpoints, kill and resume, evaluation."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from yolor_keras.training.callbacks import atomic_write

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.keras"
    target.write_text("previous checkpoint")

    def broken_write(path):
        with open(path, "w") as handle:
            handle.write("half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), broken_write)
    assert target.read_text() == "previous checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["last.keras"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from yolor_keras.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(str(root), num_train=16, num_val=4, image_size=128, seed=3)
    return root


def _train_command(data, out, *extra):
    return [
        sys.executable, "-m", "yolor_keras.cli", "train",
        "--data", str(data), "--out", str(out), "--model", "yolor_p6",
        "--epochs", "3", "--batch-size", "4", "--image-size", "64",
        "--width-multiplier", "0.125", "--depth-multiplier", "0.33",
        "--steps-per-epoch", "2", *extra,
    ]


def test_killed_run_resumes_at_the_same_epoch_and_step(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(
        _train_command(tiny_dataset, out), cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    state_path = out / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if state_path.exists() and json.loads(state_path.read_text())["epoch"] >= 1:
            break
        time.sleep(0.5)
    assert first.poll() is None, "training ended before it could be killed:\n" + first.stdout.read()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_state = json.loads(state_path.read_text())
    assert killed_state["epoch"] in (1, 2)
    assert killed_state["step"] == 2 * killed_state["epoch"]

    resumed = subprocess.run(
        _train_command(tiny_dataset, out, "--resume"), cwd=REPO, env=env,
        capture_output=True, text=True, timeout=900,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert f"Resuming {out} at epoch {killed_state['epoch']}, step {killed_state['step']}" in output
    final_state = json.loads(state_path.read_text())
    assert final_state["epoch"] == 3
    # The optimizer step continued from the checkpoint instead of restarting.
    assert final_state["step"] == 6
    assert "val_mAP" in final_state["logs"]
    assert (out / "model.keras").exists()
    epochs_logged = [line.split(",")[0] for line in (out / "results.csv").read_text().splitlines()[1:]]
    assert epochs_logged[-1] == "2"
