"""Callbacks of a YOLOR training run: atomic checkpoints and COCO evaluation."""

import json
import os

import keras

from yolor_keras.training.distribute import is_chief
from yolor_keras.training.ema import ema_weights

CHECKPOINT_NAME = "last.keras"
STATE_NAME = "state.json"


def atomic_write(path, write):
    """Calls ``write(temporary_path)`` and renames the result onto ``path``.

    A crash mid-write leaves the previous file intact: the rename is atomic
    on POSIX file systems.
    """
    directory, name = os.path.split(os.path.abspath(path))
    # Keep the extension last: Keras picks the format from it.
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_state(directory):
    """The saved training state of a run directory, or None."""
    path = os.path.join(directory, STATE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the task (weights, optimizer and EMA state) after every epoch.

    ``last.keras`` holds everything `--resume` needs; ``state.json`` records
    the epoch, the batch step and the optimizer update count it was taken at,
    and the epoch's logs. Both
    are written to a temporary file and renamed, so a killed run never leaves
    a half-written checkpoint. Only the chief worker writes.

    Args:
        directory: the run directory.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief():
            return
        os.makedirs(self.directory, exist_ok=True)
        atomic_write(os.path.join(self.directory, CHECKPOINT_NAME), self.model.save)
        optimizer = self.model.optimizer
        # `iterations` counts optimizer updates; with gradient accumulation
        # the batch counter (what the schedules run on) is `_iterations`.
        batches = getattr(optimizer, "_iterations", optimizer.iterations)
        state = {
            "epoch": epoch + 1,
            "step": int(keras.ops.convert_to_numpy(batches)),
            "updates": int(keras.ops.convert_to_numpy(optimizer.iterations)),
            "logs": {key: float(value) for key, value in (logs or {}).items()},
        }

        def write_state(path):
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(state, handle, indent=2)

        atomic_write(os.path.join(self.directory, STATE_NAME), write_state)


class COCOEvaluationCallback(keras.callbacks.Callback):
    """COCO mAP on a validation set with the EMA weights, every few epochs.

    Adds ``val_mAP`` and ``val_mAP50`` to the epoch logs (so `EpochCheckpoint`,
    `CSVLogger` and the history see them).

    Args:
        dataset: evaluation batches from `build_dataset(..., training=False)`.
        info: their `DatasetInfo`.
        interval: evaluate every this many epochs (and after the last one).
        verbose: show the evaluation progress bar.
    """

    def __init__(self, dataset, info, interval=1, verbose=True):
        super().__init__()
        self.dataset = dataset
        self.info = info
        self.interval = max(int(interval), 1)
        self.verbose = verbose
        self.last_metrics = None

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = self.params.get("epochs") if self.params else None
        stopping = getattr(self.model, "stop_training", False)
        if (epoch + 1) % self.interval and epoch + 1 != last_epoch and not stopping:
            return
        from yolor_keras.evaluation.evaluate_detector import evaluate_detector

        with ema_weights(self.model):
            metrics = evaluate_detector(self.model, self.dataset, self.info, verbose=self.verbose)
        self.last_metrics = metrics
        if logs is not None:
            logs["val_mAP"] = metrics["mAP"]
            logs["val_mAP50"] = metrics["mAP50"]
        if self.verbose:
            print(f"Epoch {epoch + 1}: val mAP@.5:.95 {metrics['mAP']:.4f}, mAP@.5 {metrics['mAP50']:.4f}")


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of the first epoch past a time budget.

    Place it before `COCOEvaluationCallback`, which then evaluates that last
    epoch.

    Args:
        minutes: the budget, counted from the start of `fit`.
    """

    def __init__(self, minutes):
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.start = None

    def on_train_begin(self, logs=None):
        import time

        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import time

        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True
