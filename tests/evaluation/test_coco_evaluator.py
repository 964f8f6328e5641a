"""Tests of `COCOEvaluator`: hand-computed APs and agreement with pycocotools."""

import contextlib
import io
import json

import numpy as np
import pytest

from yolor_keras.evaluation import COCO_CATEGORY_IDS
from yolor_keras.evaluation import COCO_STAT_NAMES
from yolor_keras.evaluation import COCOEvaluator


def coco_dataset(images, categories=(1,)):
    """A COCO ground-truth dict from `{image_id: [(category_id, [x, y, w, h], iscrowd)]}`."""
    annotations = []
    for image_id, objects in images.items():
        for category_id, bbox, crowd in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": list(map(float, bbox)),
                    "area": float(bbox[2] * bbox[3]),
                    "iscrowd": crowd,
                }
            )
    return {
        "images": [{"id": i, "width": 640, "height": 480} for i in images],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
    }


def padded_batch(per_image, width):
    """Padded detection dict from per-image lists of `(class, [x1, y1, x2, y2], score)`."""
    batch = len(per_image)
    boxes = np.zeros((batch, width, 4), np.float32)
    scores = np.zeros((batch, width), np.float32)
    classes = np.full((batch, width), -1, np.int32)
    for i, objects in enumerate(per_image):
        for j, (cls, box, score) in enumerate(objects):
            boxes[i, j], scores[i, j], classes[i, j] = box, score, cls
    counts = np.array([len(objects) for objects in per_image], np.int32)
    return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": counts}


def test_perfect_detections_score_one():
    gt = coco_dataset(
        {
            1: [(1, [10, 10, 20, 25], 0), (2, [100, 50, 200, 150], 0)],
            2: [(1, [300, 300, 60, 90], 0)],
        },
        categories=(1, 2),
    )
    evaluator = COCOEvaluator(gt)
    evaluator.process(
        [1, 2],
        padded_batch(
            [
                [(0, [10, 10, 30, 35], 0.9), (1, [100, 50, 300, 200], 0.8)],
                [(0, [300, 300, 360, 390], 0.7)],
            ],
            width=3,
        ),
    )
    metrics = evaluator.evaluate()
    for name in ("mAP", "mAP50", "AP", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name
    assert set(COCO_STAT_NAMES) <= set(metrics)
    assert evaluator.per_category_ap == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_one_of_two_objects_found_gives_51_of_101_recall_points():
    # Recall 0.5 at precision 1: COCO's 101-point interpolation counts the
    # recall thresholds 0.00, 0.01, ..., 0.50, so AP = 51 / 101.
    gt = coco_dataset({5: [(1, [10, 10, 50, 50], 0), (1, [200, 200, 50, 50], 0)]})
    evaluator = COCOEvaluator(gt)
    evaluator.process([5], padded_batch([[(0, [10, 10, 60, 60], 0.9)]], width=1))
    metrics = evaluator.evaluate()
    assert metrics["mAP"] == pytest.approx(51 / 101)
    assert metrics["mAP50"] == pytest.approx(51 / 101)
    assert metrics["AR100"] == pytest.approx(0.5)


def test_iou_of_062_counts_at_three_of_ten_thresholds():
    # Detection (0, 0, 100, 62) vs ground truth (0, 0, 100, 100): IoU 0.62,
    # a match at IoU thresholds 0.50, 0.55 and 0.60 only.
    gt = coco_dataset({9: [(1, [0, 0, 100, 100], 0)]})
    evaluator = COCOEvaluator(gt)
    evaluator.process([9], padded_batch([[(0, [0, 0, 100, 62], 0.5)]], width=2))
    metrics = evaluator.evaluate()
    assert metrics["mAP"] == pytest.approx(0.3)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)


def random_problem(seed, num_images=24, crowd=True):
    """Ground truth with gaps in the category ids, and noisy detections."""
    rng = np.random.default_rng(seed)
    category_ids = [1, 3, 7]
    images, detections = {}, []
    for image_id in range(100, 100 + num_images):
        objects, found = [], []
        for _ in range(rng.integers(0, 6)):
            size = rng.choice([12.0, 50.0, 150.0]) * rng.uniform(0.7, 1.3, 2)  # all area ranges
            xy = rng.uniform(0, 400, 2)
            cls = int(rng.integers(0, 3))
            is_crowd = int(crowd and rng.uniform() < 0.1)
            objects.append((category_ids[cls], [*xy, *size], is_crowd))
            if rng.uniform() < 0.8:
                jitter = rng.normal(0, 0.08, 4) * np.r_[size, size]
                x1y1 = xy + jitter[:2]
                found.append(
                    (cls, [*x1y1, *(x1y1 + size + jitter[2:])], float(rng.uniform(0.3, 1)))
                )
        for _ in range(rng.integers(0, 4)):  # false positives
            xy = rng.uniform(0, 400, 2)
            found.append(
                (
                    int(rng.integers(0, 3)),
                    [*xy, *(xy + rng.uniform(5, 120, 2))],
                    float(rng.uniform(0, 0.8)),
                )
            )
        images[image_id] = objects
        detections.append(found)
    return coco_dataset(images, category_ids), detections


