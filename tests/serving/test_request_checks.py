"""Request checks of `yolor serve` without a model: TensorProto validation,
gRPC's concurrency cap, and generic answers to unexpected errors."""

import logging
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from yolor_keras.serving.grpc_service import INTERNAL_ERROR_MESSAGE
from yolor_keras.serving.grpc_service import images_from_tensor_proto
from yolor_keras.serving.grpc_service import start_grpc_server
from yolor_keras.serving.limits import RequestTooLarge
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelNotFound
from yolor_keras.serving.server import predict_payload

LIMITS = ServingLimits(max_batch_size=4, max_image_pixels=100, max_inflight_pixels=250)


def proto(dtype, dims, **values):
    tensor = predict_pb2.PredictRequest().inputs["images"]
    tensor.dtype = dtype
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    for field, value in values.items():
        if isinstance(value, list):
            getattr(tensor, field).extend(value)
        else:
            setattr(tensor, field, value)
    return tensor


def test_complete_protos_give_the_same_values_as_make_ndarray():
    strings = proto(types_pb2.DT_STRING, [2], string_val=[b"first", b"second"])
    assert images_from_tensor_proto(strings, tf.string, LIMITS) == [b"first", b"second"]
    pixels = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    for values in ({"tensor_content": pixels.tobytes()}, {"int_val": pixels.ravel().tolist()}):
        tensor = proto(types_pb2.DT_UINT8, [2, 3, 4, 3], **values)
        got = images_from_tensor_proto(tensor, tf.uint8, LIMITS)
        np.testing.assert_array_equal(got, pixels)
        np.testing.assert_array_equal(got, tf.make_ndarray(tensor))
    made = tf.make_tensor_proto(pixels)
    np.testing.assert_array_equal(images_from_tensor_proto(made, tf.uint8, LIMITS), pixels)


@pytest.mark.parametrize(
    "tensor, dtype, message",
    [
        (
            proto(types_pb2.DT_UINT8, [1, 2, 2, 3], tensor_content=b"\0" * 12),
            tf.string,
            "has dtype DT_UINT8; the signature takes DT_STRING",
        ),
        (
            proto(types_pb2.DT_STRING, [2, 1], string_val=[b"a", b"b"]),
            tf.string,
            "must have rank 1",
        ),
        (proto(types_pb2.DT_STRING, [-1], string_val=[b"a"]), tf.string, "negative dims"),
        (proto(types_pb2.DT_STRING, [0]), tf.string, "empty batch"),
        (
            proto(types_pb2.DT_STRING, [5], string_val=[b"a"] * 5),
            tf.string,
            "holds 5 images; at most 4",
        ),
        # make_ndarray would repeat the last string to fill the declared 4.
        (
            proto(types_pb2.DT_STRING, [4], string_val=[b"a"]),
            tf.string,
            "declares 4 images but string_val holds 1",
        ),
        (
            proto(types_pb2.DT_STRING, [1], string_val=[b"a"], tensor_content=b"a"),
            tf.string,
            "not tensor_content",
        ),
        (
            proto(types_pb2.DT_STRING, [1], string_val=[b"a"], float_val=[1.0]),
            tf.string,
            "carries values in float_val",
        ),
        (
            proto(types_pb2.DT_UINT8, [1, 2, 2]),
            tf.uint8,
            "must have dims [batch, height, width, 3]",
        ),
        (proto(types_pb2.DT_UINT8, [1, 0, 2, 3]), tf.uint8, "must not be empty"),
        (proto(types_pb2.DT_UINT8, [1, 11, 10, 3]), tf.uint8, "110 pixels are too large"),
        # make_ndarray would pad these to 1 x 10 x 10 x 3 (np.pad, "edge").
        (
            proto(types_pb2.DT_UINT8, [1, 10, 10, 3], int_val=[7]),
            tf.uint8,
            "(300 values) but int_val holds 1",
        ),
        (
            proto(types_pb2.DT_UINT8, [1, 10, 10, 3], tensor_content=b"\0" * 299),
            tf.uint8,
            "(300 bytes) but tensor_content holds 299",
        ),
        (
            proto(types_pb2.DT_UINT8, [1, 1, 1, 3], tensor_content=b"\0" * 3, int_val=[0, 0, 0]),
            tf.uint8,
            "both tensor_content and int_val",
        ),
        (proto(types_pb2.DT_UINT8, [1, 1, 1, 3], int_val=[0, 256, 0]), tf.uint8, "in [0, 255]"),
    ],
)
def test_incomplete_or_oversized_protos_are_refused(tensor, dtype, message):
    with pytest.raises(BadRequest) as error:
        images_from_tensor_proto(tensor, dtype, LIMITS)
    assert message in str(error.value)


