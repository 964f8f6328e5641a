"""Damaged datasets: each kind of damage is a clean error or a counted skip.

For every kind, the test checks that (a) no traceback reaches the user (a
`ValueError` naming the file and field, or nothing raised), (b) what was
dropped is counted in the reader's `DataReport`, (c) the good samples are
all still there, with their boxes, and (d) it stays fast.
"""

import io
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageOps

from yolor_keras.data import build_dataset
from yolor_keras.data import read_coco_json
from yolor_keras.data import read_yolo_txt
from yolor_keras.data import report as reasons
from yolor_keras.data.yolo_reader import MAX_INFERRED_CLASSES
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.tasks import YOLORObjectDetector


def _jpeg(height, width, color=(90, 90, 90), exif=None, rectangles=()):
    array = np.empty((height, width, 3), np.uint8)
    array[:] = color
    for x1, y1, x2, y2, fill in rectangles:
        array[y1:y2, x1:x2] = fill
    buffer = io.BytesIO()
    options = {"quality": 95}
    if exif is not None:
        options["exif"] = exif
    Image.fromarray(array).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _yolo(tmp_path, labels):
    """images/train + labels/train; labels: {name: text}. 100 x 50 images."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for name, text in labels.items():
        (tmp_path / "images" / "train" / f"{name}.jpg").write_bytes(_jpeg(50, 100))
        (tmp_path / "labels" / "train" / f"{name}.txt").write_text(text)
    return tmp_path / "images" / "train"


def _boxes_by_name(records):
    return {
        sample.name: (sample.boxes.tolist(), sample.classes.tolist()) for sample in records.samples
    }


GOOD_LABELS = {
    "a": "0 0.5 0.5 0.2 0.4\n",
    "b": "1 0.25 0.5 0.1 0.2\n2 0.75 0.5 0.1 0.2\n",
}
GOOD_BOXES = {
    "a.jpg": ([[40.0, 15.0, 60.0, 35.0]], [0]),
    "b.jpg": ([[20.0, 20.0, 30.0, 30.0], [70.0, 20.0, 80.0, 30.0]], [1, 2]),
}


# ---------------------------------------------------------------- YOLO labels


def test_huge_class_id_without_class_list_is_a_fast_counted_skip(tmp_path, capsys):
    # Today's failure: num_classes = 1e15 + 1 and a list of 1e15 names (OOM).
    labels = dict(GOOD_LABELS, c="1e15 0.5 0.5 0.2 0.2\n")
    images = _yolo(tmp_path, labels)
    start = time.perf_counter()
    records = read_yolo_txt(images)
    assert time.perf_counter() - start < 10.0
    assert records.num_classes == 3  # from the good ids, 0..2
    assert records.report.skipped == {reasons.CLASS_ID_OVER_CAP: 1}
    assert records.report.examples[reasons.CLASS_ID_OVER_CAP] == ["c.jpg"]
    assert records.report.num_usable == 3  # c.jpg stays, as a background image
    assert {k: v for k, v in _boxes_by_name(records).items() if k != "c.jpg"} == GOOD_BOXES
    printed = capsys.readouterr().out
    assert "num_classes=3 is inferred" in printed


def test_class_ids_just_under_the_cap_are_still_inferred(tmp_path):
    images = _yolo(tmp_path, {"a": f"{MAX_INFERRED_CLASSES - 1} 0.5 0.5 0.2 0.4\n"})
    records = read_yolo_txt(images, verbose=False)
    assert records.num_classes == MAX_INFERRED_CLASSES
    assert records.samples[0].classes.tolist() == [MAX_INFERRED_CLASSES - 1]


@pytest.mark.parametrize(
    "where, file_name, text",
    [
        ("labels/train", "classes.txt", "cat\ndog\nbird\n"),
        (".", "classes.txt", "cat\ndog\nbird\n"),
        (".", "data.yaml", "names:\n  0: cat\n  1: dog\n  2: bird\n"),
        (".", "dataset.yaml", "names: [cat, dog, bird]\nnc: 3\n"),
    ],
)
def test_typo_class_id_with_a_class_list_beside_the_labels(tmp_path, where, file_name, text):
    # Today's failure: the typo 99 silently makes a 100-class dataset.
    images = _yolo(tmp_path, dict(GOOD_LABELS, c="99 0.5 0.5 0.2 0.2\n"))
    (tmp_path / where / file_name).write_text(text)
    records = read_yolo_txt(images, verbose=False)
    assert records.class_names == ("cat", "dog", "bird")
    assert records.report.skipped == {reasons.CLASS_OUT_OF_RANGE: 1}
    assert records.report.examples[reasons.CLASS_OUT_OF_RANGE] == ["c.jpg"]
    assert {k: v for k, v in _boxes_by_name(records).items() if k != "c.jpg"} == GOOD_BOXES


def test_typo_class_id_without_class_list_is_printed(tmp_path, capsys):
    images = _yolo(tmp_path, dict(GOOD_LABELS, c="99 0.5 0.5 0.2 0.2\n"))
    records = read_yolo_txt(images)
    assert records.num_classes == 100
    # 0, 1, 2 and 99 occur: 96 ids below 100 never do, and the user is told.
    printed = capsys.readouterr().out
    assert "num_classes=100 is inferred" in printed
    assert "(96 ids below it never occur)" in printed


# --------------------------------------------------------------- COCO entries


def _coco(tmp_path, entries, annotations, files):
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    for name, data in files.items():
        path = image_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    annotation_file = tmp_path / "instances_test.json"
    annotation_file.write_text(
        json.dumps(
            {
                "images": entries,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    return str(annotation_file), str(image_dir)


GOOD_ENTRIES = [
    {"id": 1, "file_name": "good.jpg", "width": 60, "height": 40},
    {"id": 2, "file_name": "sub/nested.jpg", "width": 60, "height": 40},
]
GOOD_ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 6, 10, 12]},
    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 10, 30, 20]},
]
GOOD_FILES = {"good.jpg": _jpeg(40, 60), "sub/nested.jpg": _jpeg(40, 60)}


def _check_good_coco(records):
    boxes = {sample.image_id: sample.boxes.tolist() for sample in records.samples}
    assert boxes == {1: [[5.0, 6.0, 15.0, 18.0]], 2: [[20.0, 10.0, 50.0, 30.0]]}


def test_non_string_file_names_are_counted_skips(tmp_path):
    # Today's failure: TypeError from os.path.join for the number 7.
    entries = GOOD_ENTRIES + [
        {"id": 7, "file_name": 7},
        {"id": 8, "file_name": None},
        {"id": 9, "file_name": ["good.jpg"]},
    ]
    annotations = GOOD_ANNOTATIONS + [
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}
    ]
    records = read_coco_json(*_coco(tmp_path, entries, annotations, GOOD_FILES), verbose=False)
    assert records.report.skipped == {reasons.BAD_FILE_NAME: 3}
    assert records.report.num_indexed == 5 and records.report.num_usable == 2
    _check_good_coco(records)


def test_paths_outside_the_image_folder_are_counted_skips(tmp_path):
    # Today: "../secret.jpg", an absolute path and a symlink out are read.
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg(40, 60))
    files = dict(GOOD_FILES)
    annotation_file, image_dir = _coco(tmp_path, [], [], files)
    os.symlink(secret, os.path.join(image_dir, "link.jpg"))
    entries = GOOD_ENTRIES + [
        {"id": 10, "file_name": "../secret.jpg"},
        {"id": 11, "file_name": str(secret)},
        {"id": 12, "file_name": "link.jpg"},
        {"id": 13, "file_name": "sub/../../secret.jpg"},
    ]
    records = read_coco_json(*_coco(tmp_path, entries, GOOD_ANNOTATIONS, files), verbose=False)
    assert records.report.skipped == {reasons.PATH_OUTSIDE_ROOT: 4}
    assert {sample.image_id for sample in records.samples} == {1, 2}
    _check_good_coco(records)


def test_duplicate_image_ids_are_an_error_naming_the_file_and_id(tmp_path):
    # Today: the boxes of id 1 are attached to both entries, twice each.
    entries = GOOD_ENTRIES + [{"id": 1, "file_name": "again.jpg"}]
    files = dict(GOOD_FILES, **{"again.jpg": _jpeg(40, 60)})
    with pytest.raises(
        ValueError, match=r"instances_test\.json: image id 1 is used twice.*again\.jpg"
    ):
        read_coco_json(*_coco(tmp_path, entries, GOOD_ANNOTATIONS, files), verbose=False)


def test_bad_sizes_and_ids_are_counted_skips(tmp_path):
    # Today: TypeError comparing/dividing the string "640".
    entries = GOOD_ENTRIES + [
        {"id": 20, "file_name": "good.jpg", "width": "60", "height": 40},
        {"id": 21, "file_name": "good.jpg", "width": 60, "height": -40},
        {"id": 22, "file_name": "good.jpg", "width": True, "height": 40},
        {"id": "23", "file_name": "good.jpg"},
        {"file_name": "good.jpg"},
        "good.jpg",
    ]
    annotations = GOOD_ANNOTATIONS + [
        {"id": 9, "image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1]},
        {"id": 10, "image_id": 1, "category_id": {"id": 1}, "bbox": [0, 0, 1, 1]},
        "not an annotation",
    ]
    records = read_coco_json(*_coco(tmp_path, entries, annotations, GOOD_FILES), verbose=False)
    assert records.report.skipped == {
        reasons.BAD_IMAGE_SIZE: 3,
        reasons.BAD_IMAGE_ENTRY: 3,
        reasons.UNKNOWN_IMAGE: 2,
        reasons.UNKNOWN_CATEGORY: 1,
    }
    _check_good_coco(records)


# ------------------------------------------------------------ EXIF orientation


def _orientation_exif(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_rotated_photo_keeps_its_boxes_and_decodes_upright(tmp_path):
    # The displayed photo is 240 wide, 320 high, with a red box annotated on
    # it; the camera stored it as 320 x 240 pixels with Orientation=6.
    displayed = np.full((320, 240, 3), 90, np.uint8)
    displayed[200:300, 20:100] = (230, 20, 20)
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # turned back, 320 wide
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95, exif=_orientation_exif(6))
    data = buffer.getvalue()
    # Pillow, independently, shows the file as the displayed photo.
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert reference.shape == (320, 240, 3)
    assert reference[200:300, 20:100, 0].mean() > 200

    entries = [{"id": 1, "file_name": "phone.jpg", "width": 240, "height": 320}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 200, 80, 100]}]
    annotation_file, image_dir = _coco(tmp_path, entries, annotations, {"phone.jpg": data})
    for verify in ("decode", "header"):
        records = read_coco_json(annotation_file, image_dir, verify=verify, verbose=False)
        sample = records.samples[0]
        assert (sample.width, sample.height) == (240, 320)
        assert sample.boxes.tolist() == [[20.0, 200.0, 100.0, 300.0]]  # not stretched
        assert reasons.SIZE_MISMATCH not in records.report.repaired

    dataset, _ = build_dataset(records, image_size=64, batch_size=1, training=False, verbose=False)
    images, labels = next(iter(dataset))
    assert labels["original_size"][0].numpy().tolist() == [320, 240]
    x1, y1, x2, y2 = np.round(labels["boxes"][0, 0].numpy()).astype(int)
    inside = images[0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].numpy()
    assert inside[..., 0].mean() > 0.75 and inside[..., 1].mean() < 0.25  # red


# ------------------------------------------- images dropped by the pipeline


def _corrupt_jpeg():
    good = _jpeg(40, 60, rectangles=[(0, 0, 30, 20, (200, 10, 10))])
    sos = good.index(b"\xff\xda")
    return good[: sos + 20] + b"\xff\xc0" + good[sos + 22 :]


def test_header_verified_undecodable_image_is_counted(tmp_path, capsys):
    files = dict(GOOD_FILES, **{"bad.jpg": _corrupt_jpeg()})
    entries = GOOD_ENTRIES + [{"id": 3, "file_name": "bad.jpg", "width": 60, "height": 40}]
    source = read_coco_json(
        *_coco(tmp_path, entries, GOOD_ANNOTATIONS, files), verify="header", verbose=False
    )
    assert source.report.num_usable == 3  # the header check lets it in ...
    dataset, info = build_dataset(
        source, image_size=32, batch_size=2, training=False, verbose=False
    )
    seen = [int(i) for _, labels in dataset for i in labels["image_id"]]
    assert seen == [1, 2]  # ... the good ones all come, in order ...
    # ... and the dropped one is counted, once, even over two passes.
    seen_again = [int(i) for _, labels in dataset for i in labels["image_id"]]
    assert seen_again == [1, 2]
    assert info.report.skipped == {reasons.UNDECODABLE_IN_PIPELINE: 1}
    assert info.report.examples[reasons.UNDECODABLE_IN_PIPELINE] == ["bad.jpg"]
    assert info.report.num_usable == 2 and info.report.num_dropped == 1


def test_training_epochs_count_an_undecodable_image_once(tmp_path):
    files = {f"g{index}.jpg": _jpeg(40, 60) for index in range(3)}
    files["bad.jpg"] = _corrupt_jpeg()
    entries = [{"id": index + 1, "file_name": name} for index, name in enumerate(files)]
    source = read_coco_json(*_coco(tmp_path, entries, [], files), verify="header", verbose=False)
    # Shuffled and repeated epochs (the mosaic's repeats work the same way;
    # augment=False keeps the test fast).
    dataset, info = build_dataset(
        source, image_size=32, batch_size=1, training=True, augment=False, verbose=False
    )
    for _ in range(2):
        assert sum(int(images.shape[0]) for images, _ in dataset) == 3
    assert info.report.skipped == {reasons.UNDECODABLE_IN_PIPELINE: 1}
    assert info.report.num_usable == 3


def test_evaluation_on_a_subset_says_so(tmp_path, capsys):
    from yolor_keras.data.report import evaluation_coverage

    files = dict(GOOD_FILES, **{"bad.jpg": _corrupt_jpeg()})
    entries = GOOD_ENTRIES + [
        {"id": 3, "file_name": "bad.jpg", "width": 60, "height": 40},
        {"id": 4, "file_name": 4},
    ]
    source = read_coco_json(
        *_coco(tmp_path, entries, GOOD_ANNOTATIONS, files), verify="header", verbose=False
    )
    dataset, _ = build_dataset(source, image_size=32, batch_size=2, training=False, verbose=False)
    evaluated = sum(int(images.shape[0]) for images, _ in dataset)
    assert evaluation_coverage(source, evaluated) == {"images_evaluated": 2, "images_in_split": 4}
    printed = capsys.readouterr().out
    assert "evaluated on 2 of the 4 images" in printed
    assert "bad.jpg" in printed and reasons.BAD_FILE_NAME in printed
    assert evaluation_coverage(source, 4) == {"images_evaluated": 4, "images_in_split": 4}
    assert capsys.readouterr().out == ""


class _ConstantDetector:
    """A stand-in detector: one level, one anchor, one class, constant logits
    (every cell predicts a 16 px box at score 0.5), detected by the task's own
    `detect`."""

    anchors = np.array([[[16.0, 16.0]]], np.float32)
    strides = [32]
    head_names = ("detection",)
    detect = YOLORObjectDetector.detect
    decode = YOLORObjectDetector.decode
    outputs_by_head = YOLORObjectDetector.outputs_by_head
    prediction_decoder = NonMaxSuppression()

    def __call__(self, images, training=False):
        shape = tf.shape(images)
        raw = tf.zeros(tf.stack([shape[0], shape[1] // 32, shape[2] // 32, 1, 6]))
        return [tf.ensure_shape(raw, [None, None, None, 1, 6])]


def test_evaluate_reports_images_evaluated_and_in_split(tmp_path, capsys):
    from yolor_keras.evaluation import evaluate

    files = dict(GOOD_FILES, **{"bad.jpg": _corrupt_jpeg()})
    entries = GOOD_ENTRIES + [{"id": 3, "file_name": "bad.jpg", "width": 60, "height": 40}]
    source = read_coco_json(
        *_coco(tmp_path, entries, GOOD_ANNOTATIONS, files), verify="header", verbose=False
    )
    dataset, info = build_dataset(
        source, image_size=64, batch_size=2, training=False, verbose=False
    )
    metrics = evaluate(_ConstantDetector(), dataset, info, verbose=False)
    assert (metrics["images_evaluated"], metrics["images_in_split"]) == (2, 3)
    assert "evaluated on 2 of the 3 images" in capsys.readouterr().out
    assert 0.0 <= metrics["mAP50"] <= 1.0
