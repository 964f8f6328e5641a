"""Exports that fail part-way leave the previous export as it was, and loadable.

A SavedModel version folder, a `.tflite` or a `.onnx` file may be in use
(TF Serving polls the version folders) while a new export replaces it. Each
test here breaks an export at one step (inside the writer, in the
converter, in the checks, at the rename) and then compares the previous
artefact byte for byte and loads it. The real exports are made once per
module, at 64 pixels; the failing ones skip the expensive tracing where the
failure comes before it would matter.
"""

import hashlib
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import tiny_detector

from yolor_keras import atomic
from yolor_keras.cli import main
from yolor_keras.export import litert
from yolor_keras.export import onnx as onnx_export
from yolor_keras.export import saved_model
from yolor_keras.export.checks import ExportCheckError
from yolor_keras.export.folding import fold
from yolor_keras.export.litert import load_interpreter
from yolor_keras.export.litert import run_tflite

IMAGE_SIZE = 64
# `keras.export.ExportArchive()` returns an instance of a backend subclass,
# whose methods the exporters call.
ARCHIVE = type(keras.export.ExportArchive())


def digest(path):
    """SHA-256 over a file, or over every file (with its relative path) under a folder."""
    sha = hashlib.sha256()
    if os.path.isfile(path):
        with open(path, "rb") as file:
            sha.update(file.read())
        return sha.hexdigest()
    for root, folders, files in os.walk(path):
        folders.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            sha.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as file:
                sha.update(file.read())
    return sha.hexdigest()


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=128)


@pytest.fixture(scope="module")
def folded(detector):
    # Exporters take a deploy-form model as it is: the failing exports below
    # skip the fold.
    return fold(detector)


@pytest.fixture(scope="module")
def good_saved_model(detector, tmp_path_factory):
    """A real export, with what the writer and the check saw while it ran."""
    root = tmp_path_factory.mktemp("served") / "tiny"
    export_dir = root / "1"
    seen = {}
    real_write_out = ARCHIVE.write_out
    real_check = getattr(saved_model, "check_saved_model", None)

    def write_out(archive, filepath, **kwargs):
        seen["written_to"] = os.fspath(filepath)
        real_write_out(archive, filepath, **kwargs)
        seen["exists_after_write"] = export_dir.exists()

    def check(folder, name=None):
        seen["exists_during_check"] = export_dir.exists()
        seen["checked"] = os.fspath(folder)
        seen["checked_files"] = sorted(os.listdir(folder))
        if real_check is not None:
            real_check(folder, name=name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ARCHIVE, "write_out", write_out)
        patch.setattr(saved_model, "check_saved_model", check, raising=False)
        saved_model.export_saved_model(detector, str(export_dir), image_size=IMAGE_SIZE)
    return export_dir, seen


def run_saved_model(export_dir):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    image = tf.io.encode_png(tf.fill([40, 60, 3], tf.constant(90, tf.uint8)))
    outputs = serve(images=tf.reshape(image, [1]))
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture
def served(good_saved_model, tmp_path):
    """A copy of the good version folder to attack: (version folder, digest, outputs)."""
    export_dir = tmp_path / "tiny" / "1"
    shutil.copytree(good_saved_model[0], export_dir)
    return export_dir, digest(export_dir)


def assert_saved_model_intact(export_dir, before):
    assert digest(export_dir) == before
    # Nothing else beside it: no partial version, no hidden temporary.
    assert os.listdir(export_dir.parent) == ["1"]
    outputs = run_saved_model(export_dir)
    assert outputs["detection_boxes"].shape[0] == 1 and np.all(
        np.isfinite(outputs["detection_boxes"])
    )


def skip_tracing(monkeypatch):
    # The failures below happen at or after writing; tracing the serving
    # functions (tens of seconds on two cores) changes nothing about them.
    monkeypatch.setattr(ARCHIVE, "add_endpoint", lambda *args, **kwargs: None)


# ------------------------------------------------------------- SavedModel


def test_version_folder_appears_only_after_it_is_complete_and_checked(good_saved_model):
    export_dir, seen = good_saved_model
    written_to = seen["written_to"]
    # Written into a sibling that TF Serving does not take for a version.
    assert os.path.dirname(written_to) == str(export_dir.parent)
    assert os.path.basename(written_to).startswith(".")
    assert not os.path.basename(written_to).isdigit()
    assert seen["exists_after_write"] is False
    assert seen["exists_during_check"] is False
    assert seen["checked"] == written_to
    assert "saved_model.pb" in seen["checked_files"] and "assets.extra" in seen["checked_files"]
    assert os.listdir(export_dir.parent) == ["1"]
    assert run_saved_model(export_dir)["num_detections"].shape == (1,)


