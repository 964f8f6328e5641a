"""The data benchmark's pieces: its dataset, its table, its errors."""

import os

import numpy as np
import pytest
from PIL import Image

from yolor_keras.data import read_yolo_txt
from yolor_keras.data import throughput


def test_sources_are_yolo_txt_both_loaders_read(tmp_path):
    image_dir, mean_bytes = throughput.write_yolo_sources(tmp_path, 3, width=96, height=64)
    names = sorted(os.listdir(image_dir))
    assert names == ["000000.jpg", "000001.jpg", "000002.jpg"]
    sizes = [os.path.getsize(os.path.join(image_dir, n)) for n in names]
    assert mean_bytes == pytest.approx(np.mean(sizes))
    for name in names:
        with Image.open(os.path.join(image_dir, name)) as picture:
            assert picture.size == (96, 64) and picture.format == "JPEG"
        # The official label path rule: /images/ -> /labels/, suffix .txt.
        label = os.path.join(tmp_path, "labels", name.replace(".jpg", ".txt"))
        with open(label) as file:
            lines = file.read().splitlines()
        # No blank line: the official loader takes one for a row of 0 columns.
        assert all(len(line.split()) == 5 for line in lines)
        if lines:
            rows = np.array([line.split() for line in lines], np.float64)
            assert ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
    source = read_yolo_txt(image_dir, num_classes=5, verbose=False)
    assert source.num_samples == 3 and source.report.clean
    assert sum(len(s.classes) for s in source.samples) > 0


def test_official_needs_its_code(tmp_path):
    with pytest.raises(FileNotFoundError, match="no utils/datasets.py"):
        throughput.official(tmp_path, tmp_path / "nowhere", tmp_path / "hyp.yaml")


def test_table_ratios():
    rows = [
        {
            "loader": "official",
            "rate": 50.0,
            "first_batch_s": 2.0,
            "ratio": 1.0,
            "cpu_ms_per_image": 40.0,
            "cpu_ratio": 1.0,
        },
        {
            "loader": "ours",
            "rate": 80.0,
            "first_batch_s": 1.25,
            "ratio": 1.6,
            "cpu_ms_per_image": 16.0,
            "cpu_ratio": 2.5,
        },
    ]
    table = throughput.markdown_table(rows).splitlines()
    cores = os.cpu_count()
    # img/s on free cores = cores * 1000 / CPU ms per image.
    assert table[2] == f"| official | 50.0 | 1.00x | 40.0 | {cores * 25} | 1.00x | 2.0 |"
    assert table[3] == f"| ours | 80.0 | 1.60x | 16.0 | {round(cores * 62.5)} | 2.50x | 1.2 |"
