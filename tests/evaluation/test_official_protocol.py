"""The official evaluation path end to end: NMS -> letterbox mapping -> COCO mAP."""

import numpy as np
import pytest

from yolor_keras.data.image_decoding import letterbox_to_original
from yolor_keras.evaluation import COCO_CATEGORY_IDS
from yolor_keras.evaluation import COCO_EVAL_NMS
from yolor_keras.evaluation import COCOEvaluator
from yolor_keras.layers import non_max_suppression

INPUT_SIZE = 320
NUM_CLASSES = 80


def letterbox_parameters(height, width):
    scale = INPUT_SIZE / max(height, width)
    pad = ((INPUT_SIZE - width * scale) / 2, (INPUT_SIZE - height * scale) / 2)
    return scale, pad


def test_official_protocol_recovers_perfect_predictions():
    rng = np.random.default_rng(0)
    # (image id, (height, width), [(class index, [x, y, w, h] in original pixels)])
    images = [
        (
            139,
            (300, 600),
            [(0, [40, 30, 120, 200]), (5, [300, 100, 250, 150]), (79, [500, 10, 20, 15])],
        ),
        (285, (480, 320), [(0, [10, 20, 100, 80]), (0, [150, 200, 120, 250])]),
    ]
    annotations = []
    for image_id, _, objects in images:
        for cls, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[cls],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    ground_truth = {
        "images": [{"id": i, "height": h, "width": w} for i, (h, w), _ in images],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in COCO_CATEGORY_IDS],
    }

    # What a good detector would output in letterboxed input pixels: each
    # object once with a high score, a weaker shifted duplicate (NMS must
    # remove it), and faint background boxes of random classes.
    decoded = np.zeros((len(images), 60, 5 + NUM_CLASSES), np.float32)
    scales, pads, sizes = [], [], []
    for row, (_, (height, width), objects) in enumerate(images):
        scale, pad = letterbox_parameters(height, width)
        scales.append(scale), pads.append(pad), sizes.append((height, width))
        decoded[row, :, :2] = rng.uniform(0, INPUT_SIZE, (60, 2))
        decoded[row, :, 2:4] = rng.uniform(8, 80, (60, 2))
        decoded[row, :, 4] = rng.uniform(0.002, 0.05, 60)
        decoded[row, :, 5:] = rng.uniform(0, 0.3, (60, NUM_CLASSES))
        for k, (cls, (x, y, w, h)) in enumerate(objects):
            center = np.array([(x + w / 2) * scale + pad[0], (y + h / 2) * scale + pad[1]])
            size = np.array([w, h]) * scale
            for slot, shift, objectness in ((2 * k, 0.0, 0.95), (2 * k + 1, 0.05, 0.6)):
                decoded[row, slot, :4] = [*(center + shift * size), *size]
                decoded[row, slot, 4] = objectness
                decoded[row, slot, 5:] = 0.01
                decoded[row, slot, 5 + cls] = 0.9

    detections = non_max_suppression(decoded, **COCO_EVAL_NMS)
    letterboxed_boxes = detections["boxes"]
    detections["boxes"] = letterbox_to_original(letterboxed_boxes, scales, pads, sizes)

    evaluator = COCOEvaluator(ground_truth, category_ids=COCO_CATEGORY_IDS)
    evaluator.process([image_id for image_id, _, _ in images], detections)
    metrics = evaluator.evaluate()
    assert metrics["mAP"] == pytest.approx(1.0)
    assert metrics["mAP50"] == pytest.approx(1.0)
    # Faint background pairs above conf 0.001 are kept, as in the official run.
    assert all(count > 20 for count in detections["num_detections"].numpy())

    # Without mapping back to original pixels the same detections score poorly.
    evaluator.reset()
    evaluator.process(
        [image_id for image_id, _, _ in images], {**detections, "boxes": letterboxed_boxes}
    )
    assert evaluator.evaluate()["mAP"] < 0.5
