"""The official evaluation protocol: rect batches, annotation-file ground truth, CLI.

The reference for the scores is pycocotools run on the annotation file itself
with the same detections; the reference for the canvases is the official
formula, evaluated by hand in each test.
"""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from yolor_keras.evaluation import evaluation_loop
from yolor_keras.evaluation.ground_truth import annotation_file
from yolor_keras.evaluation.ground_truth import ground_truth
from yolor_keras.evaluation.ground_truth import load_annotation_file
from yolor_keras.evaluation.protocol import COCO_STAT_NAMES
from yolor_keras.evaluation.protocol import default_image_size
from yolor_keras.evaluation.rect_batches import plan_rect_batches
from yolor_keras.evaluation.rect_batches import rect_batch_shapes
from yolor_keras.evaluation.rect_batches import resized_size
from yolor_keras.evaluation.rect_batches import round_image_size

# --------------------------------------------------------------------------
# The official canvas formula, by hand.


def test_canvas_of_a_640x480_image_at_1280_with_stride_64_is_1344x1024():
    # h/w = 0.75 < 1: [0.75, 1] -> ceil(0.75 * 1280 / 64 + 0.5) = ceil(15.5) = 16
    # -> 1024 high; ceil(1280 / 64 + 0.5) = ceil(20.5) = 21 -> 1344 wide.
    _, shapes = rect_batch_shapes([(480, 640)], 1, 1280, 64)
    assert shapes.tolist() == [[1024, 1344]]
    _, shapes = rect_batch_shapes([(640, 480)], 1, 1280, 64)  # portrait: transposed
    assert shapes.tolist() == [[1344, 1024]]
    _, shapes = rect_batch_shapes([(500, 500)], 1, 1280, 64)  # square "1280" runs at 1344
    assert shapes.tolist() == [[1344, 1344]]
    # CSP family, stride 32 at 640: ceil(0.75 * 20 + 0.5) = 16 -> 512;
    # ceil(20.5) = 21 -> 672.
    _, shapes = rect_batch_shapes([(480, 640)], 1, 640, 32)
    assert shapes.tolist() == [[512, 672]]
    # A COCO-typical 640 x 427 image at 1280 / 64: ceil(0.6672 * 20 + 0.5) =
    # ceil(13.84) = 14 -> 896.
    _, shapes = rect_batch_shapes([(427, 640)], 1, 1280, 64)
    assert shapes.tolist() == [[896, 1344]]


def test_batches_take_the_extreme_aspect_ratio_of_their_images():
    sizes = [(480, 640), (640, 480), (200, 400), (500, 500), (333, 500), (500, 333), (700, 350)]
    # h/w: 0.75, 1.333, 0.5, 1.0, 0.666, 1.5, 2.0 -> sorted: 2, 4, 0 | 3, 1, 5 | 6
    order, shapes = rect_batch_shapes(sizes, 3, 256, 64)
    assert order.tolist() == [2, 4, 0, 3, 1, 5, 6]
    # Batch 0 all landscape, largest h/w 0.75: ceil(0.75 * 4 + 0.5) = 4 -> 256
    #   high, ceil(4.5) = 5 -> 320 wide.
    # Batch 1 mixes square and portrait: [1, 1] -> 320 x 320.
    # Batch 2 portrait, smallest h/w 2: [1, 0.5] -> 320 high, ceil(2.5) = 3
    #   -> 192 wide.
    assert shapes.tolist() == [[256, 320], [320, 320], [320, 192]]