def pycocotools_stats(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def test_matches_pycocotools_on_random_detections():
    gt, detections = random_problem(seed=0)
    evaluator = COCOEvaluator(json.loads(json.dumps(gt)))
    image_ids = [image["id"] for image in gt["images"]]
    for start in range(0, len(image_ids), 5):  # batches of 5, padded to 12
        evaluator.process(
            image_ids[start : start + 5], padded_batch(detections[start : start + 5], width=12)
        )
    metrics = evaluator.evaluate()

    # The reference sees the same detections as plain COCO result records.
    results = [
        {
            "image_id": image_id,
            "category_id": [1, 3, 7][cls],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        for image_id, found in zip(image_ids, detections)
        for cls, (x1, y1, x2, y2), score in found
    ]
    reference = pycocotools_stats(gt, results)
    np.testing.assert_allclose(
        [metrics[name] for name in COCO_STAT_NAMES], reference.stats, atol=1e-4
    )
    assert 0.2 < metrics["mAP"] < 0.95  # a non-trivial case
    assert len(evaluator.results()) == len(results)

    precision = reference.eval["precision"][:, :, :, 0, -1]
    for index, category_id in enumerate([1, 3, 7]):
        values = precision[:, :, index]
        assert evaluator.per_category_ap[category_id] == pytest.approx(
            values[values > -1].mean(), abs=1e-4
        )


def labels_from_coco(gt, image_ids, category_ids, width):
    """The padded labels format of `yolor_keras.data` for the given images."""
    boxes = np.zeros((len(image_ids), width, 4), np.float32)
    classes = np.full((len(image_ids), width), -1, np.int32)
    for row, image_id in enumerate(image_ids):
        objects = [a for a in gt["annotations"] if a["image_id"] == image_id]
        for column, annotation in enumerate(objects):
            x, y, w, h = annotation["bbox"]
            boxes[row, column] = [x, y, x + w, y + h]
            classes[row, column] = category_ids.index(annotation["category_id"])
    return {"boxes": boxes, "classes": classes}


def test_labels_as_ground_truth_equal_the_annotation_file():
    gt, detections = random_problem(seed=1, crowd=False)
    image_ids = [image["id"] for image in gt["images"]]
    from_file = COCOEvaluator(gt)
    from_labels = COCOEvaluator(category_ids=[1, 3, 7])
    for start in range(0, len(image_ids), 8):
        ids = image_ids[start : start + 8]
        batch = padded_batch(detections[start : start + 8], width=10)
        labels = labels_from_coco(gt, ids, category_ids=[1, 3, 7], width=6)
        from_file.process(ids, batch)
        from_labels.process(ids, batch, ground_truth=labels)
    expected, actual = from_file.evaluate(), from_labels.evaluate()
    for name in COCO_STAT_NAMES:
        assert actual[name] == pytest.approx(expected[name], abs=1e-6), name


def test_reset_and_repeated_evaluation():
    gt = coco_dataset({1: [(1, [10, 10, 40, 40], 0)], 2: [(1, [10, 10, 40, 40], 0)]})
    evaluator = COCOEvaluator(gt)
    evaluator.process([1, 2], padded_batch([[(0, [10, 10, 50, 50], 0.9)], []], width=1))
    assert evaluator.evaluate()["mAP"] == pytest.approx(51 / 101)  # image 2's object is missed
    assert evaluator.evaluate()["mAP"] == pytest.approx(51 / 101)

    evaluator.reset()
    evaluator.process([1], padded_batch([[(0, [10, 10, 50, 50], 0.9)]], width=1))
    assert evaluator.evaluate()["mAP"] == pytest.approx(1.0)  # only processed images count


def test_no_detections_scores_zero():
    evaluator = COCOEvaluator(coco_dataset({1: [(1, [10, 10, 40, 40], 0)]}))
    evaluator.process([1], padded_batch([[]], width=4))
    metrics = evaluator.evaluate()
    assert metrics["mAP"] == 0.0 and metrics["AR100"] == 0.0


def test_saved_results_are_coco_records_in_xywh(tmp_path):
    evaluator = COCOEvaluator(coco_dataset({4: [(7, [0, 0, 10, 10], 0)]}, categories=(3, 7)))
    evaluator.process([4], padded_batch([[(1, [1.23456, 2, 11.5, 12], 0.876543)]], width=2))
    path = tmp_path / "results.json"
    evaluator.save_results(path)
    records = json.loads(path.read_text())
    assert records == [
        {"image_id": 4, "category_id": 7, "bbox": [1.235, 2.0, 10.265, 10.0], "score": 0.87654}
    ]


def test_bad_input_gets_clear_errors(tmp_path):
    gt = coco_dataset({1: [(1, [10, 10, 40, 40], 0)]})
    evaluator = COCOEvaluator(gt)
    good = padded_batch([[(0, [10, 10, 50, 50], 0.9)]], width=1)
    with pytest.raises(ValueError, match="image_ids"):
        evaluator.process([99], good)
    with pytest.raises(ValueError, match="image_ids"):
        evaluator.process([1.5], good)
    with pytest.raises(ValueError, match="class index 1"):
        evaluator.process([1], padded_batch([[(1, [10, 10, 50, 50], 0.9)]], width=1))
    with pytest.raises(ValueError, match=r"detections\['scores'\]"):
        evaluator.process([1], {**good, "scores": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="'boxes'"):
        evaluator.process([1], {"scores": good["scores"], "classes": good["classes"]})
    evaluator.process([1], good)
    with pytest.raises(ValueError, match="more than once"):
        evaluator.process([1], good)
    with pytest.raises(ValueError, match="ground_truth"):
        COCOEvaluator().process([1], good)
    with pytest.raises(RuntimeError, match="process"):
        COCOEvaluator(gt).evaluate()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCOEvaluator(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"\[5\]"):
        COCOEvaluator(gt, category_ids=[5])


def test_coco_category_ids_skip_the_eleven_unused_ids():
    assert len(COCO_CATEGORY_IDS) == 80
    assert sorted(set(range(1, 92)) - set(COCO_CATEGORY_IDS)) == [
        12,
        26,
        29,
        30,
        45,
        66,
        68,
        69,
        71,
        83,
        91,
    ]
