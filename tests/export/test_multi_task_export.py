"""Deployment of `YOLORMultiTask`: exact folds, and exports that return every head.

The SavedModel is loaded in a fresh interpreter (only TensorFlow, as a
server has it); TFLite runs in the LiteRT runtime and ONNX in ONNX Runtime.
Each is compared with the training-form Keras model run in this process.
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import encode
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.export.litert import load_interpreter
from yolor_keras.export.litert import run_tflite
from yolor_keras.export.multi_task import export_multi_task_onnx
from yolor_keras.export.multi_task import export_multi_task_saved_model
from yolor_keras.export.multi_task import export_multi_task_tflite
from yolor_keras.export.multi_task import fold_multi_task
from yolor_keras.export.multi_task import multi_task_function
from yolor_keras.inference.letterboxing import letterbox
from yolor_keras.inference.postprocess import scale_boxes_to_original
from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.tasks import YOLORMultiTask

IMAGE_SIZE = 128
MAX_DETECTIONS = 50
TINY = {"width_multiplier": 0.125, "depth_multiplier": 0.33}

LOADER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, out_path, *image_paths = sys.argv[1:]
    assert not any(name.startswith("yolor_keras") for name in sys.modules)
    loaded = tf.saved_model.load(export_dir)
    assert list(loaded.signatures) == ["serving_default"], list(loaded.signatures)
    encoded = tf.constant([open(path, "rb").read() for path in image_paths])
    outputs = loaded.signatures["serving_default"](images=encoded)
    np.savez(out_path, **{name: value.numpy() for name, value in outputs.items()})
    """
)


def sample_images():
    rng = np.random.default_rng(11)
    return [
        scene(int(height), int(width), seed=900 + index)
        for index, (height, width) in enumerate(rng.integers(64, 256, size=(3, 2)))
    ]


@pytest.fixture(scope="module")
def model():
    """Detection weights from a calibrated tiny detector (spread-out scores),
    random classification and embedding heads with non-trivial implicit vectors."""
    detector = tiny_detector(image_size=IMAGE_SIZE)
    model = YOLORMultiTask.from_preset(
        "yolor_p6",
        num_classes=3,
        num_labels=4,
        embedding_dim=16,
        head_width=32,
        implicit={
            "classification": "network",
            "embedding": {"add": "factorization", "multiply": "vector"},
        },
        **TINY,
    )
    model.load_detector_weights(detector)
    rng = np.random.default_rng(0)
    for head in ("classification", "embedding"):
        for layer in model.head_layers(head):
            if isinstance(layer, ImplicitKnowledge):
                for weight in layer.weights:
                    weight.assign(
                        weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32")
                    )
    return model


def reference(model, images):
    """Training-form outputs per image, detections mapped to its own pixels."""
    run = multi_task_function(model, max_detections=MAX_DETECTIONS)
    results = []
    for image in images:
        letterboxed, scale, pad = letterbox(image, IMAGE_SIZE)
        outputs = {key: value.numpy()[0] for key, value in run(letterboxed[None]).items()}
        outputs["letterboxed_boxes"] = outputs["boxes"]
        outputs["boxes"] = scale_boxes_to_original(
            outputs["boxes"], scale, pad, tf.shape(image)[:2]
        ).numpy()
        outputs["letterboxed"] = letterboxed.numpy()
        results.append(outputs)
    return results


def assert_detections_match(boxes, scores, classes, count, want, rtol=1e-4):
    count = int(count)
    assert count == int(want["num_detections"]) > 0
    np.testing.assert_allclose(boxes[:count], want["boxes"][:count], rtol=rtol, atol=1e-2)
    np.testing.assert_allclose(scores[:count], want["scores"][:count], rtol=rtol, atol=1e-5)
    np.testing.assert_array_equal(classes[:count], want["classes"][:count])