def test_images_are_resized_to_long_side_s_with_truncation_and_centred():
    # 500 x 335 at 1280: ratio 2.56, 335 * 2.56 = 857.6 -> 857 (truncated,
    # where rounding would give 858); canvas ceil(0.67 * 20 + 0.5) = 14 ->
    # 896 high: 39 px of padding, 19 on top and 20 below.
    assert resized_size(335, 500, 1280) == (857, 1280)
    plan = plan_rect_batches([(335, 500)], 1, 1280, 64)
    assert plan.canvas.tolist() == [[896, 1344]]
    assert plan.resized.tolist() == [[857, 1280]]
    assert plan.offset.tolist() == [[19, 32]]  # (top, left): (1344 - 1280) / 2 = 32
    np.testing.assert_allclose(plan.scale, [[1280 / 500, 857 / 335]])
    np.testing.assert_allclose(plan.pad, [[32, 19]])
    # An image already at long side S is not resized.
    assert resized_size(1280, 720, 1280) == (1280, 720)


def test_image_size_is_rounded_up_to_the_stride_and_defaults_follow_the_family():
    assert round_image_size(1280, 64) == 1280
    assert round_image_size(1000, 64) == 1024
    assert round_image_size(600, 32) == 608

    class Family:
        def __init__(self, strides):
            self.strides = strides

    assert default_image_size(Family([8, 16, 32, 64])) == 1280  # P6, W6, E6, D6
    assert default_image_size(Family([8, 16, 32])) == 640  # CSP, CSP-X
    with pytest.raises(ValueError, match="strides"):
        default_image_size(object())


# --------------------------------------------------------------------------
# A small COCO dataset with crowd regions, annotated areas that differ from
# box areas, and mixed aspect ratios.

# (width, height) of each image, landscape, portrait and square.
IMAGE_SIZES = [(640, 480), (480, 640), (320, 320), (500, 333), (333, 500), (400, 200), (300, 300)]
CATEGORY_IDS = [1, 3, 7]
GREY = 114


def background(index):
    """A uniform colour per image, never the padding grey: it identifies the image."""
    return (20 + 25 * index, 200 - 20 * index, 60)


