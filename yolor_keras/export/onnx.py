"""ONNX export through tf2onnx: ``task.detect`` on a letterboxed batch.

The file's input ``images`` is the letterboxed float32 batch
``(batch, S, S, 3)`` in [0, 1] (the task's ``preprocessor``, a
`YOLORImageConverter`, makes it; JPEG decoding cannot be expressed in ONNX).
Its outputs are ``task.detect_output_names(nms)``: without NMS (the default) the
detection head gives ``predictions`` ``(batch, N, 5 + classes)``:
``[cx, cy, w, h]`` in input pixels and sigmoid objectness and class scores,
as `yolor_keras.models.decode_predictions` returns. With ``nms=True`` it
gives ``boxes`` ``(batch, max_det, 4)`` x1y1x2y2 in input pixels,
``scores``, ``classes`` (int32, -1 past the count) and ``num_detections``.
Classification and embedding heads add ``label_probabilities`` and
``embedding``.

tf2onnx needs far more memory than the model: converting yolor_csp at 640
(53M weights) peaked at 14.5 GB of RAM, with or without NMS.
"""

import os

import numpy as np
import tensorflow as tf

from yolor_keras.atomic import write_file_atomically
from yolor_keras.export.checks import ExportCheckError
from yolor_keras.export.checks import check_finite_outputs
from yolor_keras.export.task_graph import detect_function
from yolor_keras.export.task_graph import export_decoder
from yolor_keras.export.task_graph import export_preprocessor
from yolor_keras.export.task_graph import export_task

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
    image_size=None,
    nms=False,
    conf_threshold=None,
    iou_threshold=None,
    max_detections=None,
    multi_label=None,
    prediction_decoder=None,
    opset=DEFAULT_OPSET,
):
    """Exports a task to an ONNX file (see the module docstring).

    Args:
        model: a `YOLORObjectDetector`, any heads (a folded copy is
            exported).
        filepath: output path ending in ``.onnx``.
        image_size: side of the square input, a multiple of the largest
            stride; default: the task's ``preprocessor``, else its fixed
            input size, else 640. The batch size stays dynamic.
        nms: put NMS in the graph (ONNX ``NonMaxSuppression`` in a loop over
            the batch).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings baked into the graph when `nms` is True; each one left
            None is the task's ``prediction_decoder``'s.
        prediction_decoder: a `NonMaxSuppression` to use instead of the
            task's own.
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
    task = export_task(model)
    image_size = export_preprocessor(task, image_size).image_size
    decoder = export_decoder(
        task,
        prediction_decoder,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    detect, output_names = detect_function(task, nms=nms, prediction_decoder=decoder)

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

    return write_file_atomically(
        filepath, lambda temporary: onnx.save(model_proto, temporary), check=check
    )


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
        session = onnxruntime.InferenceSession(
            os.fspath(filepath), providers=["CPUExecutionProvider"]
        )
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
        raise RuntimeError(
            f"Expected {len(names)} ONNX outputs; tf2onnx wrote {len(graph.output)}."
        )
    renames = {output.name: name for output, name in zip(graph.output, names)}
    for node in graph.node:
        node.output[:] = [renames.get(value, value) for value in node.output]
        node.input[:] = [renames.get(value, value) for value in node.input]
    for output in graph.output:
        output.name = renames[output.name]
