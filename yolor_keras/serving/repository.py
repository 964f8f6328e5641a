"""Exported models on disk (TF Serving's ``ROOT/NAME/VERSION/`` layout), loaded and checked.

Both front ends of `yolor serve`, REST (KServe) and gRPC (TF Serving's
PredictionService), run requests through `ServedModel.predict`, so a bad
request gets the same check and the same message on either. Every check
that bounds memory (images per request, pixels per image read from the
headers, pixels in flight) happens before anything is decoded.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from yolor_keras.export.image_header import encoded_image_shape
from yolor_keras.serving.limits import DEFAULT_MAX_BATCH_SIZE
from yolor_keras.serving.limits import PixelBudget
from yolor_keras.serving.limits import RequestTooLarge
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.limits import decode_cost
from yolor_keras.serving.limits import too_many_pixels_message

DEFAULT_SIGNATURE = "serving_default"
INPUT_NAME = "images"

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_SIGNATURE",
    "INPUT_NAME",
    "BadRequest",
    "ModelNotFound",
    "ModelRegistry",
    "PreparedBatch",
    "ServedModel",
]


class BadRequest(ValueError):
    """A request the model cannot run (HTTP 400 / gRPC INVALID_ARGUMENT)."""


class ModelNotFound(KeyError):
    """No such model or version (HTTP 404 / gRPC NOT_FOUND)."""

    def __str__(self):
        return str(self.args[0]) if self.args else "Model not found."


# The header parser of the export, traced once: a few hundred microseconds
# per image, and nothing is decoded.
_header_shape = tf.function(
    encoded_image_shape, input_signature=[tf.TensorSpec([], tf.string)], reduce_retracing=True
)


def encoded_image_sizes(images):
    """`(height, width)` of each encoded image, read from its header only.

    Raises:
        BadRequest: naming the first image that is not a JPEG, PNG, GIF, BMP
            or WebP file, or whose header cannot be read.
    """
    sizes = []
    for index, image in enumerate(images):
        try:
            height, width = (int(side) for side in _header_shape(tf.constant(image)).numpy())
        except tf.errors.InvalidArgumentError as error:
            cause = _first_line(error.message)
            raise BadRequest(f"Image {index}: unreadable header ({cause}).") from None
        if height < 0:
            raise BadRequest(
                f"Image {index}: Not an image: the bytes start with no JPEG, PNG, GIF, BMP or "
                "WebP signature."
            )
        sizes.append((height, width))
    return sizes


@dataclasses.dataclass
class PreparedBatch:
    """A checked request: its signature, input tensor and `decode_cost`.

    ``image_pixels`` holds each image's height x width, from which a
    server-side batch of several requests computes its own `decode_cost`.
    """

    signature_name: str
    tensor: tf.Tensor
    pixels: int
    image_pixels: tuple = ()


class ServedModel:
    """One version of one exported model, ready to run requests.

    Args:
        name: the model name (the folder name).
        version: the version number (the subfolder name).
        path: the SavedModel folder.
        limits: the `ServingLimits` requests are checked against.
        budget: the `PixelBudget` shared by every model of the server (a
            private one when None).
        batcher: a `batching.Batcher` that `run` hands requests to, so that
            concurrent ones run together; None runs each request alone.
    """

    def __init__(self, name, version, path, limits=None, budget=None, batcher=None):
        self.name = name
        self.version = int(version)
        self.path = os.fspath(path)
        self.limits = limits or ServingLimits()
        self.budget = budget or PixelBudget(self.limits.max_inflight_pixels)
        self.batcher = batcher
        self._loaded = tf.saved_model.load(self.path)
        self.signatures = dict(self._loaded.signatures)
        if DEFAULT_SIGNATURE not in self.signatures:
            raise ValueError(f"{self.path} has no {DEFAULT_SIGNATURE!r} signature.")

    @property
    def max_batch_size(self):
        return self.limits.max_batch_size

    def input_spec(self, signature_name):
        """The `tf.TensorSpec` of a signature's ``images`` input."""
        signature = self._signature(signature_name)
        specs = signature.structured_input_signature[1]
        if INPUT_NAME not in specs:
            raise BadRequest(
                f"Signature {signature_name!r} of model {self.name!r} has no "
                f"{INPUT_NAME!r} input; it takes {sorted(specs)}."
            )
        return specs[INPUT_NAME]

    def _signature(self, signature_name):
        if signature_name not in self.signatures:
            raise BadRequest(
                f"Model {self.name!r} version {self.version} has no signature "
                f"{signature_name!r}; it has {sorted(self.signatures)}."
            )
        return self.signatures[signature_name]

    def predict(self, images, signature_name=DEFAULT_SIGNATURE):
        """Checks a batch, waits for pixel budget, and runs it through a signature.

        Args:
            images: for a string input, a list of encoded images (bytes); for
                a uint8 input, a `(batch, height, width, 3)` array or nested
                list of integers in [0, 255].
            signature_name: ``serving_default`` or ``predict_images``.

        Returns:
            Dict of output name -> numpy array with a leading batch axis.

        Raises:
            BadRequest: the batch is empty, too large, of the wrong type, or
                an image cannot be used (the message says which and why).
            RequestTooLarge: the batch's pixels exceed what the server
                decodes at once.
            Overloaded: the pixel budget stayed busy for `queue_timeout`.
        """
        return self.run(self.prepare(images, signature_name))

    def prepare(self, images, signature_name=DEFAULT_SIGNATURE):
        """Checks a batch (sizes from the image headers) and builds its input tensor.

        Returns:
            A `PreparedBatch` for `run`; nothing has been decoded yet.
        """
        self._signature(signature_name)
        spec = self.input_spec(signature_name)
        if spec.dtype == tf.string:
            tensor, counts = self._encoded_batch(images)
        else:
            tensor, counts = self._pixel_batch(images, spec)
        pixels = decode_cost(counts)
        if pixels > self.budget.capacity:
            raise RequestTooLarge(too_many_pixels_message(pixels, self.budget.capacity))
        return PreparedBatch(signature_name, tensor, pixels, tuple(counts))

    def run(self, prepared):
        """Runs a `PreparedBatch`: through the batcher when there is one, else alone.

        Either way the caller gets the outputs of its own images only.
        """
        if self.batcher is not None:
            return self.batcher.run(self, prepared)
        return self.run_unbatched(prepared)

    def run_unbatched(self, prepared):
        """Runs a `PreparedBatch` once its pixels fit the budget (see `PixelBudget`)."""
        signature = self._signature(prepared.signature_name)
        with self.budget.reserve(prepared.pixels, self.limits.queue_timeout):
            try:
                outputs = signature(**{INPUT_NAME: prepared.tensor})
            except tf.errors.InvalidArgumentError as error:
                raise BadRequest(_first_line(error.message)) from None
            return {name: value.numpy() for name, value in outputs.items()}

    def _check_batch_size(self, size):
        if size == 0:
            raise BadRequest("The request holds no images (empty batch).")
        if size > self.limits.max_batch_size:
            raise BadRequest(
                f"The request holds {size} images; at most {self.limits.max_batch_size} are "
                "accepted per request."
            )

    def _check_image_size(self, index, height, width):
        if height * width > self.limits.max_image_pixels:
            raise BadRequest(
                f"Image {index} is too large: its header announces {height} x {width} = "
                f"{height * width} pixels; this server accepts at most "
                f"{self.limits.max_image_pixels} pixels per image."
            )

    def _encoded_batch(self, images):
        if isinstance(images, (bytes, str)) or not isinstance(images, (list, tuple)):
            raise BadRequest("Expected a list of encoded images.")
        self._check_batch_size(len(images))
        for index, image in enumerate(images):
            if not isinstance(image, bytes):
                raise BadRequest(
                    f"Image {index} is a {type(image).__name__}; encoded images must be "
                    'bytes (in JSON: {"b64": "<base64 of the file>"}).'
                )
            if not image:
                raise BadRequest(f"Image {index} is empty.")
        counts = []
        for index, (height, width) in enumerate(encoded_image_sizes(images)):
            self._check_image_size(index, height, width)
            counts.append(height * width)
        return tf.constant(list(images), tf.string), counts

    def _pixel_batch(self, images, spec):
        try:
            array = np.asarray(images)
        except ValueError:
            raise BadRequest("Pixel images must form a (batch, height, width, 3) array.") from None
        if array.ndim != 4 or array.shape[-1] != 3:
            raise BadRequest(
                f"Pixel images must have shape (batch, height, width, 3); got {array.shape}."
            )
        self._check_batch_size(array.shape[0])
        if array.shape[1] < 1 or array.shape[2] < 1:
            raise BadRequest(f"Images must not be empty; got shape {array.shape}.")
        self._check_image_size(0, array.shape[1], array.shape[2])
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
                raise BadRequest("Pixel values must be integers in [0, 255].")
            array = array.astype(np.uint8)
        counts = [array.shape[1] * array.shape[2]] * array.shape[0]
        return tf.constant(array, spec.dtype), counts


