"""bf16 inference: `with_precision`, the bf16 `Predictor` and the bf16 SavedModel.

Tolerances. bfloat16 keeps 8 significant bits: each rounding moves a value
by at most 2**-9 (0.2 %) of itself. Rounding errors of successive layers are
independent, so they add up roughly as a random walk; on the tiny detector
the raw head outputs move by 0.2-0.4 % of their standard deviation (RMS) and
by at most 1.1-2.3 % (one element in tens of thousands). The tests allow
RMS <= 1.5 % and max <= 8 % of the std, a few times the measured values.
They also require RMS >= 0.01 % of the std: float32 reorderings move the
outputs by about 1e-6 relative, so a "bf16" path that silently ran in
float32 fails.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from deployment_helper import scene
from deployment_helper import tiny_detector
from tensorflow.core.protobuf import saved_model_pb2

from yolor_keras.cli import main
from yolor_keras.export.folding import deploy_form
from yolor_keras.inference.predictor import Predictor
from yolor_keras.inference.predictor import with_precision
from yolor_keras.layers import YOLORImageConverter
from yolor_keras.models import decode_predictions

IMAGE_SIZE = 128
MAX_RMS = 0.015  # of the output std, see the module docstring
MAX_ABS = 0.08
MIN_RMS = 1e-4  # below this, the bf16 path did not run in bf16
SCENES = [(90, 150, 11), (170, 70, 12), (128, 128, 13), (128, 128, 14), (100, 100, 15)]


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def letterboxed():
    converter = YOLORImageConverter(IMAGE_SIZE)
    return np.stack([converter(scene(h, w, seed=seed))[0].numpy() for h, w, seed in SCENES])


def relative_errors(reference, other):
    """(RMS, max) of `other - reference` over the std of `reference`."""
    reference = np.asarray(reference, np.float64)
    difference = np.asarray(tf.cast(other, tf.float32), np.float64) - reference
    std = reference.std()
    return np.sqrt(np.mean(difference**2)) / std, np.abs(difference).max() / std


def conv_dtypes_in_saved_model(export_dir):
    """The `T` of every Conv2D node in a SavedModel's graph and its functions.

    Read from ``saved_model.pb`` itself, the graph TF Serving runs, not from
    a Python object of this package.
    """
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    dtypes = []
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        dtypes += [
            tf.dtypes.as_dtype(node.attr["T"].type).name for node in nodes if node.op == "Conv2D"
        ]
    return dtypes


def test_with_precision_rebuilds_in_bf16_with_the_same_float32_weights(detector, letterboxed):
    bf16 = with_precision(detector, "bf16")
    assert bf16 is not detector
    assert detector.dtype_policy.name == "float32"  # the original is untouched
    convs = [layer for layer in bf16._flatten_layers() if isinstance(layer, tf.keras.layers.Conv2D)]
    assert convs and all(layer.dtype_policy.name == "mixed_bfloat16" for layer in convs)
    assert all(weight.dtype == "float32" for weight in bf16.weights)
    for original, copy in zip(detector.get_weights(), bf16.get_weights()):
        np.testing.assert_array_equal(original, copy)
    assert with_precision(bf16, "bf16") is bf16
    # Back to fp32 gives the original network exactly.
    back = with_precision(bf16, "fp32")
    for a, b in zip(
        detector(letterboxed[:1], training=False), back(letterboxed[:1], training=False)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="precision.*'fp16'"):
        with_precision(detector, "fp16")


def test_deploy_form_bf16_stores_bf16_weights_with_the_outputs_of_mixed_precision(
    detector, letterboxed
):
    import keras

    folded = deploy_form(detector)
    bf16 = with_precision(folded, "bf16")
    convs = [layer for layer in bf16._flatten_layers() if isinstance(layer, tf.keras.layers.Conv2D)]
    assert convs and all(layer.kernel.dtype == "bfloat16" for layer in convs)
    # The same weights rounded once instead of at every call: the outputs of
    # mixed precision exactly.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = type(folded).from_config(folded.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    mixed.set_weights(folded.get_weights())
    for a, b in zip(mixed(letterboxed, training=False), bf16(letterboxed, training=False)):
        np.testing.assert_array_equal(
            np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        )
    assert with_precision(bf16, "bf16") is bf16


@pytest.mark.parametrize("form", ["training", "folded"])
def test_bf16_raw_outputs_agree_with_fp32(detector, letterboxed, form):
    model = detector if form == "training" else deploy_form(detector)
    bf16 = with_precision(model, "bf16")
    reference = model(letterboxed, training=False)
    outputs = bf16(letterboxed, training=False)
    assert len(outputs) == len(reference)
    for level_reference, level in zip(reference, outputs):
        assert level.dtype == tf.bfloat16  # the head computed in bf16
        rms, largest = relative_errors(level_reference, level)
        assert MIN_RMS < rms < MAX_RMS, (form, rms)
        assert largest < MAX_ABS, (form, largest)
    # Decoding casts to float32: boxes in pixels, scores in [0, 1].
    decoded = decode_predictions(outputs, bf16.anchors, bf16.strides)
    assert decoded.dtype == "float32"
    decoded_reference = np.asarray(decode_predictions(reference, model.anchors, model.strides))
    decoded = np.asarray(decoded)
    # Box centres and sizes of every anchor within 0.5 px plus 2 % of the
    # box's size (the raw values feed exp() and sigmoid() scaled by anchors
    # up to ~1000 px, so the error is relative), scores within 0.01.
    size = decoded_reference[..., 2:4].max(axis=-1, keepdims=True)
    box_error = np.abs(decoded[..., :4] - decoded_reference[..., :4])
    assert np.all(box_error <= 0.5 + 0.02 * size), (box_error / (0.5 + size)).max()
    assert np.abs(decoded[..., 4:] - decoded_reference[..., 4:]).max() < 0.01


def _iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def well_separated(result, score_gap=0.005, overlap=0.3):
    """Indices of detections whose NMS fate a 0.2 % rounding cannot change.

    A detection qualifies when it has a positive area, its score is at least
    `score_gap` (2.5 x the largest bf16 score shift measured) away from every
    other detection's, and it overlaps no other detection of its class by
    more than `overlap` IoU.
    """
    boxes, scores, classes = result["boxes"], result["scores"], result["classes"]
    chosen = []
    for index in range(len(scores)):
        if np.prod(boxes[index, 2:] - boxes[index, :2]) <= 1.0:
            continue
        others = np.arange(len(scores)) != index
        if others.any() and np.abs(scores[others] - scores[index]).min() <= score_gap:
            continue
        same_class = others & (classes == classes[index])
        if same_class.any() and _iou(boxes[index], boxes[same_class]).max() > overlap:
            continue
        chosen.append(index)
    return chosen


def assert_detections_match(reference, other, min_matched=1):
    """Every well-separated `reference` detection has a twin in `other`."""
    matched = 0
    for expected, result in zip(reference, other):
        for index in well_separated(expected):
            same_class = result["classes"] == expected["classes"][index]
            assert same_class.any()
            ious = _iou(expected["boxes"][index], result["boxes"][same_class])
            best = int(np.argmax(ious))
            assert ious[best] > 0.9, (index, ious[best])
            assert abs(result["scores"][same_class][best] - expected["scores"][index]) < 0.01
            matched += 1
    assert matched >= min_matched


@pytest.fixture(scope="module")
def images():
    return [scene(h, w, seed=seed) for h, w, seed in SCENES]


@pytest.fixture(scope="module")
def fp32_results(detector, images):
    return Predictor(detector, image_size=IMAGE_SIZE, max_detections=50).predict(images)


@pytest.fixture(scope="module")
def bf16_predictor(detector):
    return Predictor(detector, image_size=IMAGE_SIZE, max_detections=50, precision="bf16")


def test_bf16_predictor_detections_match_fp32(bf16_predictor, fp32_results, images):
    assert bf16_predictor.precision == "bf16"
    assert bf16_predictor.model.dtype_policy.name == "mixed_bfloat16"
    results = bf16_predictor.predict(images)
    for result in results:
        assert result["boxes"].dtype == np.float32 and result["scores"].dtype == np.float32
    assert_detections_match(fp32_results, results, min_matched=5)


def test_bad_precision_is_refused(detector):
    with pytest.raises(ValueError, match="precision"):
        Predictor(detector, image_size=IMAGE_SIZE, precision="float16")


@pytest.fixture(scope="module")
def exports(detector, tmp_path_factory):
    """A bf16 SavedModel written by `yolor export` (the fp32 one is
    `tests/export/test_saved_model.py`'s)."""
    folder = tmp_path_factory.mktemp("bf16_export")
    model_path = folder / "tiny.keras"
    detector.save(model_path)
    written = {}
    for precision in ("bf16",):
        code = main(
            [
                "export",
                "--format",
                "saved_model",
                "--model",
                str(model_path),
                "--name",
                precision,
                "--out",
                str(folder),
                "--image-size",
                str(IMAGE_SIZE),
                "--max-det",
                "50",
                "--precision",
                precision,
            ]
        )
        assert code == 0
        written[precision] = folder / precision / "1"
    return written


def test_bf16_saved_model_graph_runs_convolutions_in_bf16(exports):
    # Every convolution of the served graph runs in bf16 (an fp32 export's
    # are all float32: the same reader on it finds no bfloat16 at all).
    bf16 = conv_dtypes_in_saved_model(exports["bf16"])
    assert len(bf16) >= 10 and set(bf16) == {"bfloat16"}, sorted(set(bf16))
    metadata = json.loads((exports["bf16"] / "assets.extra" / "yolor_metadata.json").read_text())
    assert metadata["precision"] == "bf16"


def test_bf16_saved_model_agrees_with_the_bf16_predictor_and_fp32(
    exports, bf16_predictor, fp32_results, images
):
    signature = tf.saved_model.load(str(exports["bf16"])).signatures["predict_images"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.uint8
    predictor_results = bf16_predictor.predict(images)
    exported = []
    for image, expected in zip(images, predictor_results):
        outputs = signature(images=tf.constant(image[None]))
        assert outputs["detection_boxes"].dtype == tf.float32
        assert outputs["detection_scores"].dtype == tf.float32
        count = int(outputs["num_detections"][0])
        result = {
            "boxes": outputs["detection_boxes"].numpy()[0, :count][:, [1, 0, 3, 2]],
            "scores": outputs["detection_scores"].numpy()[0, :count],
            "classes": outputs["detection_classes"].numpy()[0, :count],
        }
        # The same bf16 network as the predictor's, but oneDNN picks other
        # bf16 kernels for a batch of one than for the predictor's batch of
        # five, so scores differ by a few bf16 steps (2**-8 of a logit) and
        # near-tied detections may swap places: scores are compared sorted.
        assert count == len(expected["scores"])
        np.testing.assert_allclose(
            np.sort(result["scores"]), np.sort(expected["scores"]), atol=0.005
        )
        exported.append(result)
    assert_detections_match(predictor_results, exported, min_matched=5)
    assert_detections_match(fp32_results, exported, min_matched=5)


def test_detect_cli_runs_in_bf16(detector, tmp_path, images, bf16_predictor):
    from deployment_helper import encode

    model_path = tmp_path / "tiny.keras"
    detector.save(model_path)
    source = tmp_path / "images"
    source.mkdir()
    (source / "a.png").write_bytes(encode(images[2]))
    out = tmp_path / "out"
    code = main(
        [
            "detect",
            "--model",
            str(model_path),
            "--source",
            str(source / "a.png"),
            "--out",
            str(out),
            "--image-size",
            str(IMAGE_SIZE),
            "--max-det",
            "50",
            "--precision",
            "bf16",
        ]
    )
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    assert report["precision"] == "bf16"
    [expected] = bf16_predictor.predict([images[2]])
    detections = report["images"][0]["detections"]
    assert len(detections) == len(expected["scores"])
    np.testing.assert_allclose([d["score"] for d in detections], expected["scores"], atol=1e-4)


def test_export_refuses_bf16_for_other_formats(detector, tmp_path, capsys):
    model_path = tmp_path / "tiny.keras"
    detector.save(model_path)
    code = main(["export", "--format", "onnx", "--model", str(model_path), "--precision", "bf16"])
    assert code == 2
    assert "--precision bf16 applies to --format saved_model only" in capsys.readouterr().err
