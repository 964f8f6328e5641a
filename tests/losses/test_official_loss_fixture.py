"""YOLORLoss against numbers produced by the official PyTorch YOLOR loss.

``fixtures/official_loss.npz`` was written by
``fixtures/make_official_loss_fixture.py``, which ran ``compute_loss`` of
both official branches (``main`` and ``paper``) on fixed raw outputs and
targets: P6 (four levels, a non-square input) and CSP (three levels, an image
without boxes) with three classes, P6 with one class (no class loss), and a
CSP case with the non-default options the official loss reads (focal loss,
positive weights, anchor threshold, gains, IoU ratio). Targets include boxes
centred exactly on cell edges and corners, on the border cells and repeated
boxes, where the branches' neighbour rules and the last-write objectness
target matter.

What is compared: the official ``(lbox, lobj, lcls, loss)`` are batch means
and must equal the batch means of `YOLORLoss.compute_components`; the official
returned loss is ``loss * batch`` and must equal the sum of the per-sample
values, and its gradient with respect to every raw output must equal ours.
No PyTorch is needed here.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.losses import YOLORLoss

FIXTURE = Path(__file__).parent / "fixtures" / "official_loss.npz"
HYP_KEYS = ("box", "obj", "cls", "anchor_t", "cls_pw", "obj_pw", "fl_gamma")
BRANCHES = ("main", "paper")
# Both sides compute in float32, so their differences are rounding, far below
# this. Loss values (O(1)) are compared relative to max(|value|, 1); the
# gradients, at most O(0.01) per logit, relative to the largest official
# gradient of the level, so that the bound is not loose for small numbers.
TOLERANCE = 1e-5


def _load():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


DATA = _load()
CASES = [str(name) for name in DATA["cases"]]


def _case(name):
    prefix = name + "__"
    return {key[len(prefix) :]: value for key, value in DATA.items() if key.startswith(prefix)}


def _labels(case):
    """Official (image, class, x, y, w, h) rows to our padded xyxy-pixel labels."""
    height, width = (float(v) for v in case["image_size"])
    batch = int(case["batch"])
    targets = case["targets"].astype("float64")
    counts = np.bincount(targets[:, 0].astype(int), minlength=batch)
    # One padding row more than needed, so padding is always exercised.
    boxes = np.zeros((batch, counts.max() + 1, 4), "float32")
    classes = np.full((batch, counts.max() + 1), -1, "int32")
    filled = np.zeros(batch, int)
    for image, cls, x, y, w, h in targets:
        b = int(image)
        cx, cy, bw, bh = x * width, y * height, w * width, h * height
        boxes[b, filled[b]] = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        classes[b, filled[b]] = int(cls)
        filled[b] += 1
    return {"boxes": boxes, "classes": classes}


def _loss(case, branch, **overrides):
    hyp = dict(zip(HYP_KEYS, (float(v) for v in case["hyp"])))
    kwargs = dict(
        anchors=case["anchors"],
        strides=[int(s) for s in case["strides"]],
        num_classes=int(case["num_classes"]),
        box_gain=hyp["box"],
        obj_gain=hyp["obj"],
        # Unscaled recipe value: YOLORLoss applies the official nc / 80 itself.
        cls_gain=hyp["cls"],
        anchor_t=hyp["anchor_t"],
        cls_pos_weight=hyp["cls_pw"],
        obj_pos_weight=hyp["obj_pw"],
        focal_gamma=hyp["fl_gamma"],
        iou_ratio=float(case["gr"]),
        neighbor_rule=branch,
    )
    kwargs.update(overrides)
    return YOLORLoss(**kwargs)


def _ours(case, loss):
    """Batch-mean parts, the summed loss, and its gradients in the official layout."""
    num_levels = len(case["strides"])
    # Official (B, A, H, W, C) -> ours (B, H, W, A, C).
    raw = [tf.Variable(np.transpose(case[f"raw{i}"], (0, 2, 3, 1, 4))) for i in range(num_levels)]
    with tf.GradientTape() as tape:
        parts = loss.compute_components(_labels(case), raw)
        total = tf.reduce_sum(parts["loss"])
    grads = tape.gradient(total, raw)
    means = np.array([float(tf.reduce_mean(parts[k])) for k in ("box", "obj", "cls", "loss")])
    grads = [np.transpose(g.numpy(), (0, 3, 1, 2, 4)) for g in grads]
    return means, float(total), grads


def _max_differences(case, branch, loss):
    means, total, grads = _ours(case, loss)
    official = case[f"{branch}_parts"].astype("float64")
    # Relative where the magnitude is above 1, absolute below.
    parts_diff = np.max(np.abs(means - official) / np.maximum(np.abs(official), 1.0))
    reference_total = float(case[f"{branch}_loss"])
    total_diff = abs(total - reference_total) / max(abs(reference_total), 1.0)
    grad_diff = max(
        float(np.max(np.abs(g - case[f"{branch}_grad{i}"])))
        / float(np.max(np.abs(case[f"{branch}_grad{i}"])))
        for i, g in enumerate(grads)
    )
    return parts_diff, total_diff, grad_diff


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("name", CASES)
def test_matches_the_official_loss(name, branch):
    case = _case(name)
    official = case[f"{branch}_parts"]
    # The fixture exercises every term (the one-class case has no class loss).
    assert official[0] > 0 and official[1] > 0
    assert (official[2] == 0) == (int(case["num_classes"]) == 1)
    # The returned official loss is the batch-mean total times the batch.
    assert float(case[f"{branch}_loss"]) == pytest.approx(
        float(official[3]) * int(case["batch"]), rel=1e-6
    )
    parts_diff, total_diff, grad_diff = _max_differences(case, branch, _loss(case, branch))
    assert parts_diff <= TOLERANCE, f"{name}/{branch}: loss parts differ by {parts_diff:.3g}"
    assert total_diff <= TOLERANCE, f"{name}/{branch}: returned loss differs by {total_diff:.3g}"
    assert grad_diff <= TOLERANCE, f"{name}/{branch}: gradients differ by {grad_diff:.3g}"


def test_the_branches_differ_on_the_fixture():
    # The edge-centred boxes make the two official branches disagree; if they
    # did not, the neighbour-rule comparison above would prove nothing.
    for name in CASES:
        case = _case(name)
        gap = np.max(np.abs(case["main_parts"] - case["paper_parts"]))
        assert gap > 10 * TOLERANCE, f"{name}: branches differ by only {gap:.3g}"


@pytest.mark.parametrize(
    "overrides",
    [{"neighbor_rule": "paper"}, {"box_gain": 0.05 * 1.001}, {"iou_ratio": 0.99}],
    ids=["wrong_neighbor_rule", "box_gain_off_by_0.1%", "iou_ratio_0.99"],
)
def test_the_comparison_catches_a_wrong_loss(overrides):
    # Small deviations from the official settings must be caught at the
    # tolerance the parity test uses, on the main branch's P6 case, by the
    # values and by the gradients alike.
    case = _case("p6_nc3")
    parts_diff, total_diff, grad_diff = _max_differences(
        case, "main", _loss(case, "main", **overrides)
    )
    assert parts_diff > TOLERANCE and total_diff > TOLERANCE, (parts_diff, total_diff)
    assert grad_diff > TOLERANCE, grad_diff
