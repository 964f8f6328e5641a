"""COCO JSON reader: category mapping, boxes, and every kind of bad data."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from yolor_keras.data import read_coco_json
from yolor_keras.data import report as reasons
from yolor_keras.data.image_decoding import read_image

CATEGORIES = [
    {"id": 3, "name": "car"},
    {"id": 12, "name": "sign"},
    {"id": 7, "name": "bus"},
]


def _annotation(image_id, category_id, bbox, **extra):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_category_ids_become_contiguous_in_id_order(write_coco, encode, plain_image):
    image = encode(plain_image(40, 60))
    path, image_dir = write_coco(
        {"a.jpg": image},
        [_annotation(1, 12, [10, 5, 20, 10]), _annotation(1, 3, [0, 0, 5, 5])],
        CATEGORIES,
    )
    records = read_coco_json(path, image_dir, verbose=False)
    assert records.class_names == ("car", "bus", "sign")
    assert records.category_ids == (3, 7, 12)
    sample = records.samples[0]
    # xywh -> xyxy, in annotation order; "sign" (id 12) is class 2.
    np.testing.assert_allclose(sample.boxes, [[10, 5, 30, 15], [0, 0, 5, 5]])
    np.testing.assert_array_equal(sample.classes, [2, 0])
    assert (sample.height, sample.width) == (40, 60)
    assert records.report.clean


def test_bad_images_are_skipped_and_reported(write_coco, encode, plain_image, capsys):
    # Noise, so that the entropy-coded data dwarfs the header.
    noise = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    good = encode(noise)
    sos = good.index(b"\xff\xda")
    images = {
        "good.jpg": good,
        "empty.jpg": b"",
        "garbage.jpg": b"this is not an image at all",
        "truncated.jpg": good[: len(good) // 2],
        # A second frame header inside the scan: the header and the end
        # marker look fine, only a real decode fails.
        "corrupt.jpg": good[: sos + 20] + b"\xff\xc0" + good[sos + 22 :],
        "tiny.png": encode(plain_image(5, 5), "PNG"),
        "missing.jpg": None,
    }
    path, image_dir = write_coco(images, [], CATEGORIES)
    records = read_coco_json(path, image_dir, verbose=True)
    assert [sample.name for sample in records.samples] == ["good.jpg"]
    assert records.report.skipped == {
        reasons.EMPTY_IMAGE: 1,
        reasons.UNREADABLE_IMAGE: 2,
        reasons.TRUNCATED_IMAGE: 1,
        reasons.TINY_IMAGE: 1,
        reasons.MISSING_IMAGE: 1,
    }
    printed = capsys.readouterr().out
    assert "1 of 7 images usable" in printed
    assert "truncated.jpg" in printed and "missing.jpg" in printed

    # The header-only check lets the corrupt file through, and the pipeline
    # must then tolerate it (see test_pipeline); the decode check does not.
    fast = read_coco_json(path, image_dir, verify="header", verbose=False)
    assert sorted(sample.name for sample in fast.samples) == ["corrupt.jpg", "good.jpg"]
    assert not fast.fully_verified and records.fully_verified


@pytest.mark.parametrize(
    "mode, image_format",
    [("L", "JPEG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGB", "TIFF")],
)
def test_non_rgb_images_decode_to_rgb(write_coco, encode, mode, image_format):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (24, 32, 3), np.uint8)
    data = encode(array, image_format, mode=mode)
    path, image_dir = write_coco({f"x.{image_format.lower()}": data}, [], CATEGORIES)
    records = read_coco_json(path, image_dir, verbose=False)
    sample = records.samples[0]
    expected_repair = reasons.REENCODED if image_format == "TIFF" else reasons.CONVERTED_TO_RGB
    assert records.report.repaired[expected_repair] == 1

    is_path = not isinstance(sample.image, bytes)
    source = sample.image if is_path else tf.constant(sample.image)
    decoded = read_image(tf.constant(source), tf.constant(is_path)).numpy()
    reference = np.asarray(Image.open(image_dir + "/" + sample.name).convert("RGB"))
    assert decoded.shape == (24, 32, 3)
    # JPEG decoders differ by a few levels; lossless formats match exactly.
    tolerance = 3.0 if image_format == "JPEG" else 0.0
    assert np.abs(decoded.astype(float) - reference).mean() <= tolerance


def test_boxes_are_clipped_or_dropped_and_counted(write_coco, encode, plain_image):
    image = encode(plain_image(40, 60))
    annotations = [
        _annotation(1, 3, [50, 30, 20, 20]),  # beyond the corner: clipped
        _annotation(1, 3, [10, 10, 0, 5]),  # zero width: dropped
        _annotation(1, 3, [70, 10, 5, 5]),  # fully outside: empty after clip
        _annotation(1, 99, [1, 1, 5, 5]),  # unknown category
        _annotation(1, 3, [1, 1, 5]),  # malformed bbox
        _annotation(1, 3, [0, 0, 30, 30], iscrowd=1),  # crowd: excluded
        _annotation(42, 3, [0, 0, 5, 5]),  # unknown image
        _annotation(1, 7, [2, 3, 4, 5]),  # fine
    ]
    path, image_dir = write_coco({"a.jpg": image}, annotations, CATEGORIES)
    records = read_coco_json(path, image_dir, verbose=False)
    sample = records.samples[0]
    np.testing.assert_allclose(sample.boxes, [[50, 30, 60, 40], [2, 3, 6, 8]])
    np.testing.assert_array_equal(sample.classes, [0, 1])
    report = records.report
    assert report.repaired == {reasons.BOX_CLIPPED: 1}
    assert report.skipped == {
        reasons.EMPTY_BOX: 2,
        reasons.UNKNOWN_CATEGORY: 1,
        reasons.BAD_ANNOTATION: 1,
        reasons.UNKNOWN_IMAGE: 1,
    }
    assert report.noted == {reasons.CROWD_EXCLUDED: 1}


def test_annotated_size_mismatch_rescales_boxes(write_coco, encode, plain_image):
    image = encode(plain_image(40, 60))  # the file is 60 x 40
    entries = [{"id": 1, "file_name": "a.jpg", "width": 120, "height": 80}]
    path, image_dir = write_coco(
        {"a.jpg": image}, [_annotation(1, 3, [20, 10, 40, 20])], CATEGORIES, entries
    )
    records = read_coco_json(path, image_dir, verbose=False)
    np.testing.assert_allclose(records.samples[0].boxes, [[10, 5, 30, 15]])
    assert records.report.repaired == {reasons.SIZE_MISMATCH: 1}


def test_nothing_usable_raises(write_coco):
    path, image_dir = write_coco({"a.jpg": b"", "b.jpg": None}, [], CATEGORIES)
    with pytest.raises(ValueError, match="no usable images"):
        read_coco_json(path, image_dir, verbose=False)


def test_malformed_files_name_the_file_and_field(tmp_path):
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        read_coco_json(bad_json, tmp_path, verbose=False)
    no_images = tmp_path / "no_images.json"
    no_images.write_text(json.dumps({"categories": []}))
    with pytest.raises(ValueError, match="'images'"):
        read_coco_json(no_images, tmp_path, verbose=False)
    valid = tmp_path / "instances_val.json"
    valid.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(FileNotFoundError, match="pass image_dir"):
        read_coco_json(valid, verbose=False)


def test_coco_export_round_trips_the_ground_truth(write_coco, encode, plain_image):
    image = encode(plain_image(40, 60))
    path, image_dir = write_coco(
        {"a.jpg": image, "b.jpg": image},
        [_annotation(2, 12, [10, 5, 20, 10]), _annotation(1, 7, [1, 2, 3, 4])],
        CATEGORIES,
    )
    exported = read_coco_json(path, image_dir, verbose=False).to_coco_dict()
    boxes = {(a["image_id"], a["category_id"], tuple(a["bbox"])) for a in exported["annotations"]}
    assert boxes == {(2, 12, (10.0, 5.0, 20.0, 10.0)), (1, 7, (1.0, 2.0, 3.0, 4.0))}
    assert {c["id"] for c in exported["categories"]} == {3, 7, 12}