def test_crash_while_writing_keeps_the_previous_version(folded, served, monkeypatch):
    export_dir, before = served
    skip_tracing(monkeypatch)

    def crashing_write_out(archive, filepath, **kwargs):
        os.makedirs(filepath, exist_ok=True)
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as file:
            file.write(b"\x08\x01 half a graph")
        raise OSError("No space left on device")

    monkeypatch.setattr(ARCHIVE, "write_out", crashing_write_out)
    with pytest.raises(OSError, match="No space left"):
        saved_model.export_saved_model(
            folded, str(export_dir), image_size=IMAGE_SIZE, overwrite=True
        )
    assert_saved_model_intact(export_dir, before)


def test_export_that_does_not_load_is_refused_and_the_previous_version_kept(
    folded, served, monkeypatch
):
    export_dir, before = served
    skip_tracing(monkeypatch)

    def unloadable_write_out(archive, filepath, **kwargs):
        # "Succeeds" but writes a SavedModel that cannot be loaded.
        os.makedirs(os.path.join(filepath, "variables"), exist_ok=True)
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as file:
            file.write(b"not a protocol buffer")

    monkeypatch.setattr(ARCHIVE, "write_out", unloadable_write_out)
    with pytest.raises(ExportCheckError, match=re.escape(str(export_dir))):
        saved_model.export_saved_model(
            folded, str(export_dir), image_size=IMAGE_SIZE, overwrite=True
        )
    assert_saved_model_intact(export_dir, before)


def test_saved_model_check_refuses_nan_weights(tmp_path):
    """A NaN weight hides behind NMS (it only drops boxes); the check reads the weights."""

    class Broken(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable([1.0, float("nan")])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images):
            count = tf.shape(images)[0]
            return {
                "num_detections": tf.zeros([count], tf.int32),
                "detection_scores": tf.zeros([count, 5]),
            }

    module = Broken()
    folder = tmp_path / "broken"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    with pytest.raises(ExportCheckError, match="NaN"):
        saved_model.check_saved_model(str(folder), name="saved_models/broken/1")


# ---------------------------------------------------------------- TFLite


@pytest.fixture(scope="module")
def good_tflite(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    litert.export_tflite(detector, str(path), image_size=IMAGE_SIZE, nms=False)
    return path


@pytest.fixture
def previous_tflite(good_tflite, tmp_path):
    path = tmp_path / "tiny.tflite"
    shutil.copyfile(good_tflite, path)
    return path, digest(path)


def assert_tflite_intact(path, before):
    assert digest(path) == before
    assert os.listdir(path.parent) == [path.name]
    outputs = run_tflite(
        load_interpreter(str(path)), np.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, np.float32)
    )
    assert np.all(np.isfinite(outputs["predictions"]))


def test_weightless_conversion_is_refused_and_the_previous_file_kept(
    detector, previous_tflite, monkeypatch
):
    path, before = previous_tflite
    skip_tracing(monkeypatch)
    monkeypatch.setattr(ARCHIVE, "write_out", lambda *args, **kwargs: None)
    # The converter's known failure: a small file without the weights.
    monkeypatch.setattr(litert, "_convert", lambda *args: b"TFL3" + b"\0" * 15000)
    with pytest.raises(ExportCheckError, match="conversion lost them"):
        litert.export_tflite(detector, str(path), image_size=IMAGE_SIZE)
    assert_tflite_intact(path, before)


def test_failing_write_of_the_tflite_file_keeps_the_previous_file(
    detector, previous_tflite, monkeypatch
):
    path, before = previous_tflite
    skip_tracing(monkeypatch)
    monkeypatch.setattr(ARCHIVE, "write_out", lambda *args, **kwargs: None)
    # Converter output that `file.write` rejects, after the file was opened.
    monkeypatch.setattr(litert, "_convert", lambda *args: "not bytes")
    with pytest.raises(TypeError):
        litert.export_tflite(detector, str(path), image_size=IMAGE_SIZE)
    assert_tflite_intact(path, before)


def test_failing_rename_keeps_the_previous_tflite_file(
    detector, good_tflite, previous_tflite, monkeypatch
):
    path, before = previous_tflite
    skip_tracing(monkeypatch)
    monkeypatch.setattr(ARCHIVE, "write_out", lambda *args, **kwargs: None)
    # A valid, different file: only the rename stands between it and `path`.
    different = good_tflite.read_bytes() + b"\0" * 64
    monkeypatch.setattr(litert, "_convert", lambda *args: different)
    real_replace = os.replace

    def replace(source, destination):
        if os.fspath(destination) == str(path):
            raise OSError("rename failed")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        litert.export_tflite(detector, str(path), image_size=IMAGE_SIZE, nms=False)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert_tflite_intact(path, before)


