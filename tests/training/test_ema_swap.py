"""The EMA weights are what is evaluated and saved; training keeps the raw ones.

A few `YOLORSGD` updates are applied to a tiny detector task (random
gradients, and new BatchNorm statistics before each update, as a forward
pass in training mode would leave them). The reference EMA is computed here
in NumPy from the raw values recorded after each update, by the official
formula ``d = decay * (1 - exp(-updates / ramp))``,
``ema = d * ema + (1 - d) * w``, starting from the weights before the first
update (a short ramp, 2 updates instead of 2000, so that the EMA differs
clearly from the raw weights after a few updates).
"""

import math

import keras
import numpy as np
import pytest

from yolor_keras.evaluation import evaluation_loop
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import YOLORSGD
from yolor_keras.training.callbacks import EvaluationCallback
from yolor_keras.training.ema import ema_weights
from yolor_keras.training.trainer import save_ema_detector

DECAY, RAMP, UPDATES = 0.9999, 2.0, 3


def _values(variables):
    return [np.array(variable) for variable in variables]


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(4)
    task = YOLORObjectDetector.from_preset(
        "yolor_p6", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33
    )
    task.compile(
        optimizer=YOLORSGD(learning_rate=0.05, momentum=0.9, ema_decay=DECAY, ema_ramp=RAMP)
    )
    optimizer = task.optimizer
    weights = list(task.trainable_variables)
    statistics = [statistic for statistic, _ in optimizer.statistic_pairs()]
    assert statistics, "the task registers its BatchNorm statistics"
    ema_weights_ref, ema_statistics_ref = _values(weights), _values(statistics)
    rng = np.random.default_rng(0)
    for update in range(1, UPDATES + 1):
        # What a training-mode forward pass does to the statistics.
        for statistic in statistics:
            shift = rng.normal(size=statistic.shape) * 0.3
            value = (
                np.abs(np.array(statistic) + shift)
                if "variance" in statistic.path
                else np.array(statistic) + shift
            )
            statistic.assign(value.astype("float32"))
        gradients = [rng.normal(size=w.shape).astype("float32") for w in weights]
        optimizer.apply_gradients(zip(gradients, weights))
        decay = DECAY * (1.0 - math.exp(-update / RAMP))
        ema_weights_ref = [
            decay * e + (1 - decay) * w for e, w in zip(ema_weights_ref, _values(weights))
        ]
        ema_statistics_ref = [
            decay * e + (1 - decay) * s for e, s in zip(ema_statistics_ref, _values(statistics))
        ]
    assert int(optimizer.iterations) == UPDATES
    expected = {id(v): e for v, e in zip(weights, ema_weights_ref)}
    expected.update({id(v): e for v, e in zip(statistics, ema_statistics_ref)})
    return task, expected


def _assert_ema(variables, expected):
    checked = 0
    for variable in variables:
        if id(variable) in expected:
            np.testing.assert_allclose(
                np.array(variable),
                expected[id(variable)],
                rtol=1e-5,
                atol=1e-6,
                err_msg=variable.path,
            )
            checked += 1
    return checked


def test_the_optimizers_ema_is_the_official_formula(trained):
    task, expected = trained
    optimizer = task.optimizer
    weights = list(task.trainable_variables)
    for variable, average in zip(weights, optimizer.ema_values(weights)):
        np.testing.assert_allclose(np.array(average), expected[id(variable)], rtol=1e-5, atol=1e-6)
    for statistic, average in optimizer.statistic_pairs():
        np.testing.assert_allclose(np.array(average), expected[id(statistic)], rtol=1e-5, atol=1e-6)
    # The EMA is not trivially the raw weights.
    gaps = [np.abs(np.array(v) - expected[id(v)]).max() for v in weights]
    assert max(gaps) > 1e-2


def test_evaluation_sees_the_ema_and_training_gets_its_raw_weights_back(trained, monkeypatch):
    task, expected = trained
    variables = list(task.weights)
    raw = _values(variables)
    seen = {}

    def spy(model, dataset, info, verbose=True, **kwargs):
        seen["values"] = _values(model.weights)
        return {"mAP": 0.25, "mAP50": 0.5, "mAP75": 0.125}

    monkeypatch.setattr(evaluation_loop, "evaluate", spy)
    callback = EvaluationCallback(dataset=None, info=None, verbose=False, epochs=1)
    callback.set_model(task)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {"val_mAP": 0.25, "val_mAP50": 0.5}
    # During evaluation: every weight and statistic was its EMA value.
    held = [v for v in variables if id(v) in expected]
    assert len(held) == len(variables)  # nothing in the detector escapes the EMA
    for variable, value in zip(variables, seen["values"]):
        np.testing.assert_allclose(
            value, expected[id(variable)], rtol=1e-5, atol=1e-6, err_msg=variable.path
        )
    # Afterwards: the raw values, bit for bit.
    for variable, value in zip(variables, raw):
        np.testing.assert_array_equal(np.array(variable), value, err_msg=variable.path)


def test_raw_weights_come_back_when_evaluation_fails(trained):
    task, expected = trained
    raw = _values(task.weights)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        with ema_weights(task):
            assert _assert_ema(task.weights, expected) == len(raw)
            raise RuntimeError("evaluation failed")
    for variable, value in zip(task.weights, raw):
        np.testing.assert_array_equal(np.array(variable), value)


def test_saved_detector_holds_the_ema_values(trained, tmp_path):
    task, expected = trained
    raw = _values(task.weights)
    path = save_ema_detector(task, str(tmp_path / "model.keras"))
    saved = keras.saving.load_model(path)
    assert isinstance(saved, YOLORObjectDetector)
    assert [v.path for v in saved.weights] == [v.path for v in task.weights]
    for original, restored in zip(task.weights, saved.weights):
        np.testing.assert_allclose(
            np.array(restored), expected[id(original)], rtol=1e-5, atol=1e-6, err_msg=original.path
        )
    # Training goes on from the raw values.
    for variable, value in zip(task.weights, raw):
        np.testing.assert_array_equal(np.array(variable), value)