def perturbed(model, seed):
    """Random BatchNorm statistics and implicit parameters, so that folds show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32")
            )
            layer.gamma.assign(rng.uniform(0.1, 0.3, layer.gamma.shape).astype("float32"))
        if isinstance(layer, ImplicitKnowledge):
            for weight in layer.weights:
                weight.assign(weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32"))
    return model


@pytest.mark.parametrize(
    "preset, implicit",
    [
        (
            "yolor_p6",
            {
                "detection": "network",
                "classification": {"add": "factorization", "multiply": None},
                "embedding": "vector",
            },
        ),
        (
            "yolor_p6_paper",
            {
                "detection": {"add": None, "multiply": "factorization"},
                "classification": "vector",
                "embedding": None,
            },
        ),
    ],
)
def test_fold_removes_batchnorm_and_implicit_layers_with_the_same_outputs(preset, implicit):
    model = perturbed(
        YOLORMultiTask.from_preset(
            preset, num_classes=3, embedding_dim=16, head_width=32, implicit=implicit, **TINY
        ),
        seed=1,
    )
    folded = fold_multi_task(model)
    kinds = {type(layer) for layer in folded._flatten_layers()}
    assert keras.layers.BatchNormalization not in kinds
    assert not any(issubclass(kind, ImplicitKnowledge) for kind in kinds)
    assert folded.count_params() < model.count_params()
    images = np.random.default_rng(5).random((2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32")
    want, got = model(images), folded(images)
    for name in want:
        for have, expected in zip(keras.tree.flatten(got[name]), keras.tree.flatten(want[name])):
            scale = max(float(np.abs(expected).max()), 1.0)
            np.testing.assert_allclose(have, expected, atol=1e-5 * scale, err_msg=name)
    with pytest.raises(ValueError, match="already in deploy form"):
        fold_multi_task(folded)


def test_saved_model_returns_every_head_in_a_fresh_process(model, tmp_path):
    export_dir = export_multi_task_saved_model(
        model, tmp_path / "multi_task" / "1", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS
    )
    images = sample_images()
    paths = []
    for index, image in enumerate(images):
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
    assert sorted(got) == [
        "detection_boxes",
        "detection_classes",
        "detection_scores",
        "embedding",
        "label_probabilities",
        "num_detections",
    ]
    assert got["label_probabilities"].shape == (3, 4) and got["embedding"].shape == (3, 16)
    for index, want in enumerate(reference(model, images)):
        # [y1, x1, y2, x2] in the pixels of each image.
        boxes = got["detection_boxes"][index][:, [1, 0, 3, 2]]
        assert_detections_match(
            boxes,
            got["detection_scores"][index],
            got["detection_classes"][index],
            got["num_detections"][index],
            want,
        )
        np.testing.assert_allclose(
            got["label_probabilities"][index], want["label_probabilities"], atol=1e-5
        )
        np.testing.assert_allclose(got["embedding"][index], want["embedding"], atol=1e-5)


def test_tflite_returns_every_head(model, tmp_path):
    path = export_multi_task_tflite(
        model, tmp_path / "multi_task.tflite", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS
    )
    interpreter = load_interpreter(path)
    for want in reference(model, sample_images()[:2]):
        got = run_tflite(interpreter, want["letterboxed"][None])
        assert sorted(got) == [
            "boxes",
            "classes",
            "embedding",
            "label_probabilities",
            "num_detections",
            "scores",
        ]
        assert all(np.isfinite(value).all() for value in got.values())
        assert_detections_match(
            got["boxes"][0],
            got["scores"][0],
            got["classes"][0],
            got["num_detections"][0],
            {**want, "boxes": want["letterboxed_boxes"]},
        )
        np.testing.assert_allclose(
            got["label_probabilities"][0], want["label_probabilities"], atol=1e-4
        )
        np.testing.assert_allclose(got["embedding"][0], want["embedding"], atol=1e-4)


def test_onnx_returns_every_head_for_a_batch(model, tmp_path):
    import onnxruntime

    path = export_multi_task_onnx(
        model, tmp_path / "multi_task.onnx", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS
    )
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
    wants = reference(model, sample_images()[:2])
    outputs = dict(
        zip(names, session.run(None, {"images": np.stack([w["letterboxed"] for w in wants])}))
    )
    for index, want in enumerate(wants):
        assert_detections_match(
            outputs["boxes"][index],
            outputs["scores"][index],
            outputs["classes"][index],
            outputs["num_detections"][index],
            {**want, "boxes": want["letterboxed_boxes"]},
        )
        np.testing.assert_allclose(
            outputs["label_probabilities"][index], want["label_probabilities"], atol=1e-4
        )
        np.testing.assert_allclose(outputs["embedding"][index], want["embedding"], atol=1e-4)


def test_export_arguments_are_checked(model, tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        export_multi_task_tflite(model, tmp_path / "a.tflite", image_size=100)
    with pytest.raises(ValueError, match="quantize"):
        export_multi_task_tflite(
            model, tmp_path / "a.tflite", image_size=IMAGE_SIZE, quantize="int8"
        )
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_multi_task_onnx(model, tmp_path / "a.bin", image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match="YOLORMultiTask"):
        fold_multi_task(keras.Sequential([keras.layers.Dense(1)]))
