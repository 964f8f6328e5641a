"""Tests of the TFLite export, run with the LiteRT runtime (`ai_edge_litert`)."""

import os

import numpy as np
import pytest
from deployment_helper import assert_same_detections
from deployment_helper import match_rate
from deployment_helper import reference_results
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.export import LiteRTPredictor
from yolor_keras.export import export_tflite
from yolor_keras.export.folding import fold
from yolor_keras.export.litert import check_tflite_size
from yolor_keras.export.litert import load_interpreter
from yolor_keras.export.litert import run_tflite
from yolor_keras.layers import NonMaxSuppression

IMAGE_SIZE = 128
MAX_DETECTIONS = 100


def sample_images():
    """Assorted shapes, none of them used for the int8 calibration."""
    rng = np.random.default_rng(7)
    return [
        scene(int(height), int(width), seed=500 + index)
        for index, (height, width) in enumerate(rng.integers(64, 256, size=(8, 2)))
    ]


def calibration_images():
    return [scene(90 + 7 * index, 150 - 5 * index, seed=200 + index) for index in range(24)]


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE, image_dependent=True)


@pytest.fixture(scope="module")
def reference(detector):
    decoder = NonMaxSuppression(max_detections=MAX_DETECTIONS)
    return reference_results(detector, sample_images(), IMAGE_SIZE, decoder)


def _export(detector, folder, quantize, nms=True):
    path = os.path.join(folder, f"tiny_{quantize}_{'nms' if nms else 'raw'}.tflite")
    export_tflite(
        detector,
        path,
        image_size=IMAGE_SIZE,
        quantize=quantize,
        representative_images=calibration_images() if quantize == "int8" else None,
        nms=nms,
        max_detections=MAX_DETECTIONS,
    )
    return path


def _check_file(path, detector, quantize):
    # Not the ~15 KB weightless file of a broken conversion: the weights are in.
    size = check_tflite_size(path, fold(detector).count_params(), quantize)
    assert (
        size
        < 2 * fold(detector).count_params() * {"none": 4, "fp16": 2, "int8": 1}[quantize] + 400_000
    )


def _agreement(reference, results, min_score=None):
    """Mean share of the reference detections the results have too.

    With `min_score`, only reference detections scoring at least that count:
    those well above the 0.25 threshold, which rounding cannot push out.
    """
    rates = []
    for expected, got in zip(reference, results):
        if min_score is not None:
            keep = expected["scores"] >= min_score
            expected = {name: expected[name][keep] for name in ("boxes", "scores", "classes")}
        rates.append(match_rate(expected, got))
    return float(np.mean(rates))


def test_reference_detections_depend_on_the_image(reference):
    # The agreement tests below mean something only if the detector's boxes
    # come from the image: a model that gives every image the same near-tied
    # boxes would measure how runtimes break ties.
    counts = [len(result["scores"]) for result in reference]
    assert len(set(counts)) >= 4, counts
    assert 0 < min(counts) and max(counts) < MAX_DETECTIONS, counts
    top_boxes = {tuple(np.round(result["boxes"][0]).astype(int)) for result in reference}
    assert len(top_boxes) == len(reference)
    # Scores are spread out, not tied.
    for result in reference:
        assert len(np.unique(result["scores"])) >= 0.9 * len(result["scores"])


def test_float32_with_nms_matches_the_keras_task(detector, reference, tmp_path):
    path = _export(detector, tmp_path, "none")
    _check_file(path, detector, "none")
    # The file itself, on the letterboxed input: boxes in input pixels.
    interpreter = load_interpreter(path)
    for expected in reference[:3]:
        outputs = run_tflite(interpreter, expected["letterboxed"][None])
        assert sorted(outputs) == ["boxes", "classes", "num_detections", "scores"]
        count = int(outputs["num_detections"][0])
        got = {name: outputs[name][0, :count] for name in ("boxes", "scores", "classes")}
        assert_same_detections(got, {**expected, "boxes": expected["letterboxed_boxes"]})
    # And through the predictor, in each image's own pixels.
    results = LiteRTPredictor(path).predict(sample_images())
    for expected, got in zip(reference, results):
        assert not np.isnan(got["boxes"]).any()
        assert_same_detections(got, expected)
    # One thread (LiteRT's own default) gives the same detections.
    for expected, got in zip(
        reference, LiteRTPredictor(path, num_threads=1).predict(sample_images())
    ):
        assert_same_detections(got, expected)


def test_interpreter_runs_xnnpack_on_every_core(monkeypatch, tmp_path):
    # LiteRT's Python runtime reads a missing thread count as one thread;
    # the interpreter must get every usable core and the resolver that
    # applies the XNNPACK delegate.
    import ai_edge_litert.interpreter as runtime

    calls = []

    class Recording(runtime.Interpreter):
        def __init__(self, **kwargs):
            calls.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(runtime, "Interpreter", Recording)
    path = tmp_path / "missing.tflite"
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        load_interpreter(str(path))
    assert calls == []
    path.write_bytes(b"")
    with pytest.raises(ValueError):
        load_interpreter(str(path))
    [kwargs] = calls
    assert kwargs["num_threads"] == len(os.sched_getaffinity(0))
    assert kwargs["experimental_op_resolver_type"] == runtime.OpResolverType.AUTO
    calls.clear()
    with pytest.raises(ValueError):
        load_interpreter(str(path), num_threads=3)
    assert calls[0]["num_threads"] == 3


def test_quantize_and_paths_are_checked(detector, tmp_path):
    with pytest.raises(ValueError, match="needs `representative_images`"):
        export_tflite(detector, tmp_path / "a.tflite", image_size=IMAGE_SIZE, quantize="int8")
    with pytest.raises(ValueError, match="one of"):
        export_tflite(detector, tmp_path / "a.tflite", image_size=IMAGE_SIZE, quantize="int4")
    with pytest.raises(ValueError, match="must end with '.tflite'"):
        export_tflite(detector, tmp_path / "a.lite", image_size=IMAGE_SIZE)


@pytest.mark.slow
def test_float32_decoded_output_matches_keras_within_1e_4(detector, tmp_path):
    from yolor_keras.layers import YOLORImageConverter

    path = _export(detector, tmp_path, "none", nms=False)
    interpreter = load_interpreter(path)
    converter = YOLORImageConverter(IMAGE_SIZE)
    for image in sample_images()[:4]:
        inputs = converter(image[None])[0].numpy()
        got = run_tflite(interpreter, inputs)["predictions"]
        expected = detector.detect(inputs, nms=False)["predictions"].numpy()
        # Pixel coordinates reach ~1000: compare relative to each field's scale.
        scale = np.maximum(np.abs(expected).max(axis=(0, 1)), 1.0)
        assert np.max(np.abs(got - expected) / scale) < 1e-4
    # The Python post-process (NMS outside the file) gives the Keras boxes.
    results = LiteRTPredictor(path, max_detections=MAX_DETECTIONS).predict(sample_images())
    decoder = NonMaxSuppression(max_detections=MAX_DETECTIONS)
    reference = reference_results(detector, sample_images(), IMAGE_SIZE, decoder)
    assert _agreement(reference, results) > 0.99


@pytest.mark.slow
def test_float16_agrees_box_by_box(detector, reference, tmp_path):
    path = _export(detector, tmp_path, "fp16")
    _check_file(path, detector, "fp16")
    results = LiteRTPredictor(path).predict(sample_images())
    assert not any(np.isnan(result["boxes"]).any() for result in results)
    # Measured 0.91 on this model (fp16 weights, fp32 arithmetic), and 0.96
    # of the detections scoring 0.3 or more: the misses are scores within
    # rounding of the 0.25 threshold.
    assert _agreement(reference, results) >= FP16_AGREEMENT_FLOOR
    assert _agreement(reference, results, min_score=0.3) >= 0.9


@pytest.mark.slow
def test_int8_runs_and_keeps_decoding_in_float(detector, reference, tmp_path):
    path = _export(detector, tmp_path, "int8")
    _check_file(path, detector, "int8")
    results = LiteRTPredictor(path).predict(sample_images())
    assert not any(np.isnan(result["boxes"]).any() for result in results)
    # The network is int8; the decoding stays float (pixel coordinates and
    # [0, 1] scores cannot share one int8 scale) except the sigmoids, whose
    # int8 kernel is fused with the head's output.
    tensors = load_interpreter(path).get_tensor_details()
    network = [t for t in tensors if not t["name"].startswith("postprocess/")]
    postprocess = [t for t in tensors if t["name"].startswith("postprocess/")]
    assert sum(t["dtype"] == np.int8 for t in network) > 100
    int8_postprocess = [t["name"] for t in postprocess if t["dtype"] == np.int8]
    assert sum(t["dtype"] == np.float32 for t in postprocess) > 50
    assert all(name.startswith("postprocess/Sigmoid") for name in int8_postprocess)
    scores = np.concatenate([result["scores"] for result in results])
    assert len(scores) > 0 and np.all(scores > 0.25) and np.all(scores <= 1.0)
    # Random tiny weights (8-channel layers) are a hard case for int8; a
    # broken calibration or int8 ranking scores near 0 here.
    assert _agreement(reference, results) >= INT8_AGREEMENT_FLOOR
    assert _agreement(reference, results, min_score=0.3) >= INT8_STRONG_AGREEMENT_FLOOR


FP16_AGREEMENT_FLOOR = 0.85  # measured 0.91 (8 images)
INT8_AGREEMENT_FLOOR = 0.55  # measured 0.65 (8 images, 24 calibration images)
INT8_STRONG_AGREEMENT_FLOOR = 0.75  # measured 0.85 for detections scoring 0.3 or more