def make_problem(seed=0):
    """Ground truth with crowd regions and noisy fixed detections, in original pixels."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], {}
    for index, (width, height) in enumerate(IMAGE_SIZES):
        image_id = 1000 + 7 * index  # ids are not positions
        images.append(
            {"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height}
        )
        found = []
        for _ in range(rng.integers(2, 6)):
            size = rng.choice([20.0, 60.0, 140.0]) * rng.uniform(0.7, 1.3, 2)
            size = np.minimum(size, [width * 0.6, height * 0.6])
            xy = rng.uniform([0, 0], [width - size[0], height - size[1]])
            category = int(rng.integers(0, 3))
            crowd = int(rng.uniform() < 0.25)
            # COCO's area is the segmentation area, often well under the box's.
            area = float(size[0] * size[1] * rng.uniform(0.35, 1.0))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[category],
                    "bbox": [float(xy[0]), float(xy[1]), float(size[0]), float(size[1])],
                    "area": area,
                    "iscrowd": crowd,
                    "segmentation": [],
                }
            )
            # Detections on crowd regions get high scores: ignored against the
            # file, false positives against the reader's crowd-free records.
            if crowd or rng.uniform() < 0.8:
                jitter = rng.normal(0, 0.07, 4) * np.r_[size, size]
                x1y1 = np.clip(xy + jitter[:2], 0, None)
                x2y2 = np.minimum(xy + size + jitter[2:], [width, height])
                score = float(rng.uniform(0.85, 1.0) if crowd else rng.uniform(0.3, 0.9))
                found.append((category, [*x1y1, *x2y2], score))
        for _ in range(rng.integers(0, 4)):  # false positives
            xy = rng.uniform([0, 0], [width - 40, height - 40])
            wh = rng.uniform(8, 40, 2)
            found.append((int(rng.integers(0, 3)), [*xy, *(xy + wh)], float(rng.uniform(0, 0.6))))
        detections[image_id] = found
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS],
    }
    return coco, detections


def write_dataset(root, coco):
    """The COCO layout: annotations/instances_val.json and val/ with PNG images."""
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    for index, image in enumerate(coco["images"]):
        array = np.empty((image["height"], image["width"], 3), np.uint8)
        array[:] = background(index)
        Image.fromarray(array).save(root / "val" / image["file_name"])
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    coco, detections = make_problem()
    path = write_dataset(root, coco)
    # The set must exercise what the ground truth differs in.
    assert sum(a["iscrowd"] for a in coco["annotations"]) >= 3
    return root, path, coco, detections


class FixedDetector:
    """Stands in for a model: returns the fixed detections of each image.

    It recognises an image on the canvas by its background colour and finds
    where it was pasted and how large it is from the pixels alone (the part
    that is not padding grey), so the letterbox geometry it uses is measured,
    not taken from the code under test. Detections go out in canvas pixels.
    """

    strides = [8, 16, 32, 64]
    anchors = np.ones((4, 3, 2), np.float32)
    image_size = None
    head_names = ("detection",)

    def __init__(self, coco, detections, width=16):
        colours = {background(i): image for i, image in enumerate(coco["images"])}
        self.images = colours
        self.detections = detections
        self.width = width
        self.canvases = {}  # image id -> (height, width) of its batch canvas

    def detection_function(self, task, prediction_decoder=None):
        del task, prediction_decoder
        return self.detect

    def detect(self, images):
        pixels = np.round(np.asarray(images) * 255).astype(np.int64)
        batch = len(pixels)
        boxes = np.zeros((batch, self.width, 4), np.float32)
        scores = np.zeros((batch, self.width), np.float32)
        classes = np.full((batch, self.width), -1, np.int32)
        counts = np.zeros(batch, np.int32)
        for row, canvas in enumerate(pixels):
            content = (canvas != GREY).any(-1)
            ys, xs = np.nonzero(content.any(1))[0], np.nonzero(content.any(0))[0]
            top, bottom, left, right = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
            image = self.images[tuple(int(v) for v in canvas[top, left])]
            self.canvases[image["id"]] = canvas.shape[:2]
            scale = np.array([right - left, bottom - top] * 2) / np.array(
                [image["width"], image["height"]] * 2
            )
            offset = np.array([left, top, left, top])
            found = self.detections[image["id"]]
            for column, (category, box, score) in enumerate(found):
                boxes[row, column] = np.asarray(box) * scale + offset
                scores[row, column], classes[row, column] = score, category
            counts[row] = len(found)
        return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": counts}


def pycocotools_on_file(path, detections):
    """The reference: pycocotools on the annotation file, as the official test.py."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = [
        {
            "image_id": image_id,
            "category_id": CATEGORY_IDS[category],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score,
        }
        for image_id, found in detections.items()
        for category, (x1, y1, x2, y2), score in found
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats)


def stats(metrics):
    return np.array([metrics[name] for name in COCO_STAT_NAMES])


def official_canvases(coco, image_size, stride, batch_size):
    """Canvas of each image id by the official formula (via the tested planner,
    whose shapes the hand-computed tests above pin down)."""
    sizes = [(image["height"], image["width"]) for image in coco["images"]]
    plan = plan_rect_batches(sizes, batch_size, image_size, stride)
    return {image["id"]: tuple(plan.canvas[i]) for i, image in enumerate(coco["images"])}


