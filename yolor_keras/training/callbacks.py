"""Callbacks of a YOLOR training run: atomic checkpoints and evaluation of every head.

A run directory holds its checkpoints as folders::

    run/
      checkpoint.json          names the latest and the previous checkpoint
      checkpoints/
        epoch_004/             after epoch index 4 (5 epochs done)
          task.keras           weights, optimizer state (momentum, EMA,
                               gradient accumulators, counters)
          state.json           epoch, batch step, update count, logs
        epoch_005/

Each checkpoint folder is written whole into a temporary sibling, flushed to
disk and renamed into place (`yolor_keras.atomic`); only then is
``checkpoint.json`` replaced (atomically too) to name it, and only after
that are checkpoints no longer needed deleted. A crash at any point leaves
``checkpoint.json`` naming a complete checkpoint. The latest and the previous
checkpoints are kept, and those of the epochs listed in ``keep_epochs``.
Folders are named by the 0-based index of their last epoch, as the official
``last_298.pt`` / ``epoch_424.pt`` are.
"""

import csv
import json
import os
import shutil
import zipfile

import keras

from yolor_keras.atomic import write_directory_atomically
from yolor_keras.atomic import write_file_atomically
from yolor_keras.training.distribute import is_chief
from yolor_keras.training.ema import ema_weights

POINTER_NAME = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
TASK_NAME = "task.keras"
STATE_NAME = "state.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or inconsistent."""


def checkpoint_name(epoch_index):
    """The folder name of the checkpoint taken after 0-based epoch ``epoch_index``."""
    return f"epoch_{int(epoch_index):03d}"


def optimizer_counters(optimizer):
    """(batch step, update count) of a Keras optimizer.

    ``iterations`` counts optimizer updates; with gradient accumulation the
    batch counter (what the schedules run on) is ``_iterations``.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    batches = getattr(optimizer, "_iterations", optimizer.iterations)
    return (
        int(keras.ops.convert_to_numpy(batches)),
        int(keras.ops.convert_to_numpy(optimizer.iterations)),
    )


def _write_json(path, data):
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)

    write_file_atomically(path, write)


def read_pointer(run_dir):
    """The parsed ``checkpoint.json`` of a run directory, or None."""
    path = os.path.join(run_dir, POINTER_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            pointer = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint pointer ({error}).") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("latest"), str):
        raise CheckpointError(f'{path}: expected {{"latest": NAME, ...}}, got {pointer!r}.')
    return pointer


def read_state(checkpoint_dir):
    """The ``state.json`` of a checkpoint folder, checked for its fields."""
    path = os.path.join(checkpoint_dir, STATE_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint_dir}: not a checkpoint (no {STATE_NAME}).") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({error}).") from None
    for key in ("epoch", "step", "updates"):
        if not isinstance(state.get(key), int) or state[key] < 0:
            raise CheckpointError(
                f"{path}: `{key}` must be an integer >= 0, got {state.get(key)!r}."
            )
    return state


def resolve_checkpoint(path):
    """The checkpoint folder that ``path`` names.

    Args:
        path: a checkpoint folder (``run/checkpoints/epoch_298``), or a run
            directory, meaning its latest checkpoint.
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, STATE_NAME)):
        return path
    pointer = read_pointer(path)
    if pointer is None:
        raise CheckpointError(
            f"{path}: neither a checkpoint folder (no {STATE_NAME}) nor a run directory "
            f"(no {POINTER_NAME})."
        )
    return os.path.join(path, CHECKPOINTS_DIR, pointer["latest"])


def check_checkpoint_folder(folder):
    """Raises `CheckpointError` unless ``folder`` holds a complete checkpoint.

    Reads the state and tests the archive's CRCs, which catches a truncated
    or corrupted ``task.keras`` without building the model.
    """
    read_state(folder)
    archive = os.path.join(folder, TASK_NAME)
    try:
        with zipfile.ZipFile(archive) as handle:
            names = set(handle.namelist())
            broken = handle.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{archive}: not a complete Keras archive ({error}).") from None
    if broken is not None or not {"config.json", "model.weights.h5"} <= names:
        raise CheckpointError(
            f"{archive}: incomplete Keras archive (bad member {broken!r}, members {sorted(names)})."
        )


