"""Deployment of `YOLORMultiTask`: fold, then SavedModel, TFLite and ONNX.

`fold_multi_task` builds the deploy form: every BatchNorm folds into its
conv, and every head's implicit knowledge into the linear layer next to it
(the detection head's 1x1 conv, the classification and embedding heads'
Dense layers), with the same outputs; nothing implicit stays at inference.

The exported graphs return every enabled head's outputs at once:

- detection: NMS detections (``boxes``, ``scores``, ``classes``,
  ``num_detections``; see `yolor_keras.inference.non_max_suppression`);
- classification: ``label_probabilities``, ``(batch, num_labels)``
  sigmoid scores;
- embedding: ``embedding``, ``(batch, embedding_dim)`` unit vectors.

The SavedModel takes encoded images (its single ``serving_default``
signature decodes and letterboxes each one, and maps boxes back to its
pixels as ``detection_boxes`` [y1, x1, y2, x2], like
`yolor_keras.export.export_saved_model`). TFLite and ONNX take the
letterboxed float32 batch (`yolor_keras.inference.letterboxing`); their boxes
are [x1, y1, x2, y2] in input pixels.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from yolor_keras.atomic import write_directory_atomically
from yolor_keras.data.exif import decode_image
from yolor_keras.export.detection_function import DECODED_OUTPUT
from yolor_keras.export.detection_function import NMS_OUTPUTS
from yolor_keras.export.detection_function import POSTPROCESS_SCOPE
from yolor_keras.export.image_header import DEFAULT_MAX_IMAGE_PIXELS
from yolor_keras.export.image_header import check_encoded_image_size
from yolor_keras.export.litert import SIGNATURE as TFLITE_SIGNATURE
from yolor_keras.export.litert import _convert as convert_saved_model_to_tflite
from yolor_keras.export.litert import write_tflite
from yolor_keras.export.onnx import DEFAULT_OPSET
from yolor_keras.export.onnx import _patch_tf2onnx_for_numpy2
from yolor_keras.export.onnx import _rename_outputs
from yolor_keras.export.onnx import write_onnx
from yolor_keras.export.saved_model import check_saved_model
from yolor_keras.export.saved_model import write_metadata
from yolor_keras.inference.letterboxing import check_image_size
from yolor_keras.inference.letterboxing import letterbox
from yolor_keras.layers.nms import non_max_suppression
from yolor_keras.inference.postprocess import scale_boxes_to_original
from yolor_keras.layers import fold_batchnorm
from yolor_keras.layers import fold_implicit_conv1x1
from yolor_keras.models import decode_predictions
from yolor_keras.models import iter_layers
from yolor_keras.models import module_path

INPUT_NAME = "images"
LABEL_OUTPUT = "label_probabilities"
EMBEDDING_OUTPUT = "embedding"
TFLITE_QUANTIZATIONS = ("none", "fp16")


def _multi_task_class():
    # Imported late: tasks import the losses and models, export must not
    # become a dependency of them.
    from yolor_keras.tasks import YOLORMultiTask

    return YOLORMultiTask


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _linear_weights(layer):
    """Kernel as a 1x1 conv kernel ``(1, 1, Cin, Cout)`` and bias, for a Conv2D or Dense."""
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else None
    if kernel.ndim == 2:
        kernel = kernel[None, None]
    return kernel, bias


def _set_linear(layer, kernel, bias):
    layer.kernel.assign(np.reshape(kernel, tuple(layer.kernel.shape)))
    if layer.use_bias:
        layer.bias.assign(np.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias)


def _apply_fold_step(step, source, target):
    kind, name = step[0], step[1]
    layer = target[name]
    if kind == "copy":
        _set_linear(layer, *_linear_weights(source[name]))
    elif kind == "conv_bn":
        batchnorm = source[step[2]]
        kernel, bias = _numpy(source[name].kernel), None
        if source[name].use_bias:
            bias = _numpy(source[name].bias)
        _set_linear(
            layer,
            *fold_batchnorm(
                kernel,
                bias,
                _numpy(batchnorm.gamma) if batchnorm.scale else None,
                _numpy(batchnorm.beta) if batchnorm.center else None,
                _numpy(batchnorm.moving_mean),
                _numpy(batchnorm.moving_variance),
                batchnorm.epsilon,
            ),
        )
    elif kind == "bn_affine":
        # A BatchNorm with no conv before it: x * scale + offset.
        batchnorm = source[name]
        gamma = _numpy(batchnorm.gamma).astype(np.float64) if batchnorm.scale else 1.0
        beta = _numpy(batchnorm.beta).astype(np.float64) if batchnorm.center else 0.0
        variance = _numpy(batchnorm.moving_variance).astype(np.float64)
        scale = gamma / np.sqrt(variance + batchnorm.epsilon)
        offset = beta - _numpy(batchnorm.moving_mean).astype(np.float64) * scale
        layer.scale.assign(scale.astype("float32"))
        layer.offset.assign(offset.astype("float32"))
    elif kind == "implicit_linear":
        add_vector = None if step[2] is None else _numpy(source[step[2]].implicit_vector())
        mul_vector = None if step[3] is None else _numpy(source[step[3]].implicit_vector())
        kernel, bias = _linear_weights(source[name])
        _set_linear(layer, *fold_implicit_conv1x1(kernel, bias, add_vector, mul_vector))
    else:
        raise ValueError(f"Unknown fold step {step!r}.")


def fold_multi_task(model):
    """Returns the deploy form of a `YOLORMultiTask`, with the same outputs.

    Args:
        model: a training-form `YOLORMultiTask`; it is not modified.

    Returns:
        A new `YOLORMultiTask` with ``deploy=True``: no BatchNormalization
        and no implicit layers (the paper branch's standalone CSP
        BatchNorms become a fixed `ChannelAffine`).
    """
    multi_task_class = _multi_task_class()
    if not isinstance(model, multi_task_class):
        raise ValueError(f"fold_multi_task() needs a YOLORMultiTask; got {type(model).__name__}.")
    if model.deploy:
        raise ValueError(f"Model '{model.name}' is already in deploy form.")
    config = model.get_config()
    config.update(deploy=True, name=f"{model.name}_deploy")
    folded = multi_task_class.from_config(config)

    source = {module_path(layer.name): layer for layer in iter_layers(model)}
    target = {module_path(layer.name): layer for layer in iter_layers(folded)}
    assigned = set()
    for step in model.fold_steps():
        _apply_fold_step(step, source, target)
        assigned.add(step[1])
    unassigned = [
        layer.name
        for layer in iter_layers(folded)
        if layer.weights and module_path(layer.name) not in assigned
    ]
    if unassigned:
        raise ValueError(
            f"fold_multi_task() left deploy layers without weights: {unassigned[:10]}."
        )
    return folded


def deploy_multi_task(model):
    """``model`` itself if already in deploy form, else a folded copy."""
    return model if getattr(model, "deploy", False) else fold_multi_task(model)


def multi_task_function(
    model, nms=True, conf_threshold=0.25, iou_threshold=0.45, max_detections=100, multi_label=False
):
    """Builds ``images -> outputs`` for a multi-task model, traceable by TF converters.

    Args:
        model: a `YOLORMultiTask` (deploy form for export).
        nms: end the detection branch with NMS (outputs `NMS_OUTPUTS`),
            otherwise with the decoded predictions (`DECODED_OUTPUT`).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings.

    Returns:
        A function of a float32 ``(batch, S, S, 3)`` tensor in [0, 1]
        returning a dict of tensors, one entry per output name.
    """

    def run(images):
        outputs = model(images, training=False)
        results = {}
        if "detection" in outputs:
            with tf.name_scope(POSTPROCESS_SCOPE):
                raw = [tf.cast(level, tf.float32) for level in outputs["detection"]]
                decoded = decode_predictions(raw, model.anchors, model.strides)
                if nms:
                    detections = non_max_suppression(
                        decoded,
                        conf_threshold=conf_threshold,
                        iou_threshold=iou_threshold,
                        max_detections=max_detections,
                        multi_label=multi_label,
                    )
                    results.update({name: detections[name] for name in NMS_OUTPUTS})
                else:
                    results[DECODED_OUTPUT] = decoded
        if "classification" in outputs:
            results[LABEL_OUTPUT] = tf.sigmoid(tf.cast(outputs["classification"], tf.float32))
        if "embedding" in outputs:
            results[EMBEDDING_OUTPUT] = tf.cast(outputs["embedding"], tf.float32)
        return results

    return run


def output_names(model, nms=True):
    """The output names of `multi_task_function` for ``model``, in a fixed order."""
    names = []
    if "detection" in model.heads:
        names.extend(NMS_OUTPUTS if nms else (DECODED_OUTPUT,))
    if "classification" in model.heads:
        names.append(LABEL_OUTPUT)
    if "embedding" in model.heads:
        names.append(EMBEDDING_OUTPUT)
    return names


def _check_output_path(filepath, suffix):
    filepath = os.fspath(filepath)
    if not filepath.endswith(suffix):
        raise ValueError(f"The output file name must end with '{suffix}'; got {filepath}.")
    directory = os.path.dirname(filepath)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return filepath


def export_multi_task_saved_model(
    model,
    export_dir,
    image_size=640,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
    max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
    overwrite=False,
):
    """Exports a multi-task model as a SavedModel with one encoded-image signature.

    ``serving_default`` takes ``images``, tf.string ``[batch]`` of encoded
    JPEG/PNG/GIF/BMP files (images of different sizes may share a batch),
    and returns, per enabled head: ``detection_boxes`` (float32
    ``[batch, max_detections, 4]``, [y1, x1, y2, x2] in each image's own
    pixels), ``detection_scores``, ``detection_classes`` (int32, -1 past
    the count), ``num_detections``; ``label_probabilities``; ``embedding``.
    Settings and head names go to ``assets.extra/yolor_metadata.json``.

    Args:
        model: a `YOLORMultiTask` (a folded copy is exported).
        export_dir: the folder to write (e.g. ``saved_models/NAME/1``).
        image_size: side of the square letterbox; a multiple of the
            largest stride.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph.
        max_image_pixels: encoded images whose header announces more pixels
            are refused (InvalidArgument) before decoding.
        overwrite: replace an existing, non-empty `export_dir`.

    Returns:
        `export_dir`.
    """
    export_dir = os.fspath(export_dir)
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(
            f"{export_dir} already exists and is not empty; pick a new folder or pass "
            "overwrite=True."
        )
    if not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ValueError(f"`max_image_pixels` must be a positive int; got {max_image_pixels!r}.")
    image_size = check_image_size(image_size, max(model.strides))
    folded = deploy_multi_task(model)
    run = multi_task_function(
        folded,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    prepared_signature = (
        tf.TensorSpec([image_size, image_size, 3], tf.float32),
        tf.TensorSpec([], tf.float32),
        tf.TensorSpec([2], tf.float32),
        tf.TensorSpec([2], tf.int32),
    )

    def decode_and_prepare(encoded):
        with tf.control_dependencies([check_encoded_image_size(encoded, max_image_pixels)]):
            image = decode_image(encoded)  # EXIF orientation applied
        letterboxed, scale, pad = letterbox(image, image_size)
        return letterboxed, scale, pad, tf.shape(image)[:2]

    def serve(images):
        letterboxed, scale, pad, original_size = tf.map_fn(
            decode_and_prepare, images, fn_output_signature=prepared_signature
        )
        results = run(letterboxed)
        outputs = {}
        if "detection" in folded.heads:
            boxes = scale_boxes_to_original(results["boxes"], scale, pad, original_size)
            outputs["detection_boxes"] = tf.gather(boxes, [1, 0, 3, 2], axis=-1)
            outputs["detection_scores"] = results["scores"]
            outputs["detection_classes"] = results["classes"]
            outputs["num_detections"] = results["num_detections"]
        for name in (LABEL_OUTPUT, EMBEDDING_OUTPUT):
            if name in results:
                outputs[name] = results[name]
        return outputs

    archive = keras.export.ExportArchive()
    archive.track(folded)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
    )

    metadata = {
        "heads": list(folded.heads),
        "image_size": image_size,
        "num_classes": folded.num_classes,
        "num_labels": folded.num_labels,
        "embedding_dim": folded.embedding_dim,
        "class_names": folded.class_names,
        "box_order": "y1x1y2x2",
        "conf_threshold": float(conf_threshold),
        "iou_threshold": float(iou_threshold),
        "max_detections": int(max_detections),
        "multi_label": bool(multi_label),
        "max_image_pixels": max_image_pixels,
    }

    def write(folder):
        archive.write_out(folder, verbose=False)
        write_metadata(folder, metadata)

    # Written beside `export_dir`, loaded and run, then renamed into place.
    write_directory_atomically(
        export_dir, write, check=lambda folder: check_saved_model(folder, name=export_dir)
    )
    return export_dir


def export_multi_task_tflite(
    model,
    filepath,
    image_size=640,
    quantize="none",
    nms=True,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
):
    """Exports a multi-task model to a `.tflite` file (built-in ops only).

    The ``serve`` signature takes ``images``, float32 ``(1, S, S, 3)`` in
    [0, 1] (letterboxed), and returns the outputs of `multi_task_function`.
    Run it with `yolor_keras.export.litert.run_tflite`.

    Args:
        model: a `YOLORMultiTask` (a folded copy is exported).
        filepath: output path ending in ``.tflite``.
        image_size: side of the square input.
        quantize: ``"none"`` (float32) or ``"fp16"`` (float16 weights).
            int8 is not offered for the multi-task graph: its calibration
            keeps only the detection post-processing in float.
        nms: end the detection branch with NMS.
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings.

    Returns:
        `filepath`.
    """
    filepath = _check_output_path(filepath, ".tflite")
    if quantize not in TFLITE_QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {TFLITE_QUANTIZATIONS}; got {quantize!r}.")
    image_size = check_image_size(image_size, max(model.strides))
    folded = deploy_multi_task(model)
    run = multi_task_function(
        folded, nms, conf_threshold, iou_threshold, max_detections, multi_label
    )
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # Through a SavedModel that tracks the variables: converting concrete
        # functions directly can silently drop the weights.
        archive = keras.export.ExportArchive()
        archive.track(folded)
        archive.add_endpoint(
            TFLITE_SIGNATURE,
            run,
            input_signature=[
                tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name=INPUT_NAME)
            ],
        )
        archive.write_out(saved_model_dir, verbose=False)
        tflite_model = convert_saved_model_to_tflite(saved_model_dir, quantize, None)
    # Checked (size, loading, a finite run) before it replaces `filepath`.
    return write_tflite(filepath, tflite_model, folded.count_params(), quantize)


def export_multi_task_onnx(
    model,
    filepath,
    image_size=640,
    nms=True,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
    opset=DEFAULT_OPSET,
):
    """Exports a multi-task model to ONNX through tf2onnx.

    Input ``images``: float32 ``(batch, S, S, 3)`` in [0, 1] (letterboxed;
    the batch stays dynamic). Outputs: `output_names(model, nms)`.

    Args:
        model: a `YOLORMultiTask` (a folded copy is exported).
        filepath: output path ending in ``.onnx``.
        image_size: side of the square input.
        nms: end the detection branch with NMS (ONNX ``NonMaxSuppression``).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings.
        opset: ONNX opset version.

    Returns:
        `filepath`.
    """
    import tf2onnx

    filepath = _check_output_path(filepath, ".onnx")
    image_size = check_image_size(image_size, max(model.strides))
    folded = deploy_multi_task(model)
    run = multi_task_function(
        folded, nms, conf_threshold, iou_threshold, max_detections, multi_label
    )
    names = output_names(folded, nms)

    def ordered_outputs(images):
        results = run(images)
        return [results[name] for name in names]

    signature = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)]
    _patch_tf2onnx_for_numpy2()
    model_proto, _ = tf2onnx.convert.from_function(
        tf.function(ordered_outputs, input_signature=signature),
        input_signature=signature,
        opset=opset,
    )
    _rename_outputs(model_proto, names)
    # Checked (ONNX checker, a finite run) before it replaces `filepath`.
    return write_onnx(filepath, model_proto)
