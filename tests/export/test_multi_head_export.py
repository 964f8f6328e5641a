"""The one exporter of each format on a task with detection, classification
and embedding heads: every head's outputs come out, equal to the Keras task's.

The SavedModel is loaded in a fresh interpreter (only TensorFlow, as a
server has it); TFLite runs in the LiteRT runtime and ONNX in ONNX Runtime.
Each is compared with the training-form task run in this process
(`reference_results`: letterbox, ``task.detect``, boxes mapped back by hand).
"""

import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from deployment_helper import assert_same_detections
from deployment_helper import encode
from deployment_helper import reference_results
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.export import LiteRTPredictor
from yolor_keras.export import ONNXPredictor
from yolor_keras.export import export_onnx
from yolor_keras.export import export_saved_model
from yolor_keras.export import export_tflite
from yolor_keras.export.litert import load_interpreter
from yolor_keras.export.litert import run_tflite
from yolor_keras.export.saved_model import METADATA_FILE
from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import YOLORImageConverter
from yolor_keras.models import ClassificationHead
from yolor_keras.models import DetectionHead
from yolor_keras.models import EmbeddingHead
from yolor_keras.tasks import YOLORObjectDetector

IMAGE_SIZE = 128
MAX_DETECTIONS = 80
CONF_THRESHOLD = 0.35
# Not the official 114: an export that letterboxed with its own converter
# instead of the task's preprocessor would pad differently and fail here.
PAD_VALUE = 20
NUM_LABELS = 4
EMBEDDING_DIM = 16
TINY = {"width_multiplier": 0.125, "depth_multiplier": 0.33}
# How far the pooled heads' hidden pre-activations move from image to image
# (`calibrate_pooled_heads`): enough that images and paddings give outputs
# that differ by more than 0.01, little enough that the fold's float rounding
# stays near 1e-6.
PRE_ACTIVATION_SPREAD = 0.1
# Agreement of the exported heads with the training-form task. The pooled
# features differ between images by ~1e-3 of their size, so heads that tell
# images apart amplify the fold's float rounding as much: measured 2.3e-4
# (label probabilities) and 2.8e-3 (embedding, after its L2 normalisation).
# `test_head_outputs_tell_images_and_letterboxes_apart` keeps both at least
# ten times below the differences a wrong image or letterbox would make.
HEAD_ATOL = {"label_probabilities": 1e-3, "embedding": 1e-2}

