"""TF Serving's gRPC PredictionService over the exported models.

Implements ``tensorflow.serving.PredictionService/Predict`` with the
request and response protos of `tensorflow_serving.apis`, so TF Serving's
gRPC clients (including `yolor_keras.serving.Client`) work unchanged
against `yolor serve`.

A `TensorProto` declares its shape apart from its values, and
`tf.make_ndarray` fills a declared shape by repeating the last value: a
100-byte request declaring ``[64, 8192, 8192, 3]`` uint8 would allocate
12.9 GB. So the dtype, the dims and the number of values are checked
against the limits first, and only a proto whose values are all present is
turned into an array (`images_from_tensor_proto`).
"""

import logging
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from yolor_keras.serving.limits import Overloaded
from yolor_keras.serving.limits import RequestTooLarge
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.limits import decode_cost
from yolor_keras.serving.limits import too_many_pixels_message
from yolor_keras.serving.repository import DEFAULT_SIGNATURE
from yolor_keras.serving.repository import INPUT_NAME
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelNotFound

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "Internal server error; the details are in the server's log."
# The value fields a TensorProto may fill; only the one that matches the
# dtype may be non-empty.
_VALUE_FIELDS = {
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_UINT8: "int_val",
}


def _dtype_name(enum):
    return types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else str(enum)


def images_from_tensor_proto(proto, dtype, limits):
    """The images of a request's `TensorProto`, checked before any array is built.

    Args:
        proto: the ``images`` `TensorProto` of a `PredictRequest`.
        dtype: the signature's input dtype, ``tf.string`` or ``tf.uint8``.
        limits: the server's `ServingLimits`.

    Returns:
        A list of bytes (encoded images) or a uint8 `(batch, height, width,
        3)` array.

    Raises:
        BadRequest: wrong dtype or rank, a negative or unknown dim, too many
            images or pixels per image, or a value count that differs from
            what the dims declare.
        RequestTooLarge: more pixels than the server decodes at once.
    """
    expected = tf.as_dtype(dtype).as_datatype_enum
    if proto.dtype != expected:
        raise BadRequest(
            f"Input {INPUT_NAME!r} has dtype {_dtype_name(proto.dtype)}; the signature takes "
            f"{_dtype_name(expected)}."
        )
    if proto.tensor_shape.unknown_rank:
        raise BadRequest(
            f"Input {INPUT_NAME!r} must declare its shape (tensor_shape has unknown_rank)."
        )
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise BadRequest(f"Input {INPUT_NAME!r} declares negative dims {dims}.")
    value_field = _VALUE_FIELDS[expected]
    # Every other value field must be empty: they would be ignored, or
    # (tensor_content for strings) misread.
    for field, _value in proto.ListFields():
        if field.name.endswith("_val") and field.name != value_field:
            raise BadRequest(
                f"Input {INPUT_NAME!r} of dtype {_dtype_name(expected)} carries values in "
                f"{field.name}; use {value_field}"
                + (" or tensor_content." if expected != types_pb2.DT_STRING else ".")
            )
    if expected == types_pb2.DT_STRING:
        return _encoded_images(proto, dims, limits)
    return _pixel_images(proto, dims, limits)


def _check_batch(size, limits):
    if size < 1:
        raise BadRequest("The request holds no images (empty batch).")
    if size > limits.max_batch_size:
        raise BadRequest(
            f"The request holds {size} images; at most {limits.max_batch_size} are accepted "
            "per request."
        )


def _encoded_images(proto, dims, limits):
    if len(dims) != 1:
        raise BadRequest(
            f"Input {INPUT_NAME!r} (encoded images) must have rank 1; dims are {dims}."
        )
    _check_batch(dims[0], limits)
    if proto.tensor_content:
        raise BadRequest(
            f"Input {INPUT_NAME!r}: DT_STRING values go in string_val, not tensor_content."
        )
    if len(proto.string_val) != dims[0]:
        raise BadRequest(
            f"Input {INPUT_NAME!r} declares {dims[0]} images but string_val holds "
            f"{len(proto.string_val)}; send every value (no repetition is filled in)."
        )
    return list(proto.string_val)