def load_checkpoint(folder):
    """Loads a checkpoint folder: (task, state), checked for consistency.

    The optimizer's counters must agree with ``state.json``: Keras skips
    optimizer variables that do not match (with only a warning), which would
    otherwise silently restart the optimizer, its schedules and the EMA.
    """
    check_checkpoint_folder(folder)
    state = read_state(folder)
    task = keras.saving.load_model(os.path.join(folder, TASK_NAME))
    optimizer = getattr(task, "optimizer", None)
    if optimizer is None:
        raise CheckpointError(f"{folder}: {TASK_NAME} holds no optimizer state.")
    step, updates = optimizer_counters(optimizer)
    if (step, updates) != (state["step"], state["updates"]):
        raise CheckpointError(
            f"{folder}: the optimizer restored from {TASK_NAME} is at batch step {step} and "
            f"update {updates}, but {STATE_NAME} records step {state['step']} and update "
            f"{state['updates']}; the checkpoint is inconsistent and cannot be resumed."
        )
    return task, state


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the task (weights, optimizer and EMA state) after every epoch.

    Each checkpoint is one folder (`TASK_NAME` and `STATE_NAME`) written
    atomically; ``checkpoint.json`` then names it. The previous checkpoint is
    kept, and those after the epochs in ``keep_epochs``. Only the chief
    worker writes.

    Args:
        directory: the run directory.
        keep_epochs: 0-based epoch indices whose checkpoints are kept for
            good (the official ``epoch_424.pt``).
        extra_state: more JSON values to record in every ``state.json``
            (the run's seed and stage).
    """

    def __init__(self, directory, keep_epochs=(), extra_state=None):
        super().__init__()
        self.directory = directory
        self.keep_epochs = {int(epoch) for epoch in keep_epochs}
        self.extra_state = dict(extra_state or {})

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief():
            return
        step, updates = optimizer_counters(self.model.optimizer)
        state = {
            "epoch": epoch + 1,
            "step": step,
            "updates": updates,
            "keep_epochs": sorted(self.keep_epochs),
            **self.extra_state,
            "logs": {key: float(value) for key, value in (logs or {}).items()},
        }
        save_checkpoint(self.model, state, self.directory, self.keep_epochs)


def save_checkpoint(task, state, run_dir, keep_epochs=()):
    """Writes the checkpoint of ``state["epoch"]`` epochs and points to it.

    Returns:
        The checkpoint folder.
    """
    name = checkpoint_name(state["epoch"] - 1)
    root = os.path.join(run_dir, CHECKPOINTS_DIR)
    os.makedirs(root, exist_ok=True)

    def write(folder):
        task.save(os.path.join(folder, TASK_NAME))
        with open(os.path.join(folder, STATE_NAME), "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2)

    folder = write_directory_atomically(
        os.path.join(root, name), write, check=check_checkpoint_folder
    )
    pointer = read_pointer(run_dir)
    previous = pointer["latest"] if pointer and pointer["latest"] != name else None
    _write_json(os.path.join(run_dir, POINTER_NAME), {"latest": name, "previous": previous})
    # Only the checkpoint that just left the (latest, previous) pair is
    # deleted, so checkpoints kept by an earlier invocation stay.
    dropped = pointer.get("previous") if pointer else None
    keep = {name, previous} | {checkpoint_name(epoch) for epoch in keep_epochs}
    if dropped and dropped not in keep and os.path.basename(dropped) == dropped:
        shutil.rmtree(os.path.join(root, dropped), ignore_errors=True)
    return folder


class ResultsLog(keras.callbacks.Callback):
    """Keeps ``results.csv``: one row per epoch, rewritten atomically.

    The columns are fixed by the first row written (the epoch, the training
    losses, then the evaluation scores, empty where an epoch was not
    evaluated), so rows from several `fit` calls and from a resumed run line
    up. A resumed run replaces the rows of the epochs it trains again.

    Args:
        path: the CSV file.
        score_columns: the evaluation scores' columns (`score_columns` of
            the task's heads); by default the detector's.
    """

    def __init__(self, path, score_columns=("val_mAP", "val_mAP50")):
        super().__init__()
        self.path = path
        self.score_columns = list(score_columns)

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief():
            return
        logs = dict(logs or {})
        header, rows = None, []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.reader(handle) if row]
            header, rows = (rows[0], rows[1:]) if rows else (None, [])
        if header is None:
            header = (
                ["epoch"] + sorted(k for k in logs if not k.startswith("val_")) + self.score_columns
            )
        rows = [row for row in rows if row[0].isdigit() and int(row[0]) < epoch]
        values = {"epoch": epoch, **logs}
        rows.append([str(values[key]) if key in values else "" for key in header])

        def write(temporary):
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)

        write_file_atomically(self.path, write)


# Epoch-log names of the evaluation scores (`yolor_keras.evaluation.evaluate`).
EVALUATION_LOGS = {
    "mAP": "val_mAP",
    "mAP50": "val_mAP50",
    "label_mAP": "val_label_mAP",
    "label_F1": "val_label_F1",
    "recall@1": "val_recall_at_1",
}


# The scores of each head, as `yolor_keras.evaluation.evaluate` names them.
HEAD_SCORES = {
    "detection": ("mAP", "mAP50"),
    "classification": ("label_mAP", "label_F1"),
    "embedding": ("recall@1",),
}


def score_columns(head_names):
    """The epoch-log names of the evaluation scores of a task with these heads."""
    return [EVALUATION_LOGS[score] for head in head_names for score in HEAD_SCORES[head]]


class EvaluationCallback(keras.callbacks.Callback):
    """Scores every head of the task with the EMA weights, every few epochs.

    With `yolor_keras.evaluation.evaluate`: COCO mAP for detection, label
    mAP and F1 for classification, recall@1 for embedding. Adds them to the
    epoch logs as `EVALUATION_LOGS` names them (``val_mAP``, ``val_mAP50``,
    ...), so `EpochCheckpoint`, `ResultsLog` and the history see them.

    Args:
        dataset: evaluation batches from `build_dataset(..., training=False)`
            (with the extra targets of the task's other heads).
        info: their `DatasetInfo`.
        interval: evaluate every this many epochs (and after the last one).
        verbose: show the evaluation progress bar.
        epochs: the run's total epochs; defaults to those of the `fit` call
            (a run may call `fit` once per epoch).
    """

    def __init__(self, dataset, info, interval=1, verbose=True, epochs=None):
        super().__init__()
        self.dataset = dataset
        self.info = info
        self.interval = max(int(interval), 1)
        self.verbose = verbose
        self.epochs = epochs
        self.last_metrics = None

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = self.epochs
        if last_epoch is None:
            last_epoch = self.params.get("epochs") if self.params else None
        stopping = getattr(self.model, "stop_training", False)
        if (epoch + 1) % self.interval and epoch + 1 != last_epoch and not stopping:
            return
        from yolor_keras.evaluation import evaluation_loop

        with ema_weights(self.model):
            metrics = evaluation_loop.evaluate(
                self.model, self.dataset, self.info, verbose=self.verbose
            )
        self.last_metrics = metrics
        scores = {
            EVALUATION_LOGS[key]: float(metrics[key]) for key in EVALUATION_LOGS if key in metrics
        }
        if logs is not None:
            logs.update(scores)
        if self.verbose:
            shown = ", ".join(f"{key[4:]} {value:.4f}" for key, value in scores.items())
            print(f"Epoch {epoch + 1}: {shown}")


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of the first epoch past a time budget.

    Place it before `EvaluationCallback`, which then evaluates that last
    epoch.

    Args:
        minutes: the budget, counted from the start of the first `fit`
            (a run may call `fit` once per epoch).
    """

    def __init__(self, minutes):
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.start = None
        self.stopped = False

    def on_train_begin(self, logs=None):
        import time

        if self.start is None:
            self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import time

        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True
            self.stopped = True


class RunProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, showing the run's epoch count when `fit` runs one epoch at a time."""

    def __init__(self, epochs):
        super().__init__()
        self.run_epochs = int(epochs)

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs
