"""Tests of the ONNX export, run with ONNX Runtime."""

import collections
import os

import numpy as np
import onnx
import onnxruntime
import pytest
from deployment_helper import assert_same_detections
from deployment_helper import reference_results
from deployment_helper import scene
from deployment_helper import tiny_detector

from yolor_keras.cli import main
from yolor_keras.export import ONNXPredictor
from yolor_keras.export import export_onnx
from yolor_keras.export.file_predictors import onnx_session
from yolor_keras.export.litert import usable_cores
from yolor_keras.layers import NonMaxSuppression
from yolor_keras.layers import YOLORImageConverter

IMAGE_SIZE = 128


def sample_images():
    rng = np.random.default_rng(3)
    return [
        scene(int(height), int(width), seed=700 + index)
        for index, (height, width) in enumerate(rng.integers(64, 256, size=(6, 2)))
    ]


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE, image_dependent=True)


@pytest.fixture(scope="module")
def raw_onnx(detector, tmp_path_factory):
    """The file without NMS (decoded predictions out), exported once."""
    return export_onnx(
        detector, tmp_path_factory.mktemp("onnx") / "tiny.onnx", image_size=IMAGE_SIZE
    )


def test_decoded_predictions_match_keras_within_1e_4(detector, raw_onnx):
    path = raw_onnx
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["predictions"]
    # A batch of three (the batch size stays dynamic).
    converter = YOLORImageConverter(IMAGE_SIZE)
    inputs = np.concatenate([converter(image[None])[0].numpy() for image in sample_images()[:3]])
    [got] = session.run(None, {"images": inputs})
    # The training-form task: the fold and the conversion must change nothing.
    expected = detector.detect(inputs, nms=False)["predictions"].numpy()
    assert got.shape == expected.shape == (3, 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 8)
    # Pixel coordinates reach ~1000: compare relative to each field's scale.
    scale = np.maximum(np.abs(expected).max(axis=(0, 1)), 1.0)
    assert np.max(np.abs(got - expected) / scale) < 1e-4


def test_nms_variant_from_the_cli_matches_the_keras_task(detector, tmp_path):
    model_path = tmp_path / "tiny.keras"
    detector.save(model_path)
    onnx_path = tmp_path / "tiny_nms.onnx"
    code = main(
        [
            "export",
            "--format",
            "onnx",
            "--nms",
            "--model",
            str(model_path),
            "--out",
            str(onnx_path),
            "--image-size",
            str(IMAGE_SIZE),
            "--conf",
            "0.3",
        ]
    )
    assert code == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == [
        "boxes",
        "scores",
        "classes",
        "num_detections",
    ]
    # The task's NMS settings (at most 300 detections), with --conf replaced.
    decoder = NonMaxSuppression(conf_threshold=0.3)
    expected = reference_results(detector, sample_images(), IMAGE_SIZE, decoder)
    got = ONNXPredictor(onnx_path).predict(sample_images())
    assert sum(len(result["scores"]) for result in expected) > 0
    for want, have in zip(expected, got):
        assert_same_detections(have, want)
    # Refuses to overwrite without being asked.
    assert (
        main(["export", "--format", "onnx", "--model", str(model_path), "--out", str(onnx_path)])
        == 2
    )


def test_predictor_session_runs_on_every_core_without_spinning(raw_onnx):
    # Spinning threads starved the working one on shared cores (measured
    # 1.6x slower on 2 cores); every optimisation and one thread per core.
    options = ONNXPredictor(raw_onnx).session.get_session_options()
    assert options.intra_op_num_threads == len(os.sched_getaffinity(0)) == usable_cores()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    chosen = onnx_session(raw_onnx, num_threads=1, spinning=True).get_session_options()
    assert chosen.intra_op_num_threads == 1
    assert chosen.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_tuned_session_gives_the_default_sessions_outputs(raw_onnx):
    converter = YOLORImageConverter(IMAGE_SIZE)
    inputs = np.concatenate([converter(image[None])[0].numpy() for image in sample_images()[:2]])
    default = onnxruntime.InferenceSession(str(raw_onnx), providers=["CPUExecutionProvider"])
    [expected] = default.run(None, {"images": inputs})
    [got] = onnx_session(raw_onnx).run(None, {"images": inputs})
    scale = np.maximum(np.abs(expected).max(axis=(0, 1)), 1.0)
    assert np.max(np.abs(got - expected) / scale) < 1e-5


def test_graph_keeps_the_layout_transposes_few(raw_onnx):
    # tf2onnx moves the NHWC<->NCHW transposes it puts around every conv
    # out of the network: a graph with one pair per conv would spend its
    # time copying tensors. What stays is the input's and the decoding's.
    ops = collections.Counter(node.op_type for node in onnx.load(str(raw_onnx)).graph.node)
    assert ops["Conv"] > 80
    assert ops["Transpose"] <= 16
    # SiLU as Sigmoid * x, which ONNX Runtime fuses into one kernel.
    assert ops["Sigmoid"] >= ops["Conv"]
