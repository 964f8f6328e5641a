"""Tests of the TF Serving SavedModel: layout, signatures, and loading it the
way TF Serving does, in a fresh process that knows nothing of this package."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import assert_same_detections
from deployment_helper import encode
from deployment_helper import png_header_only
from deployment_helper import reference_results
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.cli import main
from yolor_keras.data.image_decoding import read_image
from yolor_keras.layers import NonMaxSuppression

IMAGE_SIZE = 128
MAX_DETECTIONS = 50
CLASS_NAMES = ["cat", "dog", "fox"]

# Runs in a fresh interpreter: only TensorFlow, as TF Serving has.
LOADER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, out_path, *image_paths = sys.argv[1:]
    assert not any(name.startswith("yolor_keras") for name in sys.modules)
    encoded = [open(path, "rb").read() for path in image_paths]
    results = {}

    # 1. TF2 loading, as Python clients do.
    loaded = tf.saved_model.load(export_dir)
    for name, value in loaded.signatures["serving_default"](images=tf.constant(encoded)).items():
        results["tf2/" + name] = value.numpy()
    pixels = tf.io.decode_image(encoded[0], channels=3)[None]
    for name, value in loaded.signatures["predict_images"](images=pixels).items():
        results["pixels/" + name] = value.numpy()

    # 2. The SignatureDef path of TF Serving's C++ server: a v1 session, and
    #    tensors looked up by the names the SignatureDef gives.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        signature = meta_graph.signature_def["serving_default"]
        [input_info] = signature.inputs.values()
        names = sorted(signature.outputs)
        fetched = session.run(
            [signature.outputs[name].name for name in names],
            feed_dict={input_info.name: np.array(encoded, dtype=object)},
        )
        for name, value in zip(names, fetched):
            results["v1/" + name] = value
    np.savez(out_path, **results)
    """
)


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def export_dir(detector, tmp_path_factory):
    """An export written by `yolor export --format saved_model`."""
    folder = tmp_path_factory.mktemp("export")
    model_path = folder / "tiny.keras"
    detector.save(model_path)
    names = folder / "names.txt"
    names.write_text("\n".join(CLASS_NAMES))
    code = main(
        [
            "export",
            "--format",
            "saved_model",
            "--model",
            str(model_path),
            "--name",
            "tiny",
            "--version",
            "3",
            "--out",
            str(folder / "saved_models"),
            "--image-size",
            str(IMAGE_SIZE),
            "--max-det",
            str(MAX_DETECTIONS),
            "--names",
            str(names),
        ]
    )
    assert code == 0
    return folder / "saved_models" / "tiny" / "3"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / "wide.png", folder / "tall.jpg", folder / "square.png"]
    paths[0].write_bytes(encode(scene(90, 150, seed=11)))
    paths[1].write_bytes(encode(scene(170, 70, seed=12), "JPEG", quality=90))
    paths[2].write_bytes(encode(scene(128, 128, seed=13)))
    return [str(path) for path in paths]


@pytest.fixture(scope="module")
def expected(detector, images):
    # The training-form task, the letterbox and the inverse mapping by hand;
    # the CLI changed only max_detections from the task's NMS settings.
    decoder = NonMaxSuppression(max_detections=MAX_DETECTIONS)
    return reference_results(detector, [read_image(path) for path in images], IMAGE_SIZE, decoder)


def test_layout_is_tf_servings(export_dir):
    assert (export_dir / "saved_model.pb").is_file()
    assert (export_dir / "variables" / "variables.index").is_file()
    metadata = json.loads((export_dir / "assets.extra" / "yolor_metadata.json").read_text())
    assert metadata["class_names"] == CLASS_NAMES
    assert metadata["box_order"] == "y1x1y2x2"
    assert metadata["image_size"] == IMAGE_SIZE
    assert metadata["heads"] == ["detection"] and metadata["num_classes"] == 3
    # The task's own NMS settings, but for the one the command line gave.
    assert metadata["max_detections"] == MAX_DETECTIONS
    assert (metadata["conf_threshold"], metadata["iou_threshold"]) == (0.25, 0.45)
    assert metadata["multi_label"] is False and metadata["pad_value"] == 114


def test_fresh_process_loaders_match_the_keras_task(export_dir, images, expected, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(LOADER_SCRIPT)
    out = tmp_path / "outputs.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, str(script), str(export_dir), str(out), *images],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = np.load(out)

    assert any(len(result["scores"]) for result in expected)
    for prefix in ("tf2/", "v1/"):
        assert outputs[prefix + "detection_boxes"].shape == (3, MAX_DETECTIONS, 4)
        for index, result in enumerate(expected):
            count = int(outputs[prefix + "num_detections"][index])
            boxes_yxyx = outputs[prefix + "detection_boxes"][index, :count]
            got = {
                "boxes": boxes_yxyx[:, [1, 0, 3, 2]],
                "scores": outputs[prefix + "detection_scores"][index, :count],
                "classes": outputs[prefix + "detection_classes"][index, :count],
            }
            # The folded graph against the training form: float rounding only.
            assert_same_detections(got, result, rtol=1e-5, box_atol=1e-3)
            # Padding past the count, as documented.
            assert np.all(outputs[prefix + "detection_classes"][index, count:] == -1)
            assert np.all(outputs[prefix + "detection_boxes"][index, count:] == 0)
    # The pixel signature gives the same detections as the encoded one.
    count = int(outputs["pixels/num_detections"][0])
    np.testing.assert_allclose(
        outputs["pixels/detection_boxes"][0, :count],
        outputs["tf2/detection_boxes"][0, :count],
        atol=1e-3,
    )


def test_bad_strings_fail_the_request_not_the_process(export_dir, images):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    good = open(images[0], "rb").read()
    with pytest.raises(tf.errors.InvalidArgumentError, match="Not an image"):
        serve(images=tf.constant([good, b"definitely not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Image too large"):
        serve(images=tf.constant([png_header_only(20000, 20000)]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(images=tf.constant([good[: len(good) // 2]]))  # truncated PNG
    # The same loaded model keeps answering.
    assert int(serve(images=tf.constant([good]))["num_detections"][0]) >= 0


def test_existing_version_is_not_overwritten(detector, export_dir, capsys):
    from yolor_keras.export import export_saved_model

    with pytest.raises(FileExistsError, match="pick a new version"):
        export_saved_model(detector, export_dir, image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="positive integer"):
        from yolor_keras.export import serving_directory

        serving_directory("saved_models", "tiny", "v2")
