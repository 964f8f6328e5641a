"""`TimeLimit`: stops at the end of the first epoch past its budget.

A fake clock (``time.monotonic`` replaced) makes the timing exact: the
reference is the budget arithmetic by hand. The fit runs with the trainer's
callback order (time limit, then checkpoint), so the epoch that stops the
run is also checkpointed, and that checkpoint resumes where the run stopped.
"""

import time

import keras
import numpy as np
import pytest

from yolor_keras.training.callbacks import EpochCheckpoint
from yolor_keras.training.callbacks import TimeLimit
from yolor_keras.training.callbacks import load_checkpoint
from yolor_keras.training.callbacks import read_pointer


class FakeClock:
    """time.monotonic that moves on only when told to."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


class Tick(keras.callbacks.Callback):
    """Each epoch takes ``seconds`` of fake time (before the time limit looks)."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock = clock
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")


def test_budget_is_counted_from_the_first_fit_and_checked_at_epoch_ends(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock)
    limit = TimeLimit(minutes=1.5)  # 90 s
    limit.set_model(_model())
    limit.on_train_begin()
    assert limit.start == 1000.0
    clock.now = 1089.9
    limit.on_epoch_end(0)
    assert not limit.stopped and not limit.model.stop_training
    # A run calling `fit` once per epoch: the budget keeps its first start.
    clock.now = 1089.95
    limit.on_train_begin()
    assert limit.start == 1000.0
    clock.now = 1090.0  # exactly the budget: stop
    limit.on_epoch_end(1)
    assert limit.stopped and limit.model.stop_training


def test_a_fit_past_its_budget_stops_and_leaves_a_resumable_checkpoint(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock)
    model = _model()
    x, y = _data()
    # Each epoch takes 40 s; budget 1 minute: after epoch 0 (40 s) go on,
    # after epoch 1 (80 s) stop. Epochs 2..4 never run.
    limit = TimeLimit(minutes=1)
    callbacks = [Tick(clock, 40.0), limit, EpochCheckpoint(str(tmp_path))]
    history = model.fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0, callbacks=callbacks)
    assert history.epoch == [0, 1]
    assert limit.stopped
    # The checkpoint of the epoch that stopped the run was written.
    assert read_pointer(str(tmp_path)) == {"latest": "epoch_001", "previous": "epoch_000"}
    folder = tmp_path / "checkpoints" / "epoch_001"
    task, state = load_checkpoint(str(folder))
    assert (state["epoch"], state["step"], state["updates"]) == (2, 4, 4)  # 2 epochs of 2 batches
    for restored, trained in zip(task.weights, model.weights):
        np.testing.assert_array_equal(np.array(restored), np.array(trained))

    # Resuming continues at epoch 2 and ends where an uninterrupted run does.
    task.fit(x, y, batch_size=4, epochs=5, initial_epoch=state["epoch"], shuffle=False, verbose=0)
    straight = _model()
    straight.fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0)
    assert int(task.optimizer.iterations) == int(straight.optimizer.iterations) == 10
    for resumed, uninterrupted in zip(task.weights, straight.weights):
        np.testing.assert_allclose(np.array(resumed), np.array(uninterrupted), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_yolor_training_run_stops_past_its_budget_and_resumes(tmp_path):
    """The trainer end to end: a zero budget stops after epoch 0, with its
    checkpoint, results row and EMA model written; resuming trains the rest."""
    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.training.trainer import train

    data = tmp_path / "data"
    generate_dataset(str(data), num_train=8, num_val=2, image_size=64, seed=1)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "train: {model: yolor_p6, image_size: 64, epochs: 3, batch_size: 4, "
        "nominal_batch_size: 4, eval_interval: 100}\n"
        "optimizer: {warmup_epochs: 0.0}\n"
    )
    out = tmp_path / "run"
    common = dict(
        recipe=str(recipe), width_multiplier=0.125, depth_multiplier=0.33,
        steps_per_epoch=2, val_data=False, verbose=0,
    )  # fmt: skip
    first = train(str(data), str(out), time_limit_minutes=0, **common)
    assert first.history.epoch == [0]
    assert read_pointer(str(out))["latest"] == "epoch_000"
    assert (out / "model.keras").is_file()
    assert [line.split(",")[0] for line in (out / "results.csv").read_text().splitlines()[1:]] == [
        "0"
    ]
    _, state = load_checkpoint(str(out / "checkpoints" / "epoch_000"))
    assert (state["epoch"], state["step"]) == (1, 2)

    resumed = train(str(data), str(out), resume=True, **common)
    assert resumed.history.epoch == [1, 2]
    assert read_pointer(str(out))["latest"] == "epoch_002"
