"""The graph that TFLite and ONNX files contain: letterboxed image in, detections out.

Encoded-image decoding cannot live in a TFLite or ONNX graph, so these
formats take the letterboxed float image (see
`yolor_keras.inference.letterboxing`) and return either the decoded
predictions, or, with NMS in the graph, padded detections in input pixels.
"""

import numpy as np
import tensorflow as tf

from yolor_keras.layers.nms import non_max_suppression
from yolor_keras.inference.predictor import detector_geometry

# Output names of a graph with NMS: (batch, max_det, 4) x1y1x2y2 input
# pixels, (batch, max_det) scores, (batch, max_det) int32 classes (-1 past
# the count), (batch,) int32 count.
NMS_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
# Output name of a graph without NMS: (batch, N, 5 + classes), see
# `yolor_keras.models.decode_predictions`.
DECODED_OUTPUT = "predictions"
# Name scope of everything after the network; int8 export keeps these ops in
# float32, since pixel coordinates and [0, 1] scores cannot share an int8 scale.
POSTPROCESS_SCOPE = "postprocess"


class ExportCheckError(RuntimeError):
    """A written export failed its checks; it was not put in place."""


def detection_function(
    model,
    nms=True,
    conf_threshold=0.25,
    iou_threshold=0.45,
    max_detections=100,
    multi_label=False,
):
    """Builds `images -> outputs` for a detector, traceable by TF converters.

    Args:
        model: a detector in deploy form (see `deploy_form`).
        nms: end with NMS (outputs `NMS_OUTPUTS`); otherwise end with the
            decoded predictions (output `DECODED_OUTPUT`).
        conf_threshold, iou_threshold, max_detections, multi_label: NMS
            settings, used when `nms` is True.

    Returns:
        A Python function of a float32 `(batch, S, S, 3)` tensor in [0, 1]
        returning a dict of tensors.
    """
    from yolor_keras.models import decode_predictions

    _, strides, anchors = detector_geometry(model)

    def detect(images):
        raw = model(images, training=False)
        with tf.name_scope(POSTPROCESS_SCOPE):
            decoded = decode_predictions(raw, anchors, strides)
            if not nms:
                return {DECODED_OUTPUT: decoded}
            detections = non_max_suppression(
                decoded,
                conf_threshold=conf_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
                multi_label=multi_label,
            )
            return {name: detections[name] for name in NMS_OUTPUTS}

    return detect


def nms_on_decoded(decoded, conf_threshold, iou_threshold, max_detections, multi_label):
    """NMS for files exported without it, as numpy in and out."""
    detections = non_max_suppression(
        tf.convert_to_tensor(decoded, tf.float32),
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        multi_label=multi_label,
    )
    return {name: detections[name].numpy() for name in NMS_OUTPUTS}


def check_finite_outputs(outputs, source):
    """Raises `ExportCheckError` when an exported model's outputs hold NaN or inf.

    A conversion that loses the weights produces a file that loads and runs
    but answers NaN.

    Args:
        outputs: dict of output name to numpy array.
        source: the file or folder named in the error.
    """
    for name, value in outputs.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ExportCheckError(f"{source}: output {name!r} holds NaN or infinite values.")
    if "num_detections" in outputs:
        counts = np.asarray(outputs["num_detections"])
        limit = next(
            (np.shape(outputs[name])[1] for name in ("detection_scores", "scores") if name in outputs),
            None,
        )
        if np.any(counts < 0) or (limit is not None and np.any(counts > limit)):
            raise ExportCheckError(f"{source}: num_detections {counts.tolist()} is out of range.")