def _first_line(message):
    """The cause in a TF error message, without graph locations and stack notes.

    Eager calls of a signature wrap the cause as "Graph execution error:",
    "Detected at node ...", "<stack traces unavailable>", then the cause, then
    "[[{{node ...}}]]"; Assert failures read "assertion failed: [part] [part]".
    """
    for line in message.splitlines():
        line = line.strip()
        if (
            not line
            or line == "Graph execution error:"
            or line.startswith(
                ("Detected at node", "<stack traces", "[[", "File ", "{{function_node")
            )
        ):
            continue
        line = line.split("\t [[")[0].split(" [[")[0].strip()
        if line.startswith("assertion failed:"):
            line = line[len("assertion failed:") :].strip().replace("] [", " ").strip("[]")
        return line
    return "Invalid argument."


class ModelRegistry:
    """Every exported model and version under a root folder.

    Args:
        root: folder with ``NAME/VERSION/saved_model.pb`` inside.
        limits: the `ServingLimits` of every model (defaults when None).
        max_batch_size: shorthand for ``limits.max_batch_size``.
        batcher: a `batching.Batcher` shared by every model (server-side
            batching), or None.
    """

    def __init__(self, root, limits=None, max_batch_size=None, batcher=None):
        self.root = os.fspath(root)
        self.limits = limits or ServingLimits()
        if max_batch_size is not None:
            self.limits = dataclasses.replace(self.limits, max_batch_size=max_batch_size)
        # One budget for every model: the memory bound is the server's.
        self.budget = PixelBudget(self.limits.max_inflight_pixels)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"Model root {self.root} does not exist.")
        self.models = {}
        for name in sorted(os.listdir(self.root)):
            model_dir = os.path.join(self.root, name)
            if not os.path.isdir(model_dir):
                continue
            versions = {}
            for version in os.listdir(model_dir):
                path = os.path.join(model_dir, version)
                if version.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
                    versions[int(version)] = ServedModel(
                        name, version, path, self.limits, self.budget, batcher
                    )
            if versions:
                self.models[name] = dict(sorted(versions.items()))
        if not self.models:
            raise FileNotFoundError(
                f"No exported model under {self.root}: expected NAME/VERSION/saved_model.pb "
                "(write one with `yolor export --format saved_model`)."
            )

    def get(self, name, version=None):
        """The requested version of a model, or its highest version."""
        versions = self.models.get(name)
        if not versions:
            raise ModelNotFound(f"Servable not found for request: model {name!r} is not served.")
        if version is None:
            return versions[max(versions)]
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise BadRequest(f"Model version must be an integer; got {version!r}.") from None
        if version not in versions:
            raise ModelNotFound(
                f"Servable not found for request: model {name!r} has no version {version} "
                f"(it has {sorted(versions)})."
            )
        return versions[version]

    def status(self, name, version=None):
        """TF Serving's model status response for a model (or one version)."""
        if version is None:
            self.get(name)
            served = list(self.models[name].values())
        else:
            served = [self.get(name, version)]
        return {
            "model_version_status": [
                {
                    "version": str(model.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
                for model in reversed(served)
            ]
        }
