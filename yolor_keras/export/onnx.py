"""ONNX export through tf2onnx: decoded predictions, or detections with NMS.

The file's input ``images`` is the letterboxed float32 batch
``(batch, S, S, 3)`` in [0, 1] (see `yolor_keras.inference.letterboxing`;
JPEG decoding cannot be expressed in ONNX). Without NMS the output is
``predictions`` ``(batch, N, 5 + classes)``: ``[cx, cy, w, h]`` in input
pixels and sigmoid objectness and class scores, as
`yolor_keras.models.decode_predictions` returns. With ``nms=True`` the
outputs are ``boxes`` ``(batch, max_det, 4)`` x1y1x2y2 in input pixels,
``scores``, ``classes`` (int32, -1 past the count) and ``num_detections``.

tf2onnx needs far more memory than the model: converting yolor_csp at 640
(53M weights) peaked at 14.5 GB of RAM, with or without NMS.
"""

import os

import numpy as np
import tensorflow as tf

from yolor_keras.atomic import write_file_atomically
from yolor_keras.export.folding import deploy_form
from yolor_keras.export.detection_function import DECODED_OUTPUT
from yolor_keras.export.detection_function import ExportCheckError
from yolor_keras.export.detection_function import NMS_OUTPUTS
from yolor_keras.export.detection_function import check_finite_outputs
from yolor_keras.export.detection_function import detection_function
from yolor_keras.inference.letterboxing import check_image_size
from yolor_keras.inference.predictor import detector_geometry

INPUT_NAME = "images"
DEFAULT_OPSET = 17


def _patch_tf2onnx_for_numpy2():
    # tf2onnx 1.17 still refers to `np.object` and friends; Keras ships the
    # fix it applies before its own ONNX export, and so do we.
    import warnings

    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # a future Keras without it needs no patch
        return
    with warnings.catch_warnings():
        # Its `hasattr(np, "object")` probe itself warns on NumPy 2.
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


def export_onnx(
    model,
    filepath,
    image_size=640,
    nms=False,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
    opset=DEFAULT_OPSET,
):
    """Exports a detector to an ONNX file (see the module docstring).

    Args:
        model: a `YOLORObjectDetector` (a folded copy is exported).
        filepath: output path ending in ``.onnx``.
        image_size: side of the square input; a multiple of the largest
            stride. The batch size stays dynamic.
        nms: put NMS in the graph (ONNX ``NonMaxSuppression`` in a loop over
            the batch).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph when `nms` is True.
        opset: ONNX opset version.

    The file is written beside `filepath` under a hidden name, checked by
    `check_onnx` and only then renamed to `filepath`: a failed export leaves
    a previous file there as it was.

    Returns:
        `filepath`.
    """
    import tf2onnx

    filepath = os.fspath(filepath)
    if not filepath.endswith(".onnx"):
        raise ValueError(f"An ONNX file name must end with '.onnx'; got {filepath}.")
    _, strides, _ = detector_geometry(model)
    image_size = check_image_size(image_size, max(strides))
    folded = deploy_form(model)
    detect = detection_function(
        folded,
        nms=nms,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    output_names = NMS_OUTPUTS if nms else (DECODED_OUTPUT,)

    def ordered_outputs(images):
        outputs = detect(images)
        return [outputs[name] for name in output_names]

    signature = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)]
    _patch_tf2onnx_for_numpy2()
    model_proto, _ = tf2onnx.convert.from_function(
        tf.function(ordered_outputs, input_signature=signature),
        input_signature=signature,
        opset=opset,
    )
    _rename_outputs(model_proto, output_names)
    return write_onnx(filepath, model_proto)


def write_onnx(filepath, model_proto):
    """Saves an ONNX model to `filepath` atomically, after `check_onnx`."""
    import onnx

    def check(temporary):
        check_onnx(temporary, name=filepath)

    return write_file_atomically(filepath, lambda temporary: onnx.save(model_proto, temporary), check=check)


def check_onnx(filepath, name=None):
    """Checks a written `.onnx` file: the ONNX checker, and one finite run.

    The run, on a mid-grey batch of one, happens when ONNX Runtime is
    installed. Raises `ExportCheckError` naming the file on any failure.

    Args:
        filepath: the `.onnx` file (an export's temporary copy).
        name: the file named in errors (default `filepath`), the
            destination when `filepath` is a temporary copy.
    """
    import onnx

    name = name or filepath
    try:
        onnx.checker.check_model(os.fspath(filepath))
    except Exception as error:
        raise ExportCheckError(f"{name} is not a valid ONNX model: {error}") from error
    try:
        import onnxruntime
    except ImportError:
        return
    try:
        session = onnxruntime.InferenceSession(os.fspath(filepath), providers=["CPUExecutionProvider"])
        [model_input] = session.get_inputs()
        # The batch dimension is symbolic (a string); the image sides are fixed.
        shape = [1] + [int(side) for side in model_input.shape[1:]]
        values = session.run(None, {model_input.name: np.full(shape, 0.5, np.float32)})
    except Exception as error:
        raise ExportCheckError(f"{name} does not run in ONNX Runtime: {error}") from error
    outputs = {output.name: value for output, value in zip(session.get_outputs(), values)}
    check_finite_outputs(outputs, name)


def _rename_outputs(model_proto, names):
    """Gives the graph outputs readable names (tf2onnx calls them Identity:0...)."""
    graph = model_proto.graph
    if len(graph.output) != len(names):
        raise RuntimeError(f"Expected {len(names)} ONNX outputs; tf2onnx wrote {len(graph.output)}.")
    renames = {output.name: name for output, name in zip(graph.output, names)}
    for node in graph.node:
        node.output[:] = [renames.get(value, value) for value in node.output]
        node.input[:] = [renames.get(value, value) for value in node.input]
    for output in graph.output:
        output.name = renames[output.name]