def test_pixels_over_the_budget_are_refused_from_the_dims():
    # 3 images of 10 x 10 = 300 pixels decoded at once > 250: refused on
    # the dims alone, before the (absent) values are looked at.
    with pytest.raises(RequestTooLarge, match="300 pixels decoded at once"):
        images_from_tensor_proto(proto(types_pb2.DT_UINT8, [3, 10, 10, 3]), tf.uint8, LIMITS)


class FakeServed:
    """A stand-in `ServedModel`: `predict` runs `behaviour`."""

    name = "fake"
    version = 1
    limits = LIMITS

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def input_spec(self, signature_name):
        return tf.TensorSpec([None], tf.string)

    def predict(self, images, signature_name):
        return self.behaviour(images)

    def prepare(self, images, signature_name):
        return images

    def run(self, prepared):
        return self.behaviour(prepared)


class FakeRegistry:
    limits = LIMITS

    def __init__(self, served):
        self.served = served

    def get(self, name, version=None):
        if name != "fake":
            raise ModelNotFound(f"model {name!r} is not served")
        return self.served


def secret_failure(images):
    raise RuntimeError("cannot open /srv/secret/weights.h5 (node model/conv_17)")


def one_image_request():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fake"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([b"x"], dtype=tf.string))
    return request


def test_unexpected_grpc_errors_are_internal_with_a_generic_message(caplog):
    server, port = start_grpc_server(FakeRegistry(FakeServed(secret_failure)), "127.0.0.1", 0)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{port}")
        )
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as error:
            stub.Predict(one_image_request(), timeout=10)
    finally:
        server.stop(0)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == INTERNAL_ERROR_MESSAGE
    assert "secret" not in error.value.details()
    assert "/srv/secret/weights.h5" in caplog.text  # the operator sees it


def test_unexpected_rest_errors_are_500_with_a_generic_message(caplog):
    with caplog.at_level(logging.ERROR):
        status, content = predict_payload(
            FakeServed(secret_failure), {"instances": [{"b64": "eA=="}]}
        )
    assert (status, content) == (
        500,
        {"error": "Internal server error; the details are in the server's log."},
    )
    assert "/srv/secret/weights.h5" in caplog.text


def test_rest_statuses_of_known_failures():
    def too_large(images):
        raise RequestTooLarge("too many pixels")

    assert predict_payload(FakeServed(too_large), b'{"instances": [{"b64": "eA=="}]}') == (
        413,
        {"error": "too many pixels"},
    )
    status, content = predict_payload(FakeServed(secret_failure), b"[" * 100_000)
    assert status == 400 and "Unrecognized request format" in content["error"]
    status, content = predict_payload(FakeServed(secret_failure), b"\xff\xfe\xfa")
    assert status == 400 and "Unrecognized request format" in content["error"]


def test_grpc_calls_over_the_concurrency_cap_are_refused():
    entered = threading.Semaphore(0)
    release = threading.Event()

    def blocking(images):
        entered.release()
        release.wait(10)
        return {"num_detections": np.zeros([1], np.int32)}

    limits = ServingLimits(max_concurrent_requests=2)
    server, port = start_grpc_server(
        FakeRegistry(FakeServed(blocking)), "127.0.0.1", 0, max_workers=4, limits=limits
    )
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{port}")
        )
        with futures.ThreadPoolExecutor(2) as pool:
            running = [pool.submit(stub.Predict, one_image_request(), timeout=20) for _ in range(2)]
            for _ in range(2):
                assert entered.acquire(timeout=10)
            # Two calls are being handled: a third is refused at once.
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(one_image_request(), timeout=10)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            for call in running:
                assert list(call.result().outputs["num_detections"].int_val) == [0]
    finally:
        release.set()
        server.stop(0)
