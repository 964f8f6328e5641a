"""Tests of TF Serving's REST bodies: parsing requests, formatting responses."""

import base64

import numpy as np
import pytest

from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.rest_format import format_predict_response
from yolor_keras.serving.rest_format import parse_predict_request
from yolor_keras.serving.rest_format import signature_name_of


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def test_row_and_columnar_requests_give_the_same_images():
    rows = {"instances": [b64(b"first"), {"images": b64(b"second")}]}
    columns = {"inputs": {"images": [b64(b"first"), b64(b"second")]}}
    bare_columns = {"inputs": [b64(b"first"), b64(b"second")]}
    assert parse_predict_request(rows, True) == ([b"first", b"second"], False)
    assert parse_predict_request(columns, True) == ([b"first", b"second"], True)
    assert parse_predict_request(bare_columns, True) == ([b"first", b"second"], True)


def test_pixel_requests_pass_nested_lists_through():
    pixels = [[[1, 2, 3]]]
    assert parse_predict_request({"instances": [pixels]}, False) == ([pixels], False)


@pytest.mark.parametrize(
    "payload, message",
    [
        ([b64(b"x")], "must be a JSON object"),
        ({}, 'exactly one of "instances" or "inputs"'),
        ({"instances": [], "inputs": []}, "exactly one of"),
        ({"instances": b64(b"x")}, '"instances" must be a list'),
        ({"instances": ["aGVsbG8="]}, r'image 0 must be \{"b64"'),
        ({"instances": [{"b64": "not base64!"}]}, "image 0: the b64 field is not valid base64"),
        ({"instances": [{"pictures": b64(b"x")}]}, r"instances\[0\] must be an image"),
        ({"inputs": {"pictures": []}}, "must name the one input 'images'"),
    ],
)
def test_malformed_requests_name_the_problem(payload, message):
    with pytest.raises(BadRequest, match=message):
        parse_predict_request(payload, True)


def test_signature_name_defaults_and_is_checked():
    assert signature_name_of({"instances": []}) == "serving_default"
    assert signature_name_of({"signature_name": "predict_images"}) == "predict_images"
    with pytest.raises(BadRequest, match="signature_name"):
        signature_name_of({"signature_name": 3})


def test_responses_have_tf_servings_two_shapes():
    outputs = {
        "num_detections": np.array([1, 0], np.int32),
        "detection_scores": np.array([[0.5, 0.0], [0.0, 0.0]], np.float32),
    }
    rows = format_predict_response(outputs, columnar=False)
    assert rows == {
        "predictions": [
            {"num_detections": 1, "detection_scores": [0.5, 0.0]},
            {"num_detections": 0, "detection_scores": [0.0, 0.0]},
        ]
    }
    columns = format_predict_response(outputs, columnar=True)
    assert columns == {
        "outputs": {"num_detections": [1, 0], "detection_scores": [[0.5, 0.0], [0.0, 0.0]]}
    }