def _pixel_images(proto, dims, limits):
    if len(dims) != 4 or dims[3] != 3:
        raise BadRequest(
            f"Input {INPUT_NAME!r} (pixels) must have dims [batch, height, width, 3]; got {dims}."
        )
    batch, height, width, _ = dims
    _check_batch(batch, limits)
    if height < 1 or width < 1:
        raise BadRequest(f"Images must not be empty; dims are {dims}.")
    if height * width > limits.max_image_pixels:
        raise BadRequest(
            f"Images of {height} x {width} = {height * width} pixels are too large; this server "
            f"accepts at most {limits.max_image_pixels} pixels per image."
        )
    cost = decode_cost([height * width] * batch)
    if cost > limits.max_inflight_pixels:
        raise RequestTooLarge(too_many_pixels_message(cost, limits.max_inflight_pixels))
    count = batch * height * width * 3
    if proto.tensor_content:
        if proto.int_val:
            raise BadRequest(f"Input {INPUT_NAME!r} fills both tensor_content and int_val.")
        if len(proto.tensor_content) != count:
            raise BadRequest(
                f"Input {INPUT_NAME!r} declares dims {dims} ({count} bytes) but tensor_content "
                f"holds {len(proto.tensor_content)} bytes."
            )
        return np.frombuffer(proto.tensor_content, np.uint8).reshape(dims)
    if len(proto.int_val) != count:
        raise BadRequest(
            f"Input {INPUT_NAME!r} declares dims {dims} ({count} values) but int_val holds "
            f"{len(proto.int_val)}; send every value (no repetition is filled in)."
        )
    values = np.fromiter(proto.int_val, np.int64, count)
    if values.min() < 0 or values.max() > 255:
        raise BadRequest("Pixel values must be integers in [0, 255].")
    return values.astype(np.uint8).reshape(dims)


class DetectionPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` for every model of a `ModelRegistry`.

    Args:
        registry: the `ModelRegistry` to serve.
    """

    def __init__(self, registry):
        self.registry = registry

    def Predict(self, request, context):  # noqa: N802  (the gRPC method name)
        try:
            return self._predict(request)
        except ModelNotFound as error:
            code, message = grpc.StatusCode.NOT_FOUND, str(error)
        except BadRequest as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except RequestTooLarge as error:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        except Overloaded as error:
            code, message = grpc.StatusCode.UNAVAILABLE, str(error)
        except Exception:
            # The client learns only that it failed; paths, shapes and
            # library internals stay in the server's log.
            logger.exception("gRPC Predict for model %r failed", request.model_spec.name)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE
        context.abort(code, message)

    def _predict(self, request):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        served = self.registry.get(spec.name, version)
        if set(request.inputs) != {INPUT_NAME}:
            raise BadRequest(
                f"The request must have the one input {INPUT_NAME!r}; got {sorted(request.inputs)}."
            )
        input_spec = served.input_spec(signature_name)
        images = images_from_tensor_proto(
            request.inputs[INPUT_NAME], input_spec.dtype, served.limits
        )
        outputs = served.predict(images, signature_name)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = served.name
        response.model_spec.version.value = served.version
        response.model_spec.signature_name = signature_name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_grpc_server(registry, host="127.0.0.1", port=8500, max_workers=8, limits=None):
    """Starts the PredictionService on `host:port` in background threads.

    Args:
        registry: the `ModelRegistry` to serve.
        host, port: where to listen (port 0: any free port).
        max_workers: threads handling calls.
        limits: `ServingLimits` (the registry's when None): the largest
            message, and the most calls handled at once; gRPC refuses
            further calls with RESOURCE_EXHAUSTED before reading them.

    Returns:
        `(server, port)`: the started `grpc.Server` (stop it with
        ``server.stop(grace)``) and the bound port (useful with port 0).
    """
    limits = limits or getattr(registry, "limits", None) or ServingLimits()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", limits.max_request_bytes),
            ("grpc.max_send_message_length", limits.max_request_bytes),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent_requests,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        DetectionPredictionService(registry), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"Cannot listen for gRPC on {host}:{port}.")
    server.start()
    return server, bound
