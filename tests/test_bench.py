"""Tests of `python -m yolor_keras.bench`: structure and sanity of its figures, not speed."""

import pytest
from deployment_helper import tiny_detector

from yolor_keras import bench

IMAGE_SIZE = 64
# A tiny model at 64 px reaches a small fraction of a matmul's rate; twice
# the peak would mean the FLOP count or the timing is wrong.
MAX_SHARE = 2.0


@pytest.fixture(scope="module")
def peaks():
    return bench.measure_peaks(size=256, repeats=2)


def test_matmul_peaks_are_positive_and_finite(peaks):
    assert set(peaks) == {"fp32", "bf16"}
    for value in peaks.values():
        # 256^3 x 2 FLOP: between 1 GFLOP/s and 100 TFLOP/s on any CPU.
        assert 1 < value < 1e5


def _check_rows(rows, paths, gflops, peaks):
    assert [row["path"] for row in rows] == [label for label, _, _ in paths]
    for row, (_, precision, _) in zip(rows, paths):
        assert row["error"] is None or "XLA" in row["path"], row
        if row["error"]:
            continue
        assert row["precision"] == precision
        assert row["seconds"] > 0
        # The three figures are consistent with each other.
        assert row["gflops_per_s"] == pytest.approx(gflops / row["seconds"])
        assert row["share_of_peak"] == pytest.approx(row["gflops_per_s"] / peaks[precision])
        assert 0 < row["share_of_peak"] < MAX_SHARE, row


def test_in_process_paths_of_a_tiny_model(peaks, capsys):
    detector = tiny_detector(image_size=IMAGE_SIZE)
    gflops = bench.graph_gflops(detector, IMAGE_SIZE)
    # Width 0.125 of P6 at 64 px: a few tens of MFLOP, far from the
    # 81.3 GFLOP of the full model at 640 (whose count is the docs').
    assert 0.005 < gflops < 0.5
    # XLA compilation and SavedModel exports take tens of seconds: those
    # paths are the slow test's.
    paths = [path for path in bench.PATHS if path[2] in ("keras", "folded")]
    rows = bench.benchmark_paths(detector, IMAGE_SIZE, peaks, repeats=1, paths=paths, gflops=gflops)
    _check_rows(rows, paths, gflops, peaks)
    bench.print_path_rows("tiny", bench.official_parameter_count(detector), gflops, rows)
    printed = capsys.readouterr().out
    for label, _, _ in paths:
        assert label in printed


@pytest.mark.slow
def test_xla_and_saved_model_paths_of_a_tiny_model(peaks, tmp_path):
    detector = tiny_detector(image_size=IMAGE_SIZE)
    gflops = bench.graph_gflops(detector, IMAGE_SIZE)
    paths = [path for path in bench.PATHS if path[2] in ("folded_xla", "saved_model")]
    rows = bench.benchmark_paths(
        detector, IMAGE_SIZE, peaks, repeats=1, paths=paths, work_dir=tmp_path, gflops=gflops
    )
    _check_rows(rows, paths, gflops, peaks)
    assert (tmp_path / f"{detector.name}_bf16" / "1" / "saved_model.pb").is_file()


def test_command_line_refuses_bad_options():
    with pytest.raises(SystemExit):
        bench.main(["table", "--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.main(["nonsense"])
