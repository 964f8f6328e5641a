"""TF Serving's gRPC PredictionService over the exported models.

Implements ``tensorflow.serving.PredictionService/Predict`` with the
request and response protos of `tensorflow_serving.apis`, so TF Serving's
gRPC clients (including `yolor_keras.serving.Client`) work unchanged
against `yolor serve`.
"""

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from yolor_keras.serving.repository import DEFAULT_SIGNATURE
from yolor_keras.serving.repository import INPUT_NAME
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelNotFound

# Large enough for a batch of camera JPEGs; gRPC's default is 4 MB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class DetectionPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` for every model of a `ModelRegistry`.

    Args:
        registry: the `ModelRegistry` to serve.
    """

    def __init__(self, registry):
        self.registry = registry

    def Predict(self, request, context):  # noqa: N802  (the gRPC method name)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        try:
            served = self.registry.get(spec.name, version)
            if set(request.inputs) != {INPUT_NAME}:
                raise BadRequest(
                    f"The request must have the one input {INPUT_NAME!r}; got {sorted(request.inputs)}."
                )
            images = tf.make_ndarray(request.inputs[INPUT_NAME])
            if images.dtype == object:
                images = list(images.reshape(-1))
            outputs = served.predict(images, signature_name)
        except ModelNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except (BadRequest, ValueError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = served.name
        response.model_spec.version.value = served.version
        response.model_spec.signature_name = signature_name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_grpc_server(registry, host="127.0.0.1", port=8500, max_workers=8):
    """Starts the PredictionService on `host:port` in background threads.

    Returns:
        `(server, port)`: the started `grpc.Server` (stop it with
        ``server.stop(grace)``) and the bound port (useful with port 0).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        DetectionPredictionService(registry), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"Cannot listen for gRPC on {host}:{port}.")
    server.start()
    return server, bound