def test_both_protocols_score_fixed_detections_as_pycocotools_on_the_file(dataset, monkeypatch):
    from yolor_keras.data import read_coco_json

    _, path, coco, detections = dataset
    detector = FixedDetector(coco, detections)
    monkeypatch.setattr(evaluation_loop, "detection_function", detector.detection_function)
    source = read_coco_json(path, verbose=False)
    reference = pycocotools_on_file(path, detections)

    batches, info = evaluation_loop.evaluation_batches(
        source, detector, image_size=256, batch_size=3, protocol="official"
    )
    official = evaluation_loop.evaluate(detector, batches, info, verbose=False)
    np.testing.assert_allclose(stats(official), reference, atol=1e-4)
    assert 0.2 < official["mAP"] < 0.9
    # Canvases by hand (sorted h/w: 400x200, 500x333, 640x480 | 320x320,
    # 300x300, 480x640 | 333x500), see the test above: landscape batch
    # 256 x 320, mixed batch 320 x 320, portrait batch (h/w 1.5:
    # ceil(4 / 1.5 + 0.5) = 4) 320 x 256.
    width_height = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    expected = {
        (400, 200): (256, 320), (500, 333): (256, 320), (640, 480): (256, 320),
        (320, 320): (320, 320), (300, 300): (320, 320), (480, 640): (320, 320),
        (333, 500): (320, 256),
    }  # fmt: skip
    assert {i: expected[width_height[i]] for i in width_height} == detector.canvases
    assert detector.canvases == official_canvases(coco, 256, 64, 3)

    # The square protocol letterboxes differently but maps back just as well.
    batches, info = evaluation_loop.evaluation_batches(
        source, detector, image_size=256, batch_size=3, protocol="square"
    )
    square = evaluation_loop.evaluate(detector, batches, info, verbose=False)
    np.testing.assert_allclose(stats(square), reference, atol=1e-4)
    assert set(detector.canvases.values()) == {(256, 256)}


def test_the_readers_records_would_score_differently(dataset, monkeypatch):
    """What the annotation file changes: crowd regions dropped by the reader
    turn detections on them into false positives, and box areas move objects
    between the small / medium / large ranges."""
    from yolor_keras.data import read_coco_json

    _, path, coco, detections = dataset
    detector = FixedDetector(coco, detections)
    monkeypatch.setattr(evaluation_loop, "detection_function", detector.detection_function)
    source = read_coco_json(path, verbose=False)
    assert annotation_file(source) == str(path)
    batches, info = evaluation_loop.evaluation_batches(
        source, detector, image_size=256, batch_size=4, protocol="official"
    )
    from_file = stats(evaluation_loop.evaluate(detector, batches, info, verbose=False))
    from_records = stats(
        evaluation_loop.evaluate(
            detector, batches, info, verbose=False, annotations=source.to_coco_dict()
        )
    )
    np.testing.assert_allclose(from_file, pycocotools_on_file(path, detections), atol=1e-4)
    assert from_records[0] < from_file[0] - 0.02  # AP: crowd hits became false positives
    assert np.abs(from_records[3:6] - from_file[3:6]).max() > 0.02  # APs / APm / APl


