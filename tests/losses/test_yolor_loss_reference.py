"""YOLORLoss against a loop-based NumPy re-implementation of the formulas.

The reference walks the assignment candidates one by one in the official
order (neighbour offset, anchor, image, box), writes the objectness targets
sequentially so that a later write replaces an earlier one, and averages the
terms over the whole batch the way the official loss does. It returns the
official batch-level ``lbox``, ``lobj`` and ``lcls``; the Keras loss must give
them as the batch means of its per-sample values.
"""

import math

import keras
import numpy as np
import pytest

from yolor_keras.losses import YOLORLoss

# (dx, dy) subtracted from the centre: centre, left, up, right, down.
OFFSETS = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5)]

P6_ANCHORS = np.array(
    [
        [[19, 27], [44, 40], [38, 94]],
        [[96, 68], [86, 152], [180, 137]],
        [[140, 301], [303, 264], [238, 542]],
        [[436, 615], [739, 380], [925, 792]],
    ],
    "float32",
)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(logit, target, pos_weight):
    log_p = -math.log1p(math.exp(-logit)) if logit > 0 else logit - math.log1p(math.exp(logit))
    log_not_p = log_p - logit
    return -(pos_weight * target * log_p + (1.0 - target) * log_not_p)


def _criterion(logit, target, pos_weight, gamma, alpha=0.25):
    """BCE, or the official FocalLoss around it when gamma > 0."""
    loss = _bce(logit, target, pos_weight)
    if gamma > 0:
        p = _sigmoid(logit)
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss *= alpha_t * (1.0 - p_t) ** gamma
    return loss


def _ciou(pred, target, eps=1e-9):
    (px, py, pw, ph), (tx, ty, tw, th) = pred, target
    p_x1, p_x2, p_y1, p_y2 = px - pw / 2, px + pw / 2, py - ph / 2, py + ph / 2
    t_x1, t_x2, t_y1, t_y2 = tx - tw / 2, tx + tw / 2, ty - th / 2, ty + th / 2
    inter = max(min(p_x2, t_x2) - max(p_x1, t_x1), 0) * max(min(p_y2, t_y2) - max(p_y1, t_y1), 0)
    union = pw * (ph + eps) + tw * (th + eps) - inter + eps
    iou = inter / union
    c2 = (max(p_x2, t_x2) - min(p_x1, t_x1)) ** 2 + (max(p_y2, t_y2) - min(p_y1, t_y1)) ** 2 + eps
    rho2 = (tx - px) ** 2 + (ty - py) ** 2
    v = 4 / math.pi**2 * (math.atan(tw / (th + eps)) - math.atan(pw / (ph + eps))) ** 2
    alpha = v / (1 + eps - iou + v) if v > 0 else 0.0
    return iou - (rho2 / c2 + alpha * v)


def _neighbour_used(offset, cx, cy, width, height, rule):
    if offset == 0:
        return True
    if offset == 1:
        return cx % 1 < 0.5 and cx > 1
    if offset == 2:
        return cy % 1 < 0.5 and cy > 1
    if rule == "main":
        if offset == 3:
            return cx % 1 > 0.5 and cx < width - 1
        return cy % 1 > 0.5 and cy < height - 1
    far_x, far_y = width - cx, height - cy
    if offset == 3:
        return far_x % 1 < 0.5 and far_x > 1
    return far_y % 1 < 0.5 and far_y > 1


def reference_loss(
    raw,
    boxes,
    classes,
    anchors,
    strides,
    nc,
    *,
    box=0.05,
    obj=1.0,
    cls=0.5,
    anchor_t=4.0,
    gr=1.0,
    cls_pw=1.0,
    obj_pw=1.0,
    smoothing=0.0,
    rule="main",
    fl_gamma=0.0,
):
    """Official (lbox, lobj, lcls) of a batch, and each sample's lobj share."""
    num_levels, batch = len(raw), raw[0].shape[0]
    balance = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.4, 0.1]}[num_levels]
    lbox = lobj = lcls = 0.0
    obj_per_sample = np.zeros(batch)
    for level, p in enumerate(raw):
        p = p.astype("float64")
        height, width, num_anchors = p.shape[1:4]
        stride = strides[level]
        candidates = []
        for offset, (dx, dy) in enumerate(OFFSETS):
            for a in range(num_anchors):
                aw, ah = anchors[level][a] / stride
                for b in range(batch):
                    for m in range(boxes.shape[1]):
                        x1, y1, x2, y2 = (float(v) / stride for v in boxes[b, m])
                        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                        if classes[b, m] < 0 or w <= 0 or h <= 0:
                            continue
                        if max(w / aw, aw / w, h / ah, ah / h) >= anchor_t:
                            continue
                        if not _neighbour_used(offset, cx, cy, width, height, rule):
                            continue
                        col = min(max(math.floor(cx - dx), 0), width - 1)
                        row = min(max(math.floor(cy - dy), 0), height - 1)
                        target = (cx - col, cy - row, w, h)
                        candidates.append((b, row, col, a, target, (aw, ah), int(classes[b, m])))
        tobj = np.zeros(p.shape[:4])
        if candidates:
            box_terms, cls_terms = [], []
            for b, row, col, a, target, (aw, ah), c in candidates:
                t = p[b, row, col, a]
                pred = (
                    2 * _sigmoid(t[0]) - 0.5,
                    2 * _sigmoid(t[1]) - 0.5,
                    (2 * _sigmoid(t[2])) ** 2 * aw,
                    (2 * _sigmoid(t[3])) ** 2 * ah,
                )
                ciou = _ciou(pred, target)
                box_terms.append(1.0 - ciou)
                tobj[b, row, col, a] = (1.0 - gr) + gr * max(ciou, 0.0)
                for k in range(nc):
                    label = 1.0 - smoothing / 2 if k == c else smoothing / 2
                    cls_terms.append(_criterion(t[5 + k], label, cls_pw, fl_gamma))
            lbox += np.mean(box_terms)
            if nc > 1:
                lcls += np.mean(cls_terms)
        level_obj = np.zeros(batch)
        for b in range(batch):
            terms = [
                _criterion(p[b, i, j, a, 4], tobj[b, i, j, a], obj_pw, fl_gamma)
                for i in range(height)
                for j in range(width)
                for a in range(num_anchors)
            ]
            level_obj[b] = np.mean(terms)
        lobj += balance[level] * level_obj.mean()
        obj_per_sample += balance[level] * level_obj
    scale = 3.0 / num_levels
    obj_scale = obj * scale * (1.4 if num_levels >= 4 else 1.0)
    return (
        lbox * box * scale,
        lobj * obj_scale,
        lcls * cls * nc / 80 * scale,
        obj_per_sample * obj_scale,
    )


