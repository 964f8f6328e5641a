"""A ``*_paper`` preset's task trains with the paper branch's neighbour rule."""

import keras
import numpy as np
import pytest

from yolor_keras.losses import YOLORLoss
from yolor_keras.tasks import YOLORObjectDetector

IMAGE = 128


def _detector(name):
    return YOLORObjectDetector.from_preset(
        name, num_classes=3, width_multiplier=0.125, depth_multiplier=0.33, image_size=IMAGE
    )


def _batch(detector):
    rng = np.random.default_rng(0)
    raw = [
        rng.normal(size=(1, IMAGE // s, IMAGE // s, 3, 8)).astype("float32")
        for s in detector.strides
    ]
    # Centre x = 16 px lies exactly on a cell edge at strides 8 and 16: the
    # paper rule then also assigns the right "neighbour" (the centre cell a
    # second time), the main rule does not.
    labels = {
        "boxes": np.array([[[6.0, 6.0, 26.0, 34.0]]], "float32"),
        "classes": np.array([[1]], "int32"),
    }
    return labels, raw


@pytest.mark.parametrize("preset, rule", [("yolor_p6_paper", "paper"), ("yolor_p6", "main")])
def test_task_takes_the_rule_of_its_preset_branch(preset, rule):
    detector = _detector(preset)
    task = detector
    task.compile(loss_scale=1.0)
    assert task.head_losses["detection"].neighbor_rule == rule
    labels, raw = _batch(detector)
    value = float(task.compute_loss(y=labels, y_pred=raw))
    expected = {
        name: float(
            keras.ops.mean(YOLORLoss.from_detector(detector, neighbor_rule=name)(labels, raw))
        )
        for name in ("main", "paper")
    }
    # The placement is one where the two rules give different losses.
    assert abs(expected["main"] - expected["paper"]) > 1e-4 * expected["main"]
    assert value == pytest.approx(expected[rule], rel=1e-6)
    # An explicit rule wins over the branch, and survives the compile config.
    other = "main" if rule == "paper" else "paper"
    task.compile(loss_scale=1.0, neighbor_rule=other)
    assert float(task.compute_loss(y=labels, y_pred=raw)) == pytest.approx(
        expected[other], rel=1e-6
    )
    assert task.get_compile_config()["loss_settings"]["neighbor_rule"] == other
