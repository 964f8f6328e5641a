"""SavedModel export for TensorFlow Serving: decode, letterbox, detect, map back.

The export is written in TF Serving's layout, ``ROOT/NAME/VERSION/``, from the
folded (deploy) model, with two signatures:

``serving_default``
    input ``images``: tf.string ``[batch]``, encoded JPEG/PNG/GIF/BMP files
    (REST clients send ``{"b64": "..."}``). Images of different sizes may
    share a batch: each is decoded and letterboxed on its own.
``predict_images``
    input ``images``: uint8 ``[batch, height, width, 3]`` RGB pixels.

Both return, padded to ``max_detections``:

- ``detection_boxes``: float32 ``[batch, max_detections, 4]`` as
  **[y1, x1, y2, x2] in the pixels of each input image** (the order of the
  TF Object Detection API and TF Model Garden; not normalised); zeros past
  ``num_detections``.
- ``detection_scores``: float32 ``[batch, max_detections]``, descending.
- ``detection_classes``: int32 ``[batch, max_detections]``, 0-based class
  indices, -1 past ``num_detections``.
- ``num_detections``: int32 ``[batch]``.

A string that is not an image, or an image whose header announces more than
``max_image_pixels`` pixels, fails the request with InvalidArgument (HTTP 400
in TF Serving) without decoding it.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from yolor_keras.atomic import write_directory_atomically
from yolor_keras.data.exif import decode_image
from yolor_keras.export.folding import deploy_form
from yolor_keras.export.detection_function import ExportCheckError
from yolor_keras.export.detection_function import check_finite_outputs
from yolor_keras.export.image_header import DEFAULT_MAX_IMAGE_PIXELS
from yolor_keras.export.image_header import check_encoded_image_size
from yolor_keras.inference.letterboxing import letterbox
from yolor_keras.inference.postprocess import scale_boxes_to_original
from yolor_keras.inference.predictor import Predictor
from yolor_keras.inference.predictor import check_precision
from yolor_keras.inference.predictor import with_precision

INPUT_NAME = "images"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
BOX_ORDER = "y1x1y2x2"
# Written next to the graph, where TF Serving ignores it (`assets.extra` is
# the SavedModel folder for files that the graph does not use).
METADATA_FILE = os.path.join("assets.extra", "yolor_metadata.json")


def serving_directory(root, name, version):
    """``root/name/version``, checking the parts TF Serving relies on.

    Args:
        root: the model base path (e.g. ``saved_models``).
        name: model name, used in URLs: letters, digits, ``_``, ``-``, ``.``.
        version: positive integer version; TF Serving loads the highest.
    """
    if not name or not all(ch.isalnum() or ch in "_-." for ch in name):
        raise ValueError(
            f"Model name {name!r} must be non-empty and use only letters, digits, "
            "'_', '-' and '.' (it becomes part of the serving URL)."
        )
    try:
        version_number = int(version)
    except (TypeError, ValueError):
        version_number = 0
    if version_number < 1 or str(version_number) != str(version).strip():
        raise ValueError(
            f"Model version must be a positive integer (TF Serving's version "
            f"folders are numbers); got {version!r}."
        )
    return os.path.join(os.fspath(root), name, str(version_number))


def export_saved_model(
    model,
    export_dir,
    image_size=640,
    class_names=None,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
    max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
    overwrite=False,
    precision="fp32",
):
    """Exports a detector as a SavedModel with image-in, boxes-out signatures.

    The SavedModel is written into a hidden sibling of `export_dir` (a name
    TF Serving does not take for a version), loaded back and run once by
    `check_saved_model`, and only then renamed to `export_dir`; a failure
    leaves any previous `export_dir` as it was.

    Args:
        model: a `YOLORObjectDetector` (training or deploy form; a folded copy is
            exported).
        export_dir: the version folder to write, e.g. from
            `serving_directory("saved_models", "yolor_p6", 1)`.
        image_size: side of the square letterbox the network runs at; a
            multiple of the largest stride.
        class_names: optional list of class names, stored in
            ``assets.extra/yolor_metadata.json`` for clients.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph (see `Predictor`).
        max_image_pixels: encoded images whose header announces more pixels
            are refused before decoding.
        overwrite: replace an existing, non-empty `export_dir`.
        precision: "fp32", or "bf16" for a graph whose convolutions compute
            in bfloat16 (`with_precision`): TF Serving then runs them on the
            bf16 units of the CPU (AMX, AVX512-BF16). Inputs and outputs keep
            their dtypes; decoding and NMS stay float32; the weights are
            stored in float32.

    Returns:
        `export_dir`.
    """
    export_dir = os.fspath(export_dir)
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(
            f"{export_dir} already exists and is not empty; pick a new version or "
            "pass overwrite=True (TF Serving may be serving that version)."
        )
    if not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ValueError(f"`max_image_pixels` must be a positive int; got {max_image_pixels!r}.")

    check_precision(precision)
    folded = with_precision(deploy_form(model), precision)
    predictor = Predictor(
        folded,
        class_names=class_names,
        image_size=image_size,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
        precision=precision,
    )
    size = predictor.image_size
    prepared_signature = (
        tf.TensorSpec([size, size, 3], tf.float32),
        tf.TensorSpec([], tf.float32),
        tf.TensorSpec([2], tf.float32),
        tf.TensorSpec([2], tf.int32),
    )

    def prepare(image):
        letterboxed, scale, pad = letterbox(image, size)
        return letterboxed, scale, pad, tf.shape(image)[:2]

    def detect_prepared(letterboxed, scale, pad, original_size):
        detections = predictor.detect_letterboxed(letterboxed)
        boxes = scale_boxes_to_original(detections["boxes"], scale, pad, original_size)
        return {
            "detection_boxes": tf.gather(boxes, [1, 0, 3, 2], axis=-1),
            "detection_scores": detections["scores"],
            "detection_classes": detections["classes"],
            "num_detections": detections["num_detections"],
        }

    def detect_encoded(images):
        def decode_and_prepare(encoded):
            with tf.control_dependencies([check_encoded_image_size(encoded, max_image_pixels)]):
                image = decode_image(encoded)  # EXIF orientation applied
            return prepare(image)

        prepared = tf.map_fn(decode_and_prepare, images, fn_output_signature=prepared_signature)
        return detect_prepared(*prepared)

    def detect_pixels(images):
        prepared = tf.map_fn(prepare, images, fn_output_signature=prepared_signature)
        return detect_prepared(*prepared)

    archive = keras.export.ExportArchive()
    archive.track(folded)
    # The first endpoint is also published as "serving_default".
    archive.add_endpoint(
        "serving_default",
        detect_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
    )
    archive.add_endpoint(
        "predict_images",
        detect_pixels,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)],
    )

    metadata = {
        "image_size": size,
        "num_classes": predictor.num_classes,
        "class_names": predictor.class_names,
        "box_order": BOX_ORDER,
        "conf_threshold": predictor.conf_threshold,
        "iou_threshold": predictor.iou_threshold,
        "max_detections": predictor.max_detections,
        "multi_label": predictor.multi_label,
        "max_image_pixels": max_image_pixels,
        "precision": precision,
    }

    def write(folder):
        archive.write_out(folder, verbose=False)
        write_metadata(folder, metadata)

    write_directory_atomically(
        export_dir, write, check=lambda folder: check_saved_model(folder, name=export_dir)
    )
    return export_dir


def write_metadata(export_dir, metadata):
    """Writes ``metadata`` to ``assets.extra/yolor_metadata.json`` in a SavedModel."""
    metadata_path = os.path.join(os.fspath(export_dir), METADATA_FILE)
    os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
    with open(metadata_path, "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=2)


# The image the export checks run: mid-grey, neither square nor a multiple
# of a stride, so that decoding, letterboxing and mapping back all run.
CHECK_IMAGE_SHAPE = (48, 80, 3)


def check_saved_model(export_dir, name=None):
    """Loads a written SavedModel and runs ``serving_default`` on one image.

    Raises `ExportCheckError` naming the folder when it does not load, when
    a weight or an output is not finite, or a detection count is out of
    range.

    Args:
        export_dir: the SavedModel folder.
        name: the folder named in errors (default `export_dir`), the
            destination when `export_dir` is a temporary copy.
    """
    export_dir = os.fspath(export_dir)
    name = os.fspath(name or export_dir)
    try:
        loaded = tf.saved_model.load(export_dir)
        serve = loaded.signatures["serving_default"]
        image = tf.fill(CHECK_IMAGE_SHAPE, tf.constant(128, tf.uint8))
        outputs = serve(**{INPUT_NAME: tf.reshape(tf.io.encode_png(image), [1])})
    except Exception as error:
        raise ExportCheckError(f"The SavedModel written for {name} does not run: {error}") from error
    # NMS drops NaN scores, so a model whose weights went NaN still answers
    # with finite (empty) outputs: the saved weights are read back too.
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    for key, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(key))):
            raise ExportCheckError(f"{name}: weight {key!r} holds NaN or infinite values.")
    check_finite_outputs({key: value.numpy() for key, value in outputs.items()}, name)


def read_metadata(export_dir):
    """The export settings saved next to a SavedModel (see `export_saved_model`)."""
    path = os.path.join(os.fspath(export_dir), METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)