def _random_batch(rng, strides, image, nc, batch=3, max_boxes=7):
    raw = [
        rng.normal(scale=1.5, size=(batch, image // s, image // s, 3, 5 + nc)).astype("float32")
        for s in strides
    ]
    boxes = np.zeros((batch, max_boxes, 4), "float32")
    classes = np.full((batch, max_boxes), -1, "int32")
    for b in range(batch):
        for m in range(rng.integers(0, max_boxes + 1)):
            if rng.random() < 0.3:
                # Whole pixels put many centres exactly on cell edges.
                cx, cy = 8 * rng.integers(0, image // 8, 2)
                w, h = rng.integers(4, image // 2, 2)
            else:
                cx, cy = rng.uniform(0, image, 2)
                w, h = rng.uniform(2, image * 0.8, 2)
            boxes[b, m] = [
                max(cx - w / 2, 0),
                max(cy - h / 2, 0),
                min(cx + w / 2, image),
                min(cy + h / 2, image),
            ]
            classes[b, m] = rng.integers(0, nc)
        if classes[b, 1] >= 0:  # a duplicated box: every one of its cells is written twice
            boxes[b, 2], classes[b, 2] = boxes[b, 1], classes[b, 1]
    return raw, boxes, classes


CASES = {
    "csp_main": {
        "strides": [8, 16, 32],
        "image": 96,
        "nc": 3,
        "anchors": P6_ANCHORS[:3] / 6,
        "options": {},
    },
    "p6_paper_options": {
        "strides": [8, 16, 32, 64],
        "image": 128,
        "nc": 5,
        "anchors": P6_ANCHORS / 4,
        "options": {
            "rule": "paper",
            "smoothing": 0.1,
            "cls_pw": 2.0,
            "obj_pw": 0.5,
            "gr": 0.7,
            "anchor_t": 3.0,
            "box": 0.1,
            "obj": 0.7,
            "cls": 0.3,
        },
    },
    "csp_focal": {
        "strides": [8, 16, 32],
        "image": 96,
        "nc": 4,
        "anchors": P6_ANCHORS[:3] / 6,
        "options": {"fl_gamma": 1.5, "smoothing": 0.1, "cls_pw": 1.5, "gr": 0.8},
    },
    "single_class": {
        "strides": [8, 16, 32],
        "image": 64,
        "nc": 1,
        "anchors": P6_ANCHORS[:3] / 8,
        "options": {},
    },
}
# Reference keyword -> YOLORLoss argument.
KERAS_NAMES = {
    "rule": "neighbor_rule",
    "smoothing": "label_smoothing",
    "cls_pw": "cls_pos_weight",
    "obj_pw": "obj_pos_weight",
    "gr": "iou_ratio",
    "anchor_t": "anchor_t",
    "box": "box_gain",
    "obj": "obj_gain",
    "cls": "cls_gain",
    "fl_gamma": "focal_gamma",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_reference(case):
    spec = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    loss = YOLORLoss(
        spec["anchors"],
        spec["strides"],
        spec["nc"],
        **{KERAS_NAMES[k]: v for k, v in spec["options"].items()},
    )
    for _ in range(2):
        raw, boxes, classes = _random_batch(rng, spec["strides"], spec["image"], spec["nc"])
        lbox, lobj, lcls, obj_per_sample = reference_loss(
            raw, boxes, classes, spec["anchors"], spec["strides"], spec["nc"], **spec["options"]
        )
        labels = {"boxes": boxes, "classes": classes}
        parts = {
            k: keras.ops.convert_to_numpy(v)
            for k, v in loss.compute_components(labels, raw).items()
        }
        assert lbox > 0 and lobj > 0
        assert parts["box"].mean() == pytest.approx(lbox, rel=2e-5)
        assert parts["obj"].mean() == pytest.approx(lobj, rel=2e-5)
        assert parts["cls"].mean() == pytest.approx(lcls, rel=2e-5, abs=1e-12)
        np.testing.assert_allclose(parts["obj"], obj_per_sample, rtol=2e-5)
        # The official loss is (lbox + lobj + lcls) * batch size.
        official = (lbox + lobj + lcls) * len(boxes)
        assert float(loss(labels, raw)) == pytest.approx(official / len(boxes), rel=2e-5)
