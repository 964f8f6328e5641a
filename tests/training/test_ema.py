"""The EMA covers BatchNorm statistics, as the official `ModelEMA` does.

The official EMA averages every floating entry of the state dict, so the
evaluated and saved model carries averaged running means and variances. The
reference here is that closed form, computed from the raw statistics
recorded after every batch.
"""

import math

import keras
import numpy as np
import pytest

from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import YOLORSGD
from yolor_keras.training.ema import average_batchnorm_statistics
from yolor_keras.training.ema import ema_weights

RAMP = 2.0  # a short EMA ramp, so that the averages differ clearly from the raw values


def _official_accumulation(ni, nw, ratio):
    return max(1, np.interp(min(ni, nw), [0, nw], [1, ratio]).round())


class _Recorder(keras.callbacks.Callback):
    def __init__(self, layer, kernel):
        super().__init__()
        self.layer = layer
        self.kernel = kernel
        self.means, self.variances, self.kernels = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(np.array(self.layer.moving_mean))
        self.variances.append(np.array(self.layer.moving_variance))
        self.kernels.append(np.array(self.kernel))


@pytest.mark.parametrize("accumulation", [None, "official"])
def test_ema_of_batchnorm_statistics_is_the_closed_form_average(accumulation):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    bn = model.layers[2]
    kwargs = {}
    if accumulation == "official":
        # Accumulation 1, 2 (1.5 rounds to even), 2, ...: steps at ni = 0, 2, 4.
        kwargs = dict(
            gradient_accumulation_steps=2, accumulation_warmup_steps=2, accumulation_ratio=2.0
        )
    optimizer = YOLORSGD(learning_rate=0.1, momentum=0.0, ema_ramp=RAMP, **kwargs)
    model.compile(optimizer=optimizer, loss="mse")
    assert average_batchnorm_statistics(model) == 2
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(24, 4, 4, 2)) * 3 + 2).astype("float32")
    targets = rng.normal(size=(24, 3)).astype("float32")
    kernel = model.layers[1].kernel
    recorder = _Recorder(bn, kernel)
    average_kernel = np.array(kernel)  # the EMA starts as a copy of the model
    model.fit(
        images, targets, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder]
    )

    mean, variance = np.zeros(3), np.ones(3)
    updates = 0
    for ni in range(len(recorder.means)):
        if accumulation == "official" and ni % _official_accumulation(ni, 2, 2.0) != 0:
            continue
        updates += 1
        decay = 0.9999 * (1 - math.exp(-updates / RAMP))
        mean = decay * mean + (1 - decay) * recorder.means[ni]
        variance = decay * variance + (1 - decay) * recorder.variances[ni]
        average_kernel = decay * average_kernel + (1 - decay) * recorder.kernels[ni]
    assert updates == (6 if accumulation is None else 3)

    pairs = optimizer.statistic_pairs()
    assert [id(p[0]) for p in pairs] == [id(bn.moving_mean), id(bn.moving_variance)]
    np.testing.assert_allclose(np.array(pairs[0][1]), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(pairs[1][1]), variance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.array(optimizer.ema_values([kernel])[0]), average_kernel, rtol=1e-5, atol=1e-6
    )
    raw_mean, raw_variance = np.array(bn.moving_mean), np.array(bn.moving_variance)
    # Not trivially equal to the raw statistics.
    assert np.abs(raw_mean - mean).max() > 0.05
    with ema_weights(model):
        np.testing.assert_allclose(np.array(bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(bn.moving_variance), variance, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.array(bn.moving_mean), raw_mean)
    np.testing.assert_array_equal(np.array(bn.moving_variance), raw_variance)


def test_statistics_must_be_registered_before_the_optimizer_is_built():
    inputs = keras.Input((2,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(inputs))
    optimizer = YOLORSGD()
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="before the optimizer"):
        average_batchnorm_statistics(model)


@pytest.fixture(scope="module")
def tiny_task():
    keras.utils.set_random_seed(1)
    task = YOLORObjectDetector.from_preset(
        "yolor_csp", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33, image_size=64
    )
    task.compile(optimizer=YOLORSGD(learning_rate=1e-3, ema_ramp=RAMP), loss_scale=2.0)
    bn_layers = []
    for layer in task._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and layer not in bn_layers:
            bn_layers.append(layer)
    # Stand-ins for averages after training: distinct from the raw values.
    rng = np.random.default_rng(2)
    for _, average in task.optimizer.statistic_pairs():
        average.assign(rng.uniform(0.5, 2.0, size=average.shape).astype("float32"))
    return task, bn_layers


def test_detection_task_registers_every_batchnorm(tiny_task):
    task, bn_layers = tiny_task
    statistics = [pair[0] for pair in task.optimizer.statistic_pairs()]
    assert len(statistics) == 2 * len(bn_layers) > 0
    assert [id(v) for v in statistics[::2]] == [id(layer.moving_mean) for layer in bn_layers]
    assert [id(v) for v in statistics[1::2]] == [id(layer.moving_variance) for layer in bn_layers]
    # The averages are optimizer variables, so checkpoints carry them.
    held = {id(v) for v in task.optimizer.variables}
    assert all(id(average) in held for _, average in task.optimizer.statistic_pairs())
    # Loading a checkpoint compiles from its config: the averages exist
    # before the optimizer variables are read back, in the same order.
    again = YOLORObjectDetector.from_config(task.get_config())
    again.compile_from_config(task.get_compile_config())
    assert again.optimizer.built
    assert [v.shape for _, v in again.optimizer.statistic_pairs()] == [
        v.shape for _, v in task.optimizer.statistic_pairs()
    ]
    assert [v.path for v in again.optimizer.variables] == [v.path for v in task.optimizer.variables]


def test_saved_detector_has_averaged_statistics(tiny_task, tmp_path):
    from yolor_keras.training.trainer import save_ema_detector

    task, bn_layers = tiny_task
    averages = [np.array(average) for _, average in task.optimizer.statistic_pairs()]
    raw = [np.array(statistic) for statistic, _ in task.optimizer.statistic_pairs()]
    path = save_ema_detector(task, str(tmp_path / "model.keras"))
    saved = keras.saving.load_model(path)
    by_name = {
        layer.name: layer
        for layer in saved._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert len(by_name) == len(bn_layers)
    for index, layer in enumerate(bn_layers):
        saved_layer = by_name[layer.name]
        np.testing.assert_array_equal(np.array(saved_layer.moving_mean), averages[2 * index])
        np.testing.assert_array_equal(
            np.array(saved_layer.moving_variance), averages[2 * index + 1]
        )
    # Training goes on with the raw statistics.
    for (statistic, _), value in zip(task.optimizer.statistic_pairs(), raw):
        np.testing.assert_array_equal(np.array(statistic), value)


@pytest.mark.slow
def test_checkpoint_restores_averaged_statistics(tiny_task, tmp_path):
    task, _ = tiny_task
    averages = [np.array(average) for _, average in task.optimizer.statistic_pairs()]
    task.save(tmp_path / "last.keras")
    resumed = keras.saving.load_model(tmp_path / "last.keras")
    restored = [np.array(average) for _, average in resumed.optimizer.statistic_pairs()]
    assert len(restored) == len(averages)
    for value, average in zip(restored, averages):
        np.testing.assert_array_equal(value, average)


def test_official_accumulation_and_statistics_ema_under_mirrored_strategy():
    """Two replicas give the single-device weights, EMA weights and statistics."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).with_name("mirrored_accumulation.py")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # 20 batches, steps where ni % accumulate == 0 (accumulate 1, 1 (1.33),
    # 2 (1.67), 2, ...): ni = 0, 1, 2, 4, ..., 18.
    assert report["updates"] == [11, 11]
    assert report["ema_moved"] > 1e-2
    # Float32 reduction order differs between one and two devices; with
    # momentum 0.9 and lr 0.1 the same noise grows to ~1e-3 even without
    # accumulation, so the run uses a gentle rate.
    assert report["raw"] < 1e-4 and report["ema"] < 1e-5, report
