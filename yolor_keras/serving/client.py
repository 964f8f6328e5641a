"""`Client`: send images to TF Serving (or `yolor serve`), get `Predictor`-style results.

REST posts ``{"instances": [{"b64": ...}]}`` to
``/v1/models/NAME[/versions/N]:predict``; gRPC calls
``PredictionService/Predict`` with a tf.string tensor. Both use the
``serving_default`` signature of `export_saved_model`, whose boxes come back
as [y1, x1, y2, x2]; the client returns them as [x1, y1, x2, y2] like the
`Predictor`.
"""

import base64
import os

import numpy as np

PROTOCOLS = ("rest", "grpc")
SIGNATURE = "serving_default"
INPUT_NAME = "images"


class ServingError(RuntimeError):
    """The server refused or failed a request.

    Attributes:
        status: the HTTP status code or gRPC status name.
        message: the server's error message.
    """

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def encode_image(image):
    """Encoded bytes for an image given as a path, bytes or uint8 RGB array (PNG)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as file:
            return file.read()
    if isinstance(image, np.ndarray):
        import io

        from PIL import Image

        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"An image array must be (height, width, 3) uint8; got {image.shape} {image.dtype}."
            )
        buffer = io.BytesIO()
        # PNG is lossless: the server sees exactly these pixels.
        Image.fromarray(image).save(buffer, "PNG")
        return buffer.getvalue()
    raise TypeError(f"An image must be a path, bytes or a uint8 array; got {type(image).__name__}.")


class Client:
    """A TF Serving client for exported YOLOR detectors.

    Args:
        url: REST: ``http://host:8501``; gRPC: ``host:8500``.
        model_name: the served model name.
        version: a version number, or None for the highest.
        protocol: ``"rest"`` or ``"grpc"``.
        class_names: optional list of class names for the results.
        timeout: seconds per request.

    Example:
    ```python
    client = Client("http://localhost:8501", "yolor_p6")
    [result] = client.predict(["street.jpg"])
    result["boxes"]  # (n, 4) x1, y1, x2, y2 in the image's pixels
    ```
    """

    def __init__(
        self, url, model_name, version=None, protocol="rest", class_names=None, timeout=60.0
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
        if version is not None and (not str(version).isdigit() or int(version) < 1):
            raise ValueError(f"`version` must be a positive integer or None; got {version!r}.")
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = None if version is None else int(version)
        self.protocol = protocol
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.timeout = timeout
        if protocol == "rest":
            import requests

            if not self.url.startswith(("http://", "https://")):
                self.url = "http://" + self.url
            self._session = requests.Session()
        else:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            target = self.url.split("://", 1)[-1]
            self._channel = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ],
            )
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    @property
    def model_path(self):
        """The REST path of the model, e.g. ``/v1/models/yolor_p6/versions/2``."""
        path = f"/v1/models/{self.model_name}"
        return path if self.version is None else f"{path}/versions/{self.version}"

    def status(self):
        """The model's status (REST only): TF Serving's ``model_version_status``."""
        if self.protocol != "rest":
            raise NotImplementedError("status() uses the REST API.")
        response = self._session.get(self.url + self.model_path, timeout=self.timeout)
        return self._json(response)

    def predict_raw(self, images):
        """Sends images; returns the signature outputs as numpy arrays.

        Args:
            images: a list of paths, encoded bytes or uint8 RGB arrays.

        Returns:
            Dict with ``detection_boxes`` (batch, max_det, 4) [y1, x1, y2, x2],
            ``detection_scores``, ``detection_classes`` and ``num_detections``.
        """
        encoded = [encode_image(image) for image in images]
        if self.protocol == "rest":
            return self._predict_rest(encoded)
        return self._predict_grpc(encoded)

    def predict(self, images):
        """Sends images; returns one `Predictor`-style result dict per image."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, np.ndarray)):
            images = [images]
        outputs = self.predict_raw(images)
        results = []
        for index in range(len(outputs["num_detections"])):
            count = int(outputs["num_detections"][index])
            boxes = np.asarray(outputs["detection_boxes"][index][:count], np.float32).reshape(-1, 4)
            classes = np.asarray(outputs["detection_classes"][index][:count], np.int32)
            results.append(
                {
                    "boxes": boxes[:, [1, 0, 3, 2]],
                    "scores": np.asarray(outputs["detection_scores"][index][:count], np.float32),
                    "classes": classes,
                    "class_names": [self._class_name(c) for c in classes],
                }
            )
        return results

    def _class_name(self, class_index):
        if self.class_names is None or not 0 <= class_index < len(self.class_names):
            return str(int(class_index))
        return self.class_names[class_index]

    def _predict_rest(self, encoded):
        body = {
            "signature_name": SIGNATURE,
            "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in encoded],
        }
        response = self._session.post(
            f"{self.url}{self.model_path}:predict", json=body, timeout=self.timeout
        )
        predictions = self._json(response)["predictions"]
        if not predictions:
            return {
                "detection_boxes": np.zeros((0, 0, 4), np.float32),
                "detection_scores": np.zeros((0, 0), np.float32),
                "detection_classes": np.zeros((0, 0), np.int32),
                "num_detections": np.zeros((0,), np.int32),
            }
        return {
            name: np.asarray([prediction[name] for prediction in predictions])
            for name in predictions[0]
        }

    @staticmethod
    def _json(response):
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code != 200:
            raise ServingError(response.status_code, body.get("error", response.text))
        return body

    def _predict_grpc(self, encoded):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = SIGNATURE
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.inputs[INPUT_NAME].CopyFrom(
            tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)])
        )
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details()) from None
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    def close(self):
        """Closes the HTTP session or gRPC channel."""
        if self.protocol == "rest":
            self._session.close()
        else:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