def test_tflite_check_refuses_a_file_that_outputs_nan(tmp_path):
    """The real NaN failure mode: a file that loads, has its size, and answers NaN."""
    inputs = keras.Input((8, 8, 3), batch_size=1)
    outputs = keras.layers.Conv2D(4, 1, kernel_initializer="ones", bias_initializer="zeros")(inputs)
    model = keras.Model(inputs, outputs)
    model.layers[1].bias.assign([0.0, float("nan"), 0.0, 0.0])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        litert.SIGNATURE,
        lambda images: {"predictions": model(images)},
        input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name=litert.INPUT_NAME)],
    )
    archive.write_out(str(tmp_path / "saved"), verbose=False)
    path = tmp_path / "nan.tflite"
    path.write_bytes(litert._converter(str(tmp_path / "saved")).convert())
    with pytest.raises(ExportCheckError, match="'predictions' holds NaN"):
        litert.check_tflite(str(path), num_weights=16, quantize="none", name="models/nan.tflite")


# ------------------------------------------------------------------ ONNX


@pytest.fixture(scope="module")
def good_onnx(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx_export.export_onnx(detector, str(path), image_size=IMAGE_SIZE)
    return path


@pytest.fixture
def previous_onnx(good_onnx, tmp_path, monkeypatch):
    """A copy of the good file, and a converter that hands back its graph at once."""
    import onnx
    import tf2onnx

    path = tmp_path / "tiny.onnx"
    shutil.copyfile(good_onnx, path)
    graph = onnx.load(str(good_onnx))
    monkeypatch.setattr(tf2onnx.convert, "from_function", lambda *args, **kwargs: (graph, None))
    return path, digest(path)


def assert_onnx_intact(path, before):
    import onnxruntime

    assert digest(path) == before
    assert os.listdir(path.parent) == [path.name]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [predictions] = session.run(
        None, {"images": np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, np.float32)}
    )
    assert predictions.shape[0] == 2 and np.all(np.isfinite(predictions))


def test_crash_while_saving_onnx_keeps_the_previous_file(detector, previous_onnx, monkeypatch):
    import onnx

    path, before = previous_onnx

    def crashing_save(proto, filepath, *args, **kwargs):
        with open(filepath, "wb") as file:
            file.write(proto.SerializeToString()[:1000])
        raise OSError("No space left on device")

    monkeypatch.setattr(onnx, "save", crashing_save)
    with pytest.raises(OSError, match="No space left"):
        onnx_export.export_onnx(detector, str(path), image_size=IMAGE_SIZE)
    assert_onnx_intact(path, before)


def test_invalid_onnx_graph_is_refused_and_the_previous_file_kept(
    detector, previous_onnx, monkeypatch
):
    path, before = previous_onnx
    real_rename = onnx_export._rename_outputs

    def break_graph(model_proto, names):
        real_rename(model_proto, names)
        # An output that no node produces: the ONNX checker refuses the graph.
        model_proto.graph.output[0].name = "nobody_makes_this"

    monkeypatch.setattr(onnx_export, "_rename_outputs", break_graph)
    with pytest.raises(ExportCheckError, match=re.escape(str(path))):
        onnx_export.export_onnx(detector, str(path), image_size=IMAGE_SIZE)
    assert_onnx_intact(path, before)


def test_cli_reports_a_refused_export_without_a_traceback(detector, tmp_path, monkeypatch, capsys):
    # Keeps `main` from replacing sys.stderr (its native-log filter), which
    # capsys reads.
    monkeypatch.setenv("YOLOR_VERBOSE", "1")
    model_path = tmp_path / "tiny.keras"
    detector.save(model_path)
    out = tmp_path / "tiny.tflite"
    out.write_bytes(b"previous export")
    skip_tracing(monkeypatch)
    monkeypatch.setattr(ARCHIVE, "write_out", lambda *args, **kwargs: None)
    monkeypatch.setattr(litert, "_convert", lambda *args: b"TFL3" + b"\0" * 100)
    code = main(
        [
            "export",
            "--format",
            "tflite",
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--image-size",
            str(IMAGE_SIZE),
            "--overwrite",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"yolor export: {out}" in err and "Nothing was replaced" in err
    assert "Traceback" not in err
    assert out.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["tiny.keras", "tiny.tflite"]
