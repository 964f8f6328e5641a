"""Training checkpoints: one folder per checkpoint, a pointer, rotation, consistency checks, --out safety."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from yolor_keras.training.callbacks import CheckpointError
from yolor_keras.training.callbacks import load_checkpoint
from yolor_keras.training.callbacks import optimizer_counters
from yolor_keras.training.callbacks import read_pointer
from yolor_keras.training.callbacks import resolve_checkpoint
from yolor_keras.training.callbacks import save_checkpoint
from yolor_keras.training.trainer import RunDirectoryError
from yolor_keras.training.trainer import prepare_run_directory

REPO = pathlib.Path(__file__).resolve().parents[2]


def take_steps(task, count, seed):
    """``count`` optimizer updates with random gradients: momentum, EMA and counters move."""
    rng = np.random.default_rng(seed)
    variables = task.trainable_variables
    for _ in range(count):
        grads = [rng.normal(scale=0.1, size=v.shape).astype("float32") for v in variables]
        task.optimizer.apply(grads, variables)


def state_of(task, epoch):
    step, updates = optimizer_counters(task.optimizer)
    return {"epoch": epoch, "step": step, "updates": updates, "logs": {}}


def values(variables):
    return {variable.path: np.array(variable) for variable in variables}


@pytest.fixture(scope="module")
def task(compiled_tiny_task):
    return compiled_tiny_task(seed=0)


def test_checkpoints_rotate_keep_the_previous_and_chosen_ones_and_load_back(task, tmp_path):
    run = tmp_path / "run"
    names = []
    for epoch in range(1, 5):
        take_steps(task, 1, seed=epoch)
        save_checkpoint(task, state_of(task, epoch), str(run), keep_epochs=[0])
        names.append(sorted(os.listdir(run / "checkpoints")))
        pointer = read_pointer(str(run))
        assert pointer["latest"] == f"epoch_{epoch - 1:03d}"
        assert pointer["previous"] == (f"epoch_{epoch - 2:03d}" if epoch > 1 else None)
    # Latest and previous always; epoch index 0 kept for good; 1 rotated out.
    assert names[-1] == ["epoch_000", "epoch_002", "epoch_003"]
    assert names[2] == ["epoch_000", "epoch_001", "epoch_002"]
    assert sorted(os.listdir(run)) == ["checkpoint.json", "checkpoints"]

    restored, state = load_checkpoint(str(run / "checkpoints" / "epoch_003"))
    assert (state["epoch"], state["step"], state["updates"]) == (4, 4, 4)
    for name, value in values(task.weights).items():
        np.testing.assert_array_equal(values(restored.weights)[name], value, err_msg=name)
    ours, theirs = values(task.optimizer.variables), values(restored.optimizer.variables)
    assert set(ours) == set(theirs)
    assert any("momentum" in name for name in ours) and any("ema" in name for name in ours)
    for name in ours:
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)
    assert resolve_checkpoint(str(run)) == str(run / "checkpoints" / "epoch_003")
    assert resolve_checkpoint(str(run / "checkpoints" / "epoch_000")).endswith("epoch_000")
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        resolve_checkpoint(str(tmp_path))


def test_a_state_that_disagrees_with_the_optimizer_step_is_refused(task, tmp_path):
    take_steps(task, 1, seed=9)
    folder = pathlib.Path(save_checkpoint(task, state_of(task, 1), str(tmp_path)))
    state = json.loads((folder / "state.json").read_text())
    load_checkpoint(str(folder))  # consistent: loads
    state["step"] += 1
    state["updates"] += 1
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(
        CheckpointError,
        match=r"optimizer restored from task.keras is at batch step \d+ .* records step",
    ):
        load_checkpoint(str(folder))


def test_a_truncated_task_archive_is_refused(task, tmp_path):
    folder = pathlib.Path(save_checkpoint(task, state_of(task, 1), str(tmp_path)))
    archive = folder / "task.keras"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="task.keras: not a complete Keras archive"):
        load_checkpoint(str(folder))


def test_new_run_refuses_a_non_empty_out_unless_resume_or_exist_ok(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "epoch_000").mkdir(parents=True)
    (out / "checkpoint.json").write_text('{"latest": "epoch_000", "previous": null}')
    (out / "results.csv").write_text("epoch,loss\n0,1.0\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        RunDirectoryError,
        match=r"is not empty \(checkpoint.json, checkpoints, notes.txt, results.csv\)",
    ):
        prepare_run_directory(str(out))
    prepare_run_directory(str(out), resume=True)  # there is a checkpoint to resume
    prepare_run_directory(str(out), exist_ok=True)
    # Only the previous run's artefacts are cleared.
    assert sorted(os.listdir(out)) == ["notes.txt"]
    with pytest.raises(RunDirectoryError, match="Nothing to resume"):
        prepare_run_directory(str(out), resume=True)
    prepare_run_directory(str(tmp_path / "absent"))  # a new directory is fine


def test_cli_refuses_a_non_empty_out_with_a_clear_error_and_no_traceback(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.json").write_text('{"latest": "epoch_004", "previous": "epoch_003"}')
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolor_keras.cli",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"yolor train: error: The output directory {out} is not empty (checkpoint.json)"
        in result.stderr
    )
    assert "--resume" in result.stderr and "--exist-ok" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert (out / "checkpoint.json").read_text().startswith('{"latest": "epoch_004"')


def test_results_log_keeps_columns_aligned_and_replaces_epochs_trained_again(tmp_path):
    from yolor_keras.training.callbacks import ResultsLog

    path = tmp_path / "results.csv"
    log = ResultsLog(str(path))
    log.on_epoch_end(0, {"loss": 3.0, "box": 0.5})
    log.on_epoch_end(1, {"loss": 2.0, "box": 0.4})
    log.on_epoch_end(2, {"loss": 1.5, "box": 0.3})
    # A run resumed from the checkpoint after epoch 1 trains epoch 2 again,
    # in a new process, and evaluates it.
    ResultsLog(str(path)).on_epoch_end(
        2, {"loss": 1.25, "box": 0.25, "val_mAP": 0.125, "val_mAP50": 0.5}
    )
    assert path.read_text().splitlines() == [
        "epoch,box,loss,val_mAP,val_mAP50",
        "0,0.5,3.0,,",
        "1,0.4,2.0,,",
        "2,0.25,1.25,0.125,0.5",
    ]
