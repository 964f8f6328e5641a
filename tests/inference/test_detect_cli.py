"""Tests of `yolor detect`: annotated images, detections.json, skipped files."""

import json
import os

import numpy as np
import pytest
from deployment_helper import encode
from deployment_helper import scene
from deployment_helper import tiny_detector
from PIL import Image

from yolor_keras.cli import main
from yolor_keras.inference import Predictor
from yolor_keras.inference.cli import _class_color

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def model_file(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    detector.save(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    (folder / "first.png").write_bytes(encode(scene(90, 150, seed=11)))
    (folder / "nested").mkdir()
    (folder / "nested" / "second.jpg").write_bytes(
        encode(scene(150, 60, seed=12), "JPEG", quality=95)
    )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def run_output(model_file, source, tmp_path_factory):
    """One `yolor detect` run over the folder: (exit code, out folder, stderr)."""
    out = tmp_path_factory.mktemp("out")
    names = out.parent / "names.txt"
    names.write_text("cat\ndog\nfox\n")
    import contextlib
    import io

    stderr = io.StringIO()
    # YOLOR_VERBOSE keeps `main` from replacing sys.stderr (its native-log
    # filter), which would bypass the redirection when this runs first.
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setenv("YOLOR_VERBOSE", "1")
        code = main(
            [
                "detect",
                "--model",
                str(model_file),
                "--source",
                str(source),
                "--out",
                str(out),
                "--image-size",
                str(IMAGE_SIZE),
                "--names",
                str(names),
            ]
        )
    return code, out, stderr.getvalue()


def test_folder_run_writes_annotations_json_and_skips_bad_files(detector, source, run_output):
    code, out, stderr = run_output
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    assert [entry["file"] for entry in report["skipped"]] == [str(source / "broken.jpg")]
    assert "broken.jpg" in stderr
    files = [entry["file"] for entry in report["images"]]
    assert files == [str(source / "first.png"), str(source / "nested" / "second.jpg")]

    # The JSON holds exactly what the Predictor finds in the same images.
    predictor = Predictor(detector, class_names=["cat", "dog", "fox"], image_size=IMAGE_SIZE)
    for entry in report["images"]:
        [expected] = predictor.predict([entry["file"]])
        boxes = np.array([d["box"] for d in entry["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(boxes, expected["boxes"], atol=0.01)
        assert [d["class_name"] for d in entry["detections"]] == expected["class_names"]
        original = Image.open(entry["file"])
        annotated = Image.open(entry["annotated"])
        assert annotated.size == original.size == (entry["width"], entry["height"])
    assert (out / "nested" / "second.jpg").is_file()


def test_boxes_are_drawn_in_their_class_colour(source, run_output):
    _, out, _ = run_output
    [entry] = [
        entry
        for entry in json.loads((out / "detections.json").read_text())["images"]
        if entry["file"].endswith("first.png")
    ]
    annotated = np.asarray(Image.open(out / "first.png").convert("RGB"))
    original = np.asarray(Image.open(source / "first.png").convert("RGB"))
    assert entry["detections"], "the tiny detector should find something"
    # The last box is drawn on top of all others: its left edge is its colour.
    last = entry["detections"][-1]
    x1, y1, x2, y2 = last["box"]
    row, column = int((y1 + y2) / 2), int(x1)
    patch = annotated[row - 1 : row + 2, column : column + 2].reshape(-1, 3)
    assert any(tuple(pixel) == _class_color(last["class"]) for pixel in patch)
    # Far from every box and label, the image is untouched.
    covered = np.zeros(original.shape[:2], bool)
    for detection in entry["detections"]:
        bx1, by1, bx2, by2 = detection["box"]
        covered[max(0, int(by1) - 14) : int(by2) + 2, max(0, int(bx1) - 2) : int(bx2) + 60] = True
    np.testing.assert_array_equal(annotated[~covered], original[~covered])


def test_missing_source_is_a_clear_error(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOLOR_VERBOSE", "1")  # capsys reads sys.stderr; see `detect_cli`
    code = main(
        [
            "detect",
            "--model",
            str(model_file),
            "--source",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err


# --out that would overwrite the images it reads.


@pytest.fixture
def photos(tmp_path):
    """A folder of two user images, and their bytes before any run."""
    folder = tmp_path / "photos"
    (folder / "day").mkdir(parents=True)
    (folder / "a.png").write_bytes(encode(scene(70, 90, seed=21)))
    (folder / "day" / "b.jpg").write_bytes(encode(scene(80, 60, seed=22), "JPEG", quality=90))
    return folder, {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def detect_cli(model_file, source, out, capsys, monkeypatch):
    # Keeps `main` from replacing sys.stderr (its native-log filter), which
    # capsys reads.
    monkeypatch.setenv("YOLOR_VERBOSE", "1")
    code = main(
        [
            "detect",
            "--model",
            str(model_file),
            "--source",
            str(source),
            "--out",
            str(out),
            "--image-size",
            str(IMAGE_SIZE),
        ]
    )
    return code, capsys.readouterr().err


def assert_untouched(photos):
    folder, before = photos
    after = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "source, out",
    [
        ("photos", "photos"),  # the source folder itself
        ("photos", "link"),  # a symlink to it
        ("photos", "photos/day"),  # a folder holding source images
        ("photos/a.png", "photos"),  # one file, written beside itself
        ("photos/day/b.jpg", "link/day"),  # the same, through the symlink
    ],
)
def test_out_over_the_sources_is_refused_before_anything_is_written(
    model_file, photos, source, out, capsys, monkeypatch
):
    root = photos[0].parent
    (root / "link").symlink_to(photos[0], target_is_directory=True)
    code, err = detect_cli(model_file, root / source, root / out, capsys, monkeypatch)
    assert code == 2
    assert f"yolor detect: --out {root / out}" in err and "Choose another --out" in err
    assert "Traceback" not in err
    assert_untouched(photos)  # no annotated copy, no detections.json


def test_out_file_linked_to_a_source_is_refused(model_file, photos, tmp_path, capsys, monkeypatch):
    folder, _ = photos
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(folder / "a.png")
    code, err = detect_cli(model_file, folder, out, capsys, monkeypatch)
    assert code == 2
    assert f"annotated copy of {folder / 'a.png'} would overwrite the source image" in err
    assert_untouched(photos)


def test_hard_linked_output_is_replaced_not_written_through(
    model_file, photos, tmp_path, capsys, monkeypatch
):
    # A hard link has no path of its own to compare; the annotated copy is
    # renamed into place, so the source's bytes cannot change.
    folder, before = photos
    out = tmp_path / "out"
    out.mkdir()
    os.link(folder / "a.png", out / "a.png")
    code, _ = detect_cli(model_file, folder, out, capsys, monkeypatch)
    assert code == 0
    assert_untouched(photos)
    assert (out / "a.png").read_bytes() != before[folder / "a.png"]
    assert not os.path.samefile(out / "a.png", folder / "a.png")
    assert sorted(os.listdir(out)) == ["a.png", "day", "detections.json"]


def test_out_beside_the_sources_is_allowed(model_file, photos, tmp_path, capsys, monkeypatch):
    folder, _ = photos
    code, _ = detect_cli(model_file, folder, tmp_path / "annotated", capsys, monkeypatch)
    assert code == 0
    assert_untouched(photos)
    assert (tmp_path / "annotated" / "day" / "b.jpg").is_file()
