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


def test_rounds_report_the_median_of_per_round_ratios():
    # Three rounds; the load moves between them, so each round's ratio is
    # taken between loaders timed next to each other, and the median of
    # those ratios (not the ratio of median rates) is reported.
    def round_rows(official_rate, our_rate, official_cpu, our_cpu):
        rows = [
            {"loader": "official", "rate": official_rate, "first_batch_s": 1.0},
            {"loader": "ours", "rate": our_rate, "first_batch_s": 0.5, "build_s": 0.1},
        ]
        rows[0]["cpu_ms_per_image"], rows[1]["cpu_ms_per_image"] = official_cpu, our_cpu
        return throughput.add_ratios(rows, True)

    measured = [
        (round_rows(40.0, 80.0, 20.0, 10.0), 3.0),  # ratio 2.0, CPU ratio 2.0
        (round_rows(20.0, 30.0, 30.0, 20.0), 6.0),  # ratio 1.5, CPU ratio 1.5
        (round_rows(50.0, 55.0, 12.0, 10.0), 4.0),  # ratio 1.1, CPU ratio 1.2
    ]
    official, ours = throughput.combine_rounds(measured)
    assert official["ratio"] == 1.0 and official["rate"] == 40.0
    assert ours["ratio"] == pytest.approx(1.5)
    assert ours["cpu_ratio"] == pytest.approx(1.5)
    # The ratio of the median rates would be 55 / 40 = 1.375.
    assert ours["rate"] == 55.0 and ours["cpu_ms_per_image"] == 10.0
    assert [r["ratio"] for r in ours["rounds"]] == pytest.approx([2.0, 1.5, 1.1])
    assert ours["load"] == [3.0, 6.0, 4.0]
    assert "build_s" in ours and "build_s" not in official
    assert len(throughput.markdown_table([official, ours]).splitlines()) == 4


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds=0"):
        throughput.data_rows(images=1, rounds=0, verbose=False)
