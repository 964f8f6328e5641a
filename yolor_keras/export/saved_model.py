"""SavedModel export for TensorFlow Serving: decode, letterbox, detect, map back.

The export is written in TF Serving's layout, ``ROOT/NAME/VERSION/``, from the
folded (deploy) task, with two signatures:

``serving_default``
    input ``images``: tf.string ``[batch]``, encoded JPEG/PNG/GIF/BMP/WebP
    files (REST clients send ``{"b64": "..."}``). Images of different sizes
    may share a batch: each is decoded and letterboxed on its own.
``predict_images``
    input ``images``: uint8 ``[batch, height, width, 3]`` RGB pixels.

Both letterbox with the task's ``preprocessor`` (a `YOLORImageConverter`),
run ``task.detect`` and return, for a task with a detection head, padded to
the NMS's ``max_detections``:

- ``detection_boxes``: float32 ``[batch, max_detections, 4]`` as
  **[y1, x1, y2, x2] in the pixels of each input image** (the order of the
  TF Object Detection API and TF Model Garden; not normalised); zeros past
  ``num_detections``.
- ``detection_scores``: float32 ``[batch, max_detections]``, descending.
- ``detection_classes``: int32 ``[batch, max_detections]``, 0-based class
  indices, -1 past ``num_detections``.
- ``num_detections``: int32 ``[batch]``.

and, for the other heads, ``label_probabilities`` (float32 ``[batch,
num_labels]``, sigmoid scores) and ``embedding`` (float32 ``[batch, dim]``,
unit vectors).

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
from yolor_keras.export.checks import ExportCheckError
from yolor_keras.export.checks import check_finite_outputs
from yolor_keras.export.image_header import DEFAULT_MAX_IMAGE_PIXELS
from yolor_keras.export.image_header import check_encoded_image_size
from yolor_keras.export.task_graph import NMS_SETTINGS
from yolor_keras.export.task_graph import export_decoder
from yolor_keras.export.task_graph import export_preprocessor
from yolor_keras.export.task_graph import export_task
from yolor_keras.inference.predictor import check_precision
from yolor_keras.inference.predictor import with_precision
from yolor_keras.tasks.yolor_object_detector import EMBEDDING_OUTPUT
from yolor_keras.tasks.yolor_object_detector import LABEL_OUTPUT

INPUT_NAME = "images"
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
    image_size=None,
    class_names=None,
    conf_threshold=None,
    iou_threshold=None,
    max_detections=None,
    multi_label=None,
    prediction_decoder=None,
    max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
    overwrite=False,
    precision="fp32",
):
    """Exports a task as a SavedModel with image-in, outputs-out signatures.

    The signatures (see the module docstring) return every head of the
    task. The SavedModel is written into a hidden sibling of `export_dir`
    (a name TF Serving does not take for a version), loaded back and run
    once by `check_saved_model`, and only then renamed to `export_dir`; a
    failure leaves any previous `export_dir` as it was.

    Args:
        model: a `YOLORObjectDetector`, any heads (training or deploy form;
            a folded copy is exported).
        export_dir: the version folder to write, e.g. from
            `serving_directory("saved_models", "yolor_p6", 1)`.
        image_size: side of the square letterbox the network runs at, a
            multiple of the largest stride; default: the task's
            ``preprocessor``, else its fixed input size, else 640.
        class_names: class names stored in ``assets.extra/yolor_metadata.json``
            for clients; default: the task's ``class_names``.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph; each one left None is the task's
            ``prediction_decoder``'s (or `prediction_decoder`'s).
        prediction_decoder: a `NonMaxSuppression` to use instead of the
            task's own.
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
    task = with_precision(export_task(model), precision)
    preprocessor = export_preprocessor(task, image_size)
    decoder = export_decoder(
        task,
        prediction_decoder,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    has_detection = "detection" in task.head_names
    class_names = _class_names(task, class_names) if has_detection else None
    size = preprocessor.image_size

    def detect_letterboxed(letterboxed, scale, pad, original_size):
        results = task.detect(letterboxed, prediction_decoder=decoder)
        outputs = {}
        if has_detection:
            boxes = preprocessor.boxes_to_original(results["boxes"], scale, pad, original_size)
            outputs["detection_boxes"] = tf.gather(boxes, [1, 0, 3, 2], axis=-1)
            outputs["detection_scores"] = results["scores"]
            outputs["detection_classes"] = results["classes"]
            outputs["num_detections"] = results["num_detections"]
        for name in (LABEL_OUTPUT, EMBEDDING_OUTPUT):
            if name in results:
                outputs[name] = results[name]
        return outputs

    def detect_encoded(images):
        def decode_and_letterbox(encoded):
            with tf.control_dependencies([check_encoded_image_size(encoded, max_image_pixels)]):
                image = decode_image(encoded)  # EXIF orientation applied
            letterboxed, scale, pad = preprocessor(image)
            return letterboxed, scale, pad, tf.shape(image)[:2]

        # One image at a time: a batch may mix sizes.
        prepared = tf.map_fn(
            decode_and_letterbox,
            images,
            fn_output_signature=(
                tf.TensorSpec([size, size, 3], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        return detect_letterboxed(*prepared)

    def detect_pixels(images):
        # One tensor, so one size: the converter letterboxes the whole batch.
        letterboxed, scale, pad = preprocessor(images)
        shape = tf.shape(images)
        original_size = tf.tile(shape[None, 1:3], tf.stack([shape[0], 1]))
        return detect_letterboxed(letterboxed, scale, pad, original_size)

    archive = keras.export.ExportArchive()
    archive.track(task)
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
    metadata = export_metadata(task, preprocessor, decoder, class_names)
    metadata.update(max_image_pixels=max_image_pixels, precision=precision)

    def write(folder):
        archive.write_out(folder, verbose=False)
        write_metadata(folder, metadata)

    write_directory_atomically(
        export_dir, write, check=lambda folder: check_saved_model(folder, name=export_dir)
    )
    return export_dir


def _class_names(task, class_names):
    names = task.class_names if class_names is None else [str(name) for name in class_names]
    if names is None:
        return [str(index) for index in range(task.num_classes)]
    if len(names) != task.num_classes:
        raise ValueError(
            f"`class_names` has {len(names)} names but the task's detection head has "
            f"{task.num_classes} classes."
        )
    return list(names)


def export_metadata(task, preprocessor, decoder, class_names):
    """What clients need to read the outputs, stored beside the graph.

    Keys: ``heads``, ``image_size``, ``pad_value``, ``box_order`` and, per
    head, ``num_classes``, ``class_names`` and the NMS settings
    (detection), ``num_labels`` (classification), ``embedding_dim``
    (embedding).
    """
    metadata = {
        "heads": list(task.head_names),
        "image_size": preprocessor.image_size,
        "pad_value": preprocessor.pad_value,
        "box_order": BOX_ORDER,
    }
    if "detection" in task.head_names:
        settings = decoder.settings()
        metadata.update(
            num_classes=task.num_classes,
            class_names=class_names,
            **{name: settings[name] for name in NMS_SETTINGS},
        )
    if "classification" in task.head_names:
        metadata["num_labels"] = task.head("classification").num_labels
    if "embedding" in task.head_names:
        metadata["embedding_dim"] = task.head("embedding").embedding_dim
    return metadata


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
        raise ExportCheckError(
            f"The SavedModel written for {name} does not run: {error}"
        ) from error
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