LOADER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, out_path, *image_paths = sys.argv[1:]
    assert not any(name.startswith("yolor_keras") for name in sys.modules)
    loaded = tf.saved_model.load(export_dir)
    assert sorted(loaded.signatures) == ["predict_images", "serving_default"], list(loaded.signatures)
    encoded = [open(path, "rb").read() for path in image_paths]
    results = {}
    for name, value in loaded.signatures["serving_default"](images=tf.constant(encoded)).items():
        results["encoded/" + name] = value.numpy()
    pixels = tf.io.decode_image(encoded[0], channels=3)[None]
    for name, value in loaded.signatures["predict_images"](images=pixels).items():
        results["pixels/" + name] = value.numpy()
    np.savez(out_path, **results)
    """
)


def sample_images():
    # Wide, tall and square: the letterbox pads the first two a lot.
    shapes = [(70, 190), (210, 90), (150, 150)]
    return [scene(height, width, seed=900 + index) for index, (height, width) in enumerate(shapes)]


def calibrate_pooled_heads(task, rng, spread=PRE_ACTIVATION_SPREAD):
    """Rescales the pooled heads so that their outputs vary from image to image.

    The tiny random backbone's pooled features differ between images by
    about 1e-3 of their size, so random Dense layers answer nearly the same
    for every image, and no comparison of their outputs could fail. The
    hidden layer is set to centre its inputs over letterboxed scenes and to
    give pre-activations that spread by `spread` from image to image; one
    gain for every feature, so float rounding is amplified no more than the
    differences between images are.
    """
    converter = task.preprocessor
    scenes = [scene(60 + 9 * index, 200 - 7 * index, seed=300 + index) for index in range(16)]
    batch = np.concatenate([converter(image[None])[0] for image in scenes])
    for head in ("classification", "embedding"):
        hidden = task.get_layer(f"{head}_hidden")
        features = keras.Model(task.input, hidden.input)(batch)
        features = keras.ops.convert_to_numpy(features).astype("float64")
        mean = features.mean(axis=0)
        kernel = rng.normal(0, 1, hidden.kernel.shape)
        kernel *= spread / ((features - mean) @ kernel).std()
        hidden.kernel.assign(kernel.astype("float32"))
        hidden.bias.assign((-mean @ kernel).astype("float32"))
        output = task.get_layer(f"{head}_output")
        output.kernel.assign(
            rng.normal(0, 2 / np.sqrt(output.kernel.shape[0]), output.kernel.shape).astype(
                "float32"
            )
        )


@pytest.fixture(scope="module")
def task():
    """Detection weights from a calibrated tiny detector (spread-out scores),
    classification and embedding heads with non-trivial implicit knowledge of
    the network and factorization forms, and the task's own letterbox and
    NMS settings, which every export must take."""
    detector = tiny_detector(image_size=IMAGE_SIZE)
    task = YOLORObjectDetector.from_preset(
        "yolor_p6",
        heads=[
            DetectionHead(3),
            ClassificationHead(NUM_LABELS, hidden_units=32, implicit="network"),
            EmbeddingHead(
                EMBEDDING_DIM,
                hidden_units=32,
                implicit={"add": "factorization", "multiply": "vector"},
            ),
        ],
        preprocessor=YOLORImageConverter(IMAGE_SIZE, pad_value=PAD_VALUE),
        prediction_decoder=NonMaxSuppression(
            conf_threshold=CONF_THRESHOLD, max_detections=MAX_DETECTIONS
        ),
        class_names=["cat", "dog", "fox"],
        **TINY,
    )
    task.load_detector_weights(detector)
    rng = np.random.default_rng(0)
    for head in ("classification", "embedding"):
        for layer in task.head_layers(head):
            if isinstance(layer, ImplicitKnowledge):
                for weight in layer.weights:
                    weight.assign(
                        weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32")
                    )
    calibrate_pooled_heads(task, rng)
    return task


@pytest.fixture(scope="module")
def reference(task):
    return reference_results(task, sample_images(), IMAGE_SIZE)


def test_head_outputs_tell_images_and_letterboxes_apart(task, reference):
    # Guards the comparisons below: the heads answer differently for each
    # image, and for the same image padded with another grey, by far more
    # than the tolerances used.
    plain = reference_results(
        task, sample_images()[:1], IMAGE_SIZE, preprocessor=YOLORImageConverter(IMAGE_SIZE)
    )
    for name, atol in HEAD_ATOL.items():
        values = np.stack([result[name] for result in reference])
        between_images = np.abs(values[:, None] - values[None]).max(axis=-1)
        assert between_images[np.triu_indices(3, 1)].min() > 10 * atol, name
        assert np.abs(plain[0][name] - reference[0][name]).max() > 10 * atol, name


def assert_heads_match(got, want):
    for name, atol in HEAD_ATOL.items():
        np.testing.assert_allclose(got[name], want[name], atol=atol, err_msg=name)


def test_saved_model_returns_every_head_in_a_fresh_process(task, reference, tmp_path):
    # No size and no NMS settings given: the task's preprocessor and decoder.
    export_dir = export_saved_model(task, tmp_path / "multi_head" / "1")
    metadata = json.loads((pathlib.Path(export_dir) / METADATA_FILE).read_text())
    assert metadata["heads"] == ["detection", "classification", "embedding"]
    assert metadata["image_size"] == IMAGE_SIZE and metadata["pad_value"] == PAD_VALUE
    assert metadata["conf_threshold"] == CONF_THRESHOLD
    assert metadata["max_detections"] == MAX_DETECTIONS
    assert metadata["class_names"] == ["cat", "dog", "fox"]
    assert metadata["num_labels"] == NUM_LABELS and metadata["embedding_dim"] == EMBEDDING_DIM

    paths = []
    for index, image in enumerate(sample_images()):
        path = tmp_path / f"image_{index}.png"
        path.write_bytes(encode(image))
        paths.append(str(path))
    out_path = tmp_path / "outputs.npz"
    subprocess.run(
        [sys.executable, "-c", LOADER_SCRIPT, str(export_dir), str(out_path), *paths],
        check=True,
        timeout=300,
    )
    got = dict(np.load(out_path))
    for prefix, count in (("encoded/", 3), ("pixels/", 1)):
        assert sorted(name for name in got if name.startswith(prefix)) == [
            prefix + name
            for name in (
                "detection_boxes",
                "detection_classes",
                "detection_scores",
                "embedding",
                "label_probabilities",
                "num_detections",
            )
        ]
        assert got[prefix + "detection_boxes"].shape == (count, MAX_DETECTIONS, 4)
        assert got[prefix + "label_probabilities"].shape == (count, NUM_LABELS)
        assert got[prefix + "embedding"].shape == (count, EMBEDDING_DIM)
        for index, want in enumerate(reference[:count]):
            detections = int(got[prefix + "num_detections"][index])
            assert detections == len(want["scores"]) > 0
            # [y1, x1, y2, x2] in the pixels of each image.
            boxes = got[prefix + "detection_boxes"][index, :detections][:, [1, 0, 3, 2]]
            assert_same_detections(
                {
                    "boxes": boxes,
                    "scores": got[prefix + "detection_scores"][index, :detections],
                    "classes": got[prefix + "detection_classes"][index, :detections],
                },
                want,
                box_atol=1e-2,
            )
            assert_heads_match({name: got[prefix + name][index] for name in HEAD_ATOL}, want)


def test_tflite_returns_every_head(task, reference, tmp_path):
    path = export_tflite(task, tmp_path / "multi_head.tflite")
    interpreter = load_interpreter(path)
    for want in reference[:2]:
        got = run_tflite(interpreter, want["letterboxed"][None])
        assert sorted(got) == [
            "boxes",
            "classes",
            "embedding",
            "label_probabilities",
            "num_detections",
            "scores",
        ]
        assert got["boxes"].shape == (1, MAX_DETECTIONS, 4)
        count = int(got["num_detections"][0])
        assert_same_detections(
            {name: got[name][0, :count] for name in ("boxes", "scores", "classes")},
            {**want, "boxes": want["letterboxed_boxes"]},
            box_atol=1e-2,
        )
        assert_heads_match({name: got[name][0] for name in got}, want)
    # The file predictor, given the task's letterbox, answers in image pixels.
    [result] = LiteRTPredictor(path, preprocessor=task.preprocessor).predict(sample_images()[:1])
    assert_same_detections(result, reference[0], box_atol=1e-2)
    assert_heads_match(result, reference[0])


def test_onnx_returns_every_head_for_a_batch(task, reference, tmp_path):
    import onnxruntime

    path = export_onnx(task, tmp_path / "multi_head.onnx", nms=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    assert names == [
        "boxes",
        "scores",
        "classes",
        "num_detections",
        "label_probabilities",
        "embedding",
    ]
    wants = reference[:2]
    outputs = dict(
        zip(names, session.run(None, {"images": np.stack([w["letterboxed"] for w in wants])}))
    )
    for index, want in enumerate(wants):
        count = int(outputs["num_detections"][index])
        assert_same_detections(
            {name: outputs[name][index, :count] for name in ("boxes", "scores", "classes")},
            {**want, "boxes": want["letterboxed_boxes"]},
            box_atol=1e-2,
        )
        assert_heads_match({name: outputs[name][index] for name in names}, want)
    [result] = ONNXPredictor(path, preprocessor=task.preprocessor).predict(sample_images()[:1])
    assert sorted(result) == [
        "boxes",
        "class_names",
        "classes",
        "embedding",
        "label_probabilities",
        "scores",
    ]
    assert_same_detections(result, reference[0], box_atol=1e-2)
    assert_heads_match(result, reference[0])


def test_export_arguments_are_checked(task, tmp_path):
    with pytest.raises(ValueError, match="multiple of the task's largest stride 64"):
        export_tflite(task, tmp_path / "a.tflite", image_size=100)
    with pytest.raises(ValueError, match="int8 quantization takes a detection-only task"):
        export_tflite(
            task, tmp_path / "a.tflite", quantize="int8", representative_images=sample_images()
        )
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(task, tmp_path / "a.bin")
    with pytest.raises(ValueError, match="take a YOLORObjectDetector"):
        export_saved_model(keras.Sequential([keras.layers.Dense(1)]), tmp_path / "m" / "1")
    with pytest.raises(ValueError, match="3 classes"):
        export_saved_model(task, tmp_path / "m" / "1", class_names=["cat"])
    assert not any(tmp_path.iterdir())