def test_yolor_evaluate_equals_pycocotools_on_the_annotation_file(
    dataset, monkeypatch, tmp_path, capsys
):
    import keras

    from yolor_keras import cli

    root, path, coco, detections = dataset
    detector = FixedDetector(coco, detections)
    monkeypatch.setattr(evaluation_loop, "detection_function", detector.detection_function)
    monkeypatch.setattr(keras.saving, "load_model", lambda *args, **kwargs: detector)
    metrics_path, results_path = tmp_path / "metrics.json", tmp_path / "results.json"
    # No --image-size or --protocol: a P6-family model (largest stride 64) is
    # evaluated at 1280 by the official protocol.
    code = cli.main(
        [
            "evaluate", "--model", "model.keras", "--data", str(root), "--split", "val",
            "--batch-size", "3", "--json", str(metrics_path),
            "--save-results", str(results_path),
        ]
    )  # fmt: skip
    assert code == 0
    assert "at 1280 px (official protocol" in capsys.readouterr().out
    metrics = json.loads(metrics_path.read_text())
    np.testing.assert_allclose(stats(metrics), pycocotools_on_file(path, detections), atol=1e-4)
    # By hand, sorted h/w 0.5, 0.666, 0.75 | 1, 1, 1.333 | 1.5: the landscape
    # batch takes 0.75 -> ceil(0.75 * 20 + 0.5) = 16 -> 1024 high, 1344 wide;
    # the mixed one 1344 x 1344; the portrait one 1 / 1.5 -> ceil(13.83) = 14
    # -> 896 wide.
    width_height = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    canvases = {width_height[i]: shape for i, shape in detector.canvases.items()}
    assert canvases == {
        (400, 200): (1024, 1344), (500, 333): (1024, 1344), (640, 480): (1024, 1344),
        (320, 320): (1344, 1344), (300, 300): (1344, 1344), (480, 640): (1344, 1344),
        (333, 500): (1344, 896),
    }  # fmt: skip

    # The saved results are the fixed detections, mapped back to original
    # pixels (to the 1e-3 px rounding of the official results file).
    saved = json.loads(results_path.read_text())
    assert len(saved) == sum(len(found) for found in detections.values())
    by_image = {}
    for record in saved:
        by_image.setdefault(record["image_id"], []).append(record)
    for image_id, found in detections.items():
        records = sorted(by_image[image_id], key=lambda record: -record["score"])
        expected = sorted(found, key=lambda item: -item[2])
        for record, (category, (x1, y1, x2, y2), _score) in zip(records, expected):
            assert record["category_id"] == CATEGORY_IDS[category]
            np.testing.assert_allclose(record["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=2e-3)


def test_yolor_evaluate_with_one_image_per_batch_gives_each_its_own_canvas(
    dataset, monkeypatch, tmp_path
):
    import keras

    from yolor_keras import cli

    root, path, coco, detections = dataset
    detector = FixedDetector(coco, detections)
    detector.strides = [8, 16, 32]  # CSP family: 640 and stride 32 by default
    monkeypatch.setattr(evaluation_loop, "detection_function", detector.detection_function)
    monkeypatch.setattr(keras.saving, "load_model", lambda *args, **kwargs: detector)
    metrics_path = tmp_path / "metrics.json"
    code = cli.main(
        [
            "evaluate", "--model", "model.keras", "--data", str(root), "--split", "val",
            "--batch-size", "1", "--json", str(metrics_path),
        ]
    )  # fmt: skip
    assert code == 0
    np.testing.assert_allclose(
        stats(json.loads(metrics_path.read_text())),
        pycocotools_on_file(path, detections),
        atol=1e-4,
    )
    width_height = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    canvases = {width_height[i]: shape for i, shape in detector.canvases.items()}
    # By hand at 640 / 32: 640x480 -> [0.75, 1]: ceil(15.5) = 16 -> 512 high,
    # ceil(20.5) = 21 -> 672 wide; 500x333 (h/w 0.666): ceil(13.82) = 14 ->
    # 448; 400x200: ceil(10.5) = 11 -> 352; squares 672 x 672; 480x640 and
    # 333x500 transposed.
    assert canvases == {
        (640, 480): (512, 672), (480, 640): (672, 512), (320, 320): (672, 672),
        (500, 333): (448, 672), (333, 500): (672, 448), (400, 200): (352, 672),
        (300, 300): (672, 672),
    }  # fmt: skip


def test_a_real_tiny_model_runs_through_the_official_protocol(dataset, tmp_path):
    """No stand-in: a random tiny YOLOR-P6 through rect batches of several
    canvas shapes; its (poor) scores still equal pycocotools on the file."""
    from yolor_keras.data import read_coco_json
    from yolor_keras.tasks import YOLORObjectDetector

    _, path, coco, _ = dataset
    model = YOLORObjectDetector.from_preset(
        "yolor_p6", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33
    )
    source = read_coco_json(path, verbose=False)
    batches, info = evaluation_loop.evaluation_batches(
        source, model, image_size=128, batch_size=3, protocol="official"
    )
    shapes = {tuple(images.shape[1:3]) for images, _ in batches}
    assert shapes == {(128, 192), (192, 192), (192, 128)}  # ceil(2 * s + 0.5) * 64
    results_path = tmp_path / "results.json"
    metrics = evaluation_loop.evaluate(
        model, batches, info, verbose=False, results_path=results_path
    )
    saved = json.loads(results_path.read_text())
    assert {record["image_id"] for record in saved} <= {image["id"] for image in coco["images"]}
    found = {}
    for record in saved:
        x1, y1, w, h = record["bbox"]
        found.setdefault(record["image_id"], []).append(
            (CATEGORY_IDS.index(record["category_id"]), [x1, y1, x1 + w, y1 + h], record["score"])
        )
    np.testing.assert_allclose(stats(metrics), pycocotools_on_file(path, found), atol=1e-4)


# --------------------------------------------------------------------------
# Ground truth selection.


def test_ground_truth_is_the_file_for_coco_and_the_records_otherwise(dataset, tmp_path):
    from yolor_keras.data import read_coco_json
    from yolor_keras.data import read_yolo_txt

    _, path, coco, _ = dataset
    loaded = ground_truth(read_coco_json(path, verbose=False))
    assert loaded["annotations"] == coco["annotations"]  # crowds and areas as annotated

    # A YOLO folder has no file: its records are the ground truth.
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    Image.fromarray(np.full((40, 80, 3), 30, np.uint8)).save(images / "a.png")
    (labels / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    source = read_yolo_txt(images, class_names=["x", "y"], verbose=False)
    assert annotation_file(source) is None
    records = ground_truth(source)
    assert len(records["annotations"]) == 1
    np.testing.assert_allclose(records["annotations"][0]["bbox"], [30, 10, 20, 20])
    assert records["annotations"][0]["area"] == pytest.approx(400)


def test_annotation_file_errors_name_the_file_and_missing_fields_are_filled(tmp_path):
    path = tmp_path / "instances_x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="instances_x.json"):
        load_annotation_file(path)
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="categories"):
        load_annotation_file(path)
    path.write_text(
        json.dumps({"images": [], "categories": [], "annotations": [{"id": 4, "bbox": [1, 2]}]})
    )
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 4\)"):
        load_annotation_file(path)
    path.write_text(
        json.dumps(
            {"images": [], "categories": [], "annotations": [{"id": 1, "bbox": [0, 0, 4, 5]}]}
        )
    )
    annotation = load_annotation_file(path)["annotations"][0]
    assert annotation["area"] == 20 and annotation["iscrowd"] == 0
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_annotation_file(tmp_path / "missing.json")


def test_official_protocol_refuses_a_fixed_size_model(dataset):
    from yolor_keras.data import read_coco_json

    _, path, _, _ = dataset

    class FixedSize:
        strides = [8, 16, 32]
        image_size = 640

    with pytest.raises(ValueError, match="fixed input size 640"):
        evaluation_loop.evaluation_batches(
            read_coco_json(path, verbose=False), FixedSize(), protocol="official"
        )
    with pytest.raises(ValueError, match="protocol"):
        evaluation_loop.evaluation_batches(
            read_coco_json(path, verbose=False), FixedSize(), protocol="rect"
        )


def test_training_callback_scores_against_the_annotation_file(dataset, monkeypatch):
    """The training-time evaluation (square batches built by the trainer) uses
    the same ground truth as `yolor evaluate`."""
    from yolor_keras.data import build_dataset
    from yolor_keras.training.callbacks import EvaluationCallback

    root, path, coco, detections = dataset
    detector = FixedDetector(coco, detections)
    detector.optimizer = None  # no EMA to swap in
    monkeypatch.setattr(evaluation_loop, "detection_function", detector.detection_function)
    batches, info = build_dataset(
        root, split="val", image_size=128, batch_size=4, training=False, verbose=False
    )
    callback = EvaluationCallback(batches, info, verbose=False)
    callback.set_model(detector)
    logs = {}
    callback.on_epoch_end(0, logs)
    reference = pycocotools_on_file(path, detections)
    assert logs["val_mAP"] == pytest.approx(reference[0], abs=1e-4)
    assert logs["val_mAP50"] == pytest.approx(reference[1], abs=1e-4)
