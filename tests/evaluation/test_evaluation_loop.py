"""`evaluate`, `evaluation_batches` and `yolor evaluate` on a model whose
detections are known exactly, and `evaluate` on a task with every head.

`FixedOutputDetector` is a real Keras model (it saves to and loads from a
`.keras` file) whose raw head outputs are fixed logits: -20 everywhere,
except at one anchor of the centre cell ``(H // 2, W // 2)`` of its stride-32
level, where objectness and one class are +20 and the box logits 0. Decoded
by the official formulas, that is one box per image, centred on the cell
(``(2 * sigmoid(0) - 0.5 + cell) * 32 = (cell + 0.5) * 32``) with the
anchor's size (``(2 * sigmoid(0))^2 * anchor = anchor``) and score 1; every
other candidate scores about 4e-18, far under the 0.001 threshold. Nothing is
stubbed: it runs `YOLORObjectDetector.detect` itself (decode and the NMS
layer), and the inverse letterbox and the COCO scoring run as in `yolor
evaluate`.

The expected boxes in original pixels are computed here by hand from each
protocol's letterbox geometry, and the reference scores are pycocotools on
the dataset's own annotation file with those boxes.
"""

import contextlib
import io
import json

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from yolor_keras.evaluation import evaluation_loop
from yolor_keras.evaluation.protocol import COCO_STAT_NAMES
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.tasks import YOLORObjectDetector

STRIDES = [8, 16, 32]
ANCHORS = [
    [[10, 10], [20, 20], [30, 30]],
    [[40, 40], [50, 50], [60, 60]],
    [[40, 24], [70, 70], [90, 90]],
]
HOT, COLD = 20.0, -20.0
CATEGORY_IDS = [3, 7]  # COCO ids of class indices 0 and 1: not 0-based on purpose


