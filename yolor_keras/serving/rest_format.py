"""TF Serving's REST request and response bodies for the detection signatures.

Request (``POST /v1/models/NAME[/versions/N]:predict``)::

    {"signature_name": "serving_default",            # optional
     "instances": [{"b64": "<base64 JPEG>"}, ...]}   # row format
    {"inputs": {"images": [{"b64": "..."}, ...]}}    # or columnar format

For the ``predict_images`` signature the images are nested lists of uint8
pixels instead of ``{"b64": ...}`` objects. The row format answers
``{"predictions": [{"detection_boxes": ..., ...}, ...]}`` (one object per
image), the columnar format ``{"outputs": {"detection_boxes": [...], ...}}``,
as TF Serving does.
"""

import base64
import binascii

from yolor_keras.serving.repository import DEFAULT_SIGNATURE
from yolor_keras.serving.repository import INPUT_NAME
from yolor_keras.serving.repository import BadRequest


def parse_predict_request(payload, takes_encoded_images):
    """Extracts the images of a REST predict request.

    Args:
        payload: the decoded JSON body.
        takes_encoded_images: whether the signature takes encoded images
            (then every image must be a ``{"b64": ...}`` object).

    Returns:
        `(images, columnar)`: a list of bytes or of nested pixel lists, and
        whether the request used the columnar ``inputs`` format.

    Raises:
        BadRequest: with a message naming the offending field.
    """
    if not isinstance(payload, dict):
        raise BadRequest(
            'The request body must be a JSON object with "instances" or "inputs"; got '
            f"{type(payload).__name__}."
        )
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise BadRequest('The request must have exactly one of "instances" or "inputs".')
    if has_instances:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise BadRequest('"instances" must be a list, one entry per image.')
        images = [
            _unwrap_named(instance, f"instances[{index}]")
            for index, instance in enumerate(instances)
        ]
    else:
        inputs = payload["inputs"]
        if isinstance(inputs, dict) and "b64" not in inputs:
            if set(inputs) != {INPUT_NAME}:
                raise BadRequest(
                    f'"inputs" must name the one input {INPUT_NAME!r}; got {sorted(inputs)}.'
                )
            inputs = inputs[INPUT_NAME]
        if not isinstance(inputs, list):
            raise BadRequest('"inputs" must be a list of images (or {"images": [...]}).')
        images = inputs
    if takes_encoded_images:
        images = [_decode_b64(image, f"image {index}") for index, image in enumerate(images)]
    return images, not has_instances


def signature_name_of(payload):
    """The requested signature (``serving_default`` when not given)."""
    if not isinstance(payload, dict):
        return DEFAULT_SIGNATURE
    name = payload.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str) or not name:
        raise BadRequest('"signature_name" must be a non-empty string.')
    return name


def _unwrap_named(instance, field):
    # Row format entries are either the value or {"images": value}.
    if isinstance(instance, dict) and "b64" not in instance:
        if set(instance) != {INPUT_NAME}:
            raise BadRequest(
                f"{field} must be an image or {{{INPUT_NAME!r}: image}}; got keys {sorted(instance)}."
            )
        return instance[INPUT_NAME]
    return instance


def _decode_b64(value, field):
    if not isinstance(value, dict) or set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest(f'{field} must be {{"b64": "<base64 of an encoded image>"}}.')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field}: the b64 field is not valid base64.") from None


def format_predict_response(outputs, columnar):
    """The JSON response for signature outputs (dict of numpy arrays)."""
    if columnar:
        return {"outputs": {name: value.tolist() for name, value in outputs.items()}}
    batch = len(next(iter(outputs.values())))
    return {
        "predictions": [
            {name: value[index].tolist() for name, value in outputs.items()}
            for index in range(batch)
        ]
    }
