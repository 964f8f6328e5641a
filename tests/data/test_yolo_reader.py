"""YOLO txt reader: normalised boxes, label lookup, and bad label lines."""

import numpy as np
import pytest

from yolor_keras.data import read_yolo_data_yaml
from yolor_keras.data import read_yolo_txt
from yolor_keras.data import report as reasons


@pytest.fixture
def yolo_dataset(tmp_path, encode, plain_image):
    """images/train + labels/train in the official layout."""

    def write(labels, sizes=None):
        sizes = sizes or {}
        (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        for name, text in labels.items():
            height, width = sizes.get(name, (50, 100))
            (tmp_path / "images" / "train" / f"{name}.jpg").write_bytes(
                encode(plain_image(height, width))
            )
            if text is not None:
                (tmp_path / "labels" / "train" / f"{name}.txt").write_text(text)
        return tmp_path / "images" / "train"

    return write


def test_normalised_boxes_become_pixels(yolo_dataset):
    images = yolo_dataset({"a": "1 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.2 0.4\n"})
    records = read_yolo_txt(images, class_names=["cat", "dog"], verbose=False)
    sample = records.samples[0]
    # 100 x 50 image: cx 50 +- 10, cy 25 +- 10; cx 10 +- 10, cy 10 +- 10.
    np.testing.assert_allclose(sample.boxes, [[40, 15, 60, 35], [0, 0, 20, 20]])
    np.testing.assert_array_equal(sample.classes, [1, 0])
    assert records.class_names == ("cat", "dog")
    assert records.report.clean


def test_bad_lines_are_dropped_and_counted(yolo_dataset, capsys):
    text = "\n".join(
        [
            "0 0.5 0.5 0.2 0.2",
            "0 0.5 0.5 0.2",  # 4 fields
            "0 0.5 0.5 0.2 0.2 0.9",  # 6 fields
            "zero 0.5 0.5 0.2 0.2",  # not a number
            "1.5 0.5 0.5 0.2 0.2",  # fractional class
            "7 0.5 0.5 0.2 0.2",  # class out of range
            "-1 0.5 0.5 0.2 0.2",  # negative class
            "0 0.5 0.5 0 0.2",  # zero width
            "0 0.95 0.5 0.2 0.2",  # crosses the right edge: clipped
            "0 0.5 0.5 0.2 0.2",  # duplicate of line 1
            "",
        ]
    )
    images = yolo_dataset({"a": text, "b": None})
    records = read_yolo_txt(images, num_classes=2, verbose=True)
    by_name = {sample.name: sample for sample in records.samples}
    np.testing.assert_allclose(by_name["a.jpg"].boxes, [[40, 20, 60, 30], [85, 20, 100, 30]])
    assert len(by_name["b.jpg"].boxes) == 0  # no label file: background image
    report = records.report
    assert report.skipped == {
        reasons.BAD_LABEL_LINE: 3,
        reasons.CLASS_OUT_OF_RANGE: 3,
        reasons.EMPTY_BOX: 1,
        reasons.DUPLICATE_LABEL: 1,
    }
    assert report.repaired == {reasons.BOX_CLIPPED: 1}
    assert report.noted == {reasons.MISSING_LABEL_FILE: 1}
    printed = capsys.readouterr().out
    assert "2 of 2 images usable" in printed and "b.jpg" in printed


def test_num_classes_defaults_to_largest_id(yolo_dataset):
    images = yolo_dataset({"a": "4 0.5 0.5 0.2 0.2\n", "b": "2 0.5 0.5 0.2 0.2\n"})
    records = read_yolo_txt(images, verbose=False)
    assert records.num_classes == 5
    assert records.class_names == ("0", "1", "2", "3", "4")


def test_image_list_and_data_yaml(yolo_dataset, tmp_path):
    images = yolo_dataset({"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    listing = tmp_path / "train.txt"
    listing.write_text("images/train/b.jpg\nimages/train/missing.jpg\n")
    records = read_yolo_txt(listing, class_names=["x", "y"], verbose=False)
    assert [sample.name for sample in records.samples] == ["images/train/b.jpg"]
    np.testing.assert_array_equal(records.samples[0].classes, [1])
    assert records.report.skipped == {reasons.MISSING_IMAGE: 1}

    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("train: images/train\nnc: 2\nnames: ['x', 'y']\n")
    from_yaml = read_yolo_data_yaml(data_yaml, "train", verbose=False)
    assert len(from_yaml) == 2 and from_yaml.class_names == ("x", "y")
    with pytest.raises(ValueError, match="'val'"):
        read_yolo_data_yaml(data_yaml, "val", verbose=False)
    assert images.name == "train"


def test_names_and_count_must_agree(yolo_dataset):
    images = yolo_dataset({"a": "0 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(ValueError, match="num_classes=3"):
        read_yolo_txt(images, class_names=["x", "y"], num_classes=3, verbose=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_yolo_txt(images.parent / "nowhere", verbose=False)