@keras.saving.register_keras_serializable(package="yolor_keras_tests")
class FixedOutputDetector(keras.Model):
    """Raw outputs with a single confident box at the stride-32 centre cell.

    Its path from raw outputs to detections is the task's own: `detect`,
    `decode` and `outputs_by_head` are `YOLORObjectDetector`'s functions, and
    the prediction decoder a `NonMaxSuppression` layer.
    """

    head_names = ("detection",)
    detect = YOLORObjectDetector.detect
    decode = YOLORObjectDetector.decode
    outputs_by_head = YOLORObjectDetector.outputs_by_head

    def __init__(self, num_classes=2, hot_class=1, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hot_class = int(hot_class)
        self.strides = list(STRIDES)
        self.anchors = np.asarray(ANCHORS, "float32")
        self.image_size = None  # any canvas size, as the official protocol needs
        self.prediction_decoder = NonMaxSuppression()

    def build(self, input_shape):
        del input_shape  # no weights: the outputs are fixed

    def call(self, images, training=False):
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        fields = 5 + self.num_classes
        cold = np.concatenate([np.zeros(4), np.full(1 + self.num_classes, COLD)]).astype("float32")
        outputs = []
        for _level, stride in enumerate(self.strides):
            rows, cols = height // stride, width // stride
            raw = ops.zeros((batch, rows, cols, 3, fields)) + cold
            if stride == 32:
                # Anchor 0 of the centre cell: objectness and one class hot.
                delta = np.zeros((3, fields), "float32")
                delta[0, 4] = delta[0, 5 + self.hot_class] = HOT - COLD
                row = ops.cast(ops.equal(ops.arange(rows), rows // 2), "float32")
                col = ops.cast(ops.equal(ops.arange(cols), cols // 2), "float32")
                cell = row[:, None] * col[None, :]
                raw = raw + cell[None, :, :, None, None] * delta
            outputs.append(raw)
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hot_class": self.hot_class,
        }


def _saved_detector(path):
    model = FixedOutputDetector()
    model(np.zeros((1, 64, 64, 3), "float32"))  # built, as a trained model is
    model.save(path)
    return path


def _box(canvas_height, canvas_width, pad, scale):
    """The fixed box mapped back by hand: centre cell, anchor 40 x 24."""
    cx = (canvas_width // 32 // 2 + 0.5) * 32
    cy = (canvas_height // 32 // 2 + 0.5) * 32
    x1, y1, x2, y2 = cx - 20, cy - 12, cx + 20, cy + 12
    return [
        (x1 - pad[0]) / scale,
        (y1 - pad[1]) / scale,
        (x2 - pad[0]) / scale,
        (y2 - pad[1]) / scale,
    ]


# Two images at S = 128, scale 0.8 for both (long side 160 -> 128):
#   id 1: 160 x 120 (w x h), resized to 128 x 96; id 2: 120 x 160, to 96 x 128.
# square: canvas 128 x 128, centre cell (2, 2) at (80, 80) px;
#   id 1 pad (0, 16), id 2 pad (16, 0).
# official, one batch of both: h/w 0.75 and 1.33 -> shape [1, 1] ->
#   ceil(128 / 32 + 0.5) = 5 -> canvas 160 x 160, centre cell (2, 2) at
#   (80, 80); id 1 pad ((160 - 128) / 2, (160 - 96) / 2) = (16, 32), id 2
#   pad (32, 16).
EXPECTED = {
    "square": {1: _box(128, 128, (0, 16), 0.8), 2: _box(128, 128, (16, 0), 0.8)},
    "official": {1: _box(160, 160, (16, 32), 0.8), 2: _box(160, 160, (32, 16), 0.8)},
}


def test_hand_boxes():
    # Spelled out once: square id 1 is x (60 - 0) / 0.8 .. (100 - 0) / 0.8,
    # y (68 - 16) / 0.8 .. (92 - 16) / 0.8.
    np.testing.assert_allclose(EXPECTED["square"][1], [75, 65, 125, 95])
    np.testing.assert_allclose(EXPECTED["square"][2], [55, 85, 105, 115])
    np.testing.assert_allclose(EXPECTED["official"][1], [55, 45, 105, 75])
    np.testing.assert_allclose(EXPECTED["official"][2], [35, 65, 85, 95])


@pytest.fixture
def dataset(tmp_path):
    """A COCO-layout folder; the ground truth is the square protocol's boxes."""
    root = tmp_path / "data"
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for image_id, (width, height) in ((1, (160, 120)), (2, (120, 160))):
        name = f"{image_id:03d}.jpg"
        Image.fromarray(np.full((height, width, 3), 90 + 40 * image_id, np.uint8)).save(
            root / "val" / name
        )
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        x1, y1, x2, y2 = EXPECTED["square"][image_id]
        annotations.append(
            {
                "id": image_id, "image_id": image_id, "category_id": CATEGORY_IDS[1],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            }
        )  # fmt: skip
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    path = root / "annotations" / "instances_val.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root, path


def pycocotools_stats(path, boxes, category_id=CATEGORY_IDS[1]):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = [
        {
            "image_id": i,
            "category_id": category_id,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": 1.0,
        }
        for i, (x1, y1, x2, y2) in boxes.items()
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return np.asarray(evaluation.stats)


def stats(metrics):
    return np.array([metrics[name] for name in COCO_STAT_NAMES])


def _saved_boxes(results_path):
    records = json.loads(results_path.read_text())
    boxes = {}
    for record in records:
        assert record["image_id"] not in boxes, "one detection per image"
        assert record["category_id"] == CATEGORY_IDS[1]
        assert record["score"] == pytest.approx(1.0)
        x, y, w, h = record["bbox"]
        boxes[record["image_id"]] = [x, y, x + w, y + h]
    return boxes


@pytest.mark.parametrize("protocol", ["square", "official"])
def test_boxes_are_mapped_back_and_scored_as_pycocotools(dataset, protocol, tmp_path):
    from yolor_keras.data import load_source

    root, path = dataset
    model = FixedOutputDetector()
    source = load_source(str(root), split="val")
    batches, info = evaluation_loop.evaluation_batches(
        source, model, image_size=128, batch_size=2, protocol=protocol, verbose=False
    )
    canvases = {tuple(images.shape[1:3]) for images, _ in batches}
    assert canvases == ({(128, 128)} if protocol == "square" else {(160, 160)})
    results_path = tmp_path / "results.json"
    metrics = evaluation_loop.evaluate(
        model, batches, info, verbose=False, results_path=results_path
    )
    boxes = _saved_boxes(results_path)
    assert sorted(boxes) == [1, 2]
    for image_id, expected in EXPECTED[protocol].items():
        np.testing.assert_allclose(boxes[image_id], expected, atol=2e-3)  # results round to 1e-3
    assert (metrics["images_evaluated"], metrics["images_in_split"]) == (2, 2)
    np.testing.assert_allclose(
        stats(metrics), pycocotools_stats(path, EXPECTED[protocol]), atol=1e-6
    )
    if protocol == "square":
        # The ground truth is the square protocol's boxes: a perfect score.
        assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP50"] == pytest.approx(1.0)
    else:
        # The official canvases put the box elsewhere on the image: IoU with
        # the ground truth, by hand, id 1: [55, 45, 105, 75] vs [75, 65, 125,
        # 95] overlap 30 x 10 = 300 over 1500 + 1500 - 300: 0.11; id 2: [35,
        # 65, 85, 95] vs [55, 85, 105, 115] overlap 30 x 10: 0.11. No match.
        assert metrics["mAP"] == pytest.approx(0.0) and metrics["mAP50"] == pytest.approx(0.0)


def test_the_official_protocol_scores_its_own_boxes_perfectly(dataset, tmp_path):
    """With the ground truth moved onto the official boxes, the official
    protocol scores 1 and the square one 0: the mapping really follows each
    protocol's canvas."""
    from yolor_keras.data import load_source

    root, path = dataset
    coco = json.loads(path.read_text())
    for annotation in coco["annotations"]:
        x1, y1, x2, y2 = EXPECTED["official"][annotation["image_id"]]
        annotation["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    path.write_text(json.dumps(coco))
    model = FixedOutputDetector()
    scores = {}
    for protocol in ("official", "square"):
        batches, info = evaluation_loop.evaluation_batches(
            load_source(str(root), split="val"), model, image_size=128, batch_size=2,
            protocol=protocol, verbose=False,
        )  # fmt: skip
        scores[protocol] = evaluation_loop.evaluate(model, batches, info, verbose=False)["mAP"]
    assert scores == {"official": pytest.approx(1.0), "square": pytest.approx(0.0)}


def test_yolor_evaluate_prints_the_metrics_of_a_saved_model(dataset, tmp_path, capsys):
    from yolor_keras import cli

    root, path = dataset
    model_path = _saved_detector(tmp_path / "fixed.keras")
    metrics_path, results_path = tmp_path / "metrics.json", tmp_path / "results.json"
    code = cli.main(
        [
            "evaluate", "--model", str(model_path), "--data", str(root), "--split", "val",
            "--image-size", "128", "--batch-size", "2", "--protocol", "square",
            "--json", str(metrics_path), "--save-results", str(results_path),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Evaluating 2 images at 128 px (square protocol, 1 batches)." in out
    assert "mAP@.5:.95 1.0000  mAP@.5 1.0000" in out
    for name in COCO_STAT_NAMES:
        assert any(line.strip().startswith(f"{name}:") for line in out.splitlines()), name
    metrics = json.loads(metrics_path.read_text())
    np.testing.assert_allclose(
        stats(metrics), pycocotools_stats(path, EXPECTED["square"]), atol=1e-6
    )
    assert (metrics["images_evaluated"], metrics["images_in_split"]) == (2, 2)
    for image_id, box in _saved_boxes(results_path).items():
        np.testing.assert_allclose(box, EXPECTED["square"][image_id], atol=2e-3)

    # By default: the official protocol, at 640 for a largest stride of 32.
    code = cli.main(["evaluate", "--model", str(model_path), "--data", str(root), "--split", "val"])
    assert code == 0
    assert "at 640 px (official protocol" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["model", "data"])
def test_yolor_evaluate_with_a_missing_path_exits_2_naming_it(dataset, tmp_path, capsys, which):
    from yolor_keras import cli

    root, _ = dataset
    model_path = _saved_detector(tmp_path / "fixed.keras")
    missing = tmp_path / f"no_such_{which}"
    args = {"model": str(model_path), "data": str(root)}
    args[which] = str(missing) + (".keras" if which == "model" else "")
    code = cli.main(
        ["evaluate", "--model", args["model"], "--data", args["data"], "--split", "val"]
    )
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("yolor evaluate: error:") and f"no_such_{which}" in lines[0]


def test_yolor_evaluate_with_a_file_that_is_not_a_model_exits_2_naming_it(
    dataset, tmp_path, capsys
):
    from yolor_keras import cli

    root, _ = dataset
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a zip archive")
    code = cli.main(["evaluate", "--model", str(bogus), "--data", str(root), "--split", "val"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "bogus.keras" in lines[0], captured.err


# --------------------------------------------------------------------------
# Every head: the one loop on multi-task batches.

COCO_KEYS = {"mAP", "mAP50", *COCO_STAT_NAMES, "images_evaluated", "images_in_split"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Eight 64 px synthetic images with identities, as multi-task evaluation batches."""
    from yolor_keras.data import build_multi_task_dataset
    from yolor_keras.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("shapes")
    # Seed 5: identities 5 (3 images) and 6 (2) recur, so recall@1 has 5 queries.
    generate_dataset(root, num_train=1, num_val=8, image_size=64, seed=5)
    dataset, info = build_multi_task_dataset(
        str(root), split="val", image_size=64, batch_size=3, training=False, cache=False,
        verbose=False,
    )  # fmt: skip
    return root, dataset, info


@keras.saving.register_keras_serializable(package="yolor_keras_tests")
class ImageStatisticsTask(keras.Model):
    """Classification and embedding heads whose outputs are image statistics.

    A random tiny network gives nearly the same label probabilities for
    every image (ties that make rankings arbitrary); these outputs differ
    clearly between images and are recomputed in NumPy by the test. The
    path from raw outputs to results is `YOLORObjectDetector.detect`.
    """

    head_names = ("classification", "embedding")
    strides = [32]
    detect = YOLORObjectDetector.detect
    outputs_by_head = YOLORObjectDetector.outputs_by_head

    def call(self, images, training=False):
        return image_statistics(images, ops)

    def build(self, input_shape):
        del input_shape  # no weights


def image_statistics(images, backend):
    """Logits: 20 x (channel mean - 0.5) and 20 x (channel std - 0.1) of R, G;
    embedding: the mean colour of each image quadrant (12 values)."""
    mean = backend.mean(images, axis=(1, 2))
    std = backend.std(images, axis=(1, 2))
    logits = backend.concatenate([20 * (mean - 0.5), 20 * (std[:, :2] - 0.1)], axis=-1)
    half = 32  # of the 64 px evaluation images
    quadrants = [
        backend.mean(images[:, rows, cols], axis=(1, 2))
        for rows in (slice(0, half), slice(half, None))
        for cols in (slice(0, half), slice(half, None))
    ]
    return {"classification": logits, "embedding": backend.concatenate(quadrants, axis=-1)}


def test_every_head_is_scored_against_its_own_targets(shapes):
    from yolor_keras.evaluation.head_metrics import multilabel_average_precision
    from yolor_keras.evaluation.head_metrics import multilabel_f1
    from yolor_keras.evaluation.head_metrics import recall_at_1

    _, dataset, info = shapes
    assert info.num_classes == 5  # the five logits above
    metrics = evaluation_loop.evaluate(ImageStatisticsTask(), dataset, info, verbose=False)
    assert set(metrics) == {"label_mAP", "label_F1", "recall@1"}  # no detection head

    # Reference: the statistics in NumPy over the same images (8, in batches
    # of 3, 3, 2), and the targets in file order as the dataset info lists
    # them (not the batches' copies the loop reads).
    images = np.concatenate([np.asarray(batch, np.float64) for batch, _ in dataset])
    reference = image_statistics(images, np)
    probabilities = 1 / (1 + np.exp(-reference["classification"]))
    labels, identities = info.targets["classification"], info.targets["embedding"]
    assert labels.shape == probabilities.shape == (8, 5)
    assert np.ptp(probabilities, axis=0).min() > 0.01  # no ties to rank arbitrarily
    expected_map = multilabel_average_precision(labels, probabilities)[0]
    assert metrics["label_mAP"] == pytest.approx(expected_map, abs=1e-6)
    assert metrics["label_F1"] == pytest.approx(multilabel_f1(labels, probabilities), abs=1e-6)
    expected_recall = recall_at_1(reference["embedding"], identities)
    assert not np.isnan(expected_recall)  # 5 queries, see `shapes`
    assert metrics["recall@1"] == pytest.approx(expected_recall, abs=1e-9)
    # The pairing matters: the targets of another order score differently.
    shuffled = multilabel_average_precision(labels[::-1], probabilities)[0]
    assert abs(shuffled - expected_map) > 0.01


def test_a_real_task_with_every_head_runs_through_the_loop(shapes, tmp_path):
    from yolor_keras.models import ClassificationHead
    from yolor_keras.models import DetectionHead
    from yolor_keras.models import EmbeddingHead

    root, dataset, info = shapes
    keras.utils.set_random_seed(2)
    task = YOLORObjectDetector.from_preset(
        "yolor_p6", width_multiplier=0.125, depth_multiplier=0.33,
        heads=[
            DetectionHead(info.num_classes),
            ClassificationHead(info.num_classes, hidden_units=16),
            EmbeddingHead(8, hidden_units=16),
        ],
    )  # fmt: skip
    results_path = tmp_path / "results.json"
    metrics = evaluation_loop.evaluate(
        task, dataset, info, verbose=False, results_path=results_path
    )
    assert set(metrics) == COCO_KEYS | {"label_mAP", "label_F1", "recall@1"}
    assert (metrics["images_evaluated"], metrics["images_in_split"]) == (8, 8)
    for name in ("label_mAP", "label_F1", "recall@1"):
        assert 0.0 <= metrics[name] <= 1.0, name

    # Detection: pycocotools on the saved detections and the annotation file.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    saved = json.loads(results_path.read_text())
    assert saved, "the random tiny task should leave detections above 0.001"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "annotations" / "instances_val.json"))
        evaluation = COCOeval(coco, coco.loadRes(saved), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    np.testing.assert_allclose(stats(metrics), evaluation.stats, atol=1e-4)


def test_a_detector_reads_its_targets_from_multi_task_batches(shapes):
    _, dataset, info = shapes
    model = FixedOutputDetector(num_classes=info.num_classes)
    metrics = evaluation_loop.evaluate(model, dataset, info, verbose=False)
    assert set(metrics) == COCO_KEYS
    assert (metrics["images_evaluated"], metrics["images_in_split"]) == (8, 8)


def test_a_head_without_targets_in_the_batches_is_named(shapes):
    from yolor_keras.data import build_dataset

    root, _, _ = shapes
    dataset, info = build_dataset(
        str(root), split="val", image_size=64, batch_size=4, training=False, verbose=False
    )
    with pytest.raises(
        ValueError, match="classification head.*no 'classification' targets.*extra_targets"
    ):
        evaluation_loop.evaluate(ImageStatisticsTask(), dataset, info, verbose=False)
    with pytest.raises(ValueError, match="lacks.*detect.*YOLORObjectDetector"):
        evaluation_loop.evaluate(keras.Sequential([keras.layers.Dense(1)]), dataset, info)
