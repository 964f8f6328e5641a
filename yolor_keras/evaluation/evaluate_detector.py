"""Runs a detector over an evaluation dataset and scores it with COCO mAP."""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data.decode import letterbox_to_original
from yolor_keras.evaluation.coco_evaluator import COCOEvaluator
from yolor_keras.evaluation.protocol import COCO_EVAL_NMS
from yolor_keras.inference.postprocess import non_max_suppression
from yolor_keras.models import decode_predictions


def detection_function(model, nms=COCO_EVAL_NMS):
    """A compiled images -> NMS detections function for ``model``.

    Args:
        model: anything with ``anchors``, ``strides`` and a call returning raw
            head outputs (`YOLORDetector`, `YOLORObjectDetector`).
        nms: keyword arguments of `non_max_suppression`.
    """
    anchors, strides = model.anchors, model.strides

    @tf.function(reduce_retracing=True)
    def detect(images):
        raw = model(images, training=False)
        decoded = decode_predictions([tf.cast(r, tf.float32) for r in raw], anchors, strides)
        return non_max_suppression(decoded, **nms)

    return detect


def evaluate_detector(model, dataset, info, nms=COCO_EVAL_NMS, verbose=True):
    """COCO mAP of ``model`` on an evaluation dataset, by the official protocol.

    Boxes are letterboxed in, mapped back to each image's original pixels and
    scored against the source's own annotations (conf 0.001, IoU 0.65, 300
    detections, multi-label NMS by default).

    Args:
        model: a `YOLORDetector` or `YOLORObjectDetector`.
        dataset: evaluation batches from `build_dataset(..., training=False)`.
        info: its `DatasetInfo`.
        nms: keyword arguments of `non_max_suppression`.
        verbose: show a progress bar.

    Returns:
        dict with ``"mAP"`` (@[.5:.95]), ``"mAP50"`` and the 12 COCO stats.
    """
    if info.training:
        raise ValueError("evaluate_detector needs evaluation batches (training=False).")
    evaluator = COCOEvaluator(info.source.to_coco_dict(), category_ids=_category_ids(info))
    detect = detection_function(model, nms)
    progress = tqdm(total=info.num_samples, desc="Evaluating", unit="img", disable=not verbose)
    for images, labels in dataset:
        detections = {key: value.numpy() for key, value in detect(images).items()}
        detections["boxes"] = letterbox_to_original(
            detections["boxes"],
            labels["scale"].numpy(),
            labels["pad"].numpy(),
            labels["original_size"].numpy(),
        )
        evaluator.process(labels["image_id"].numpy(), detections)
        progress.update(int(images.shape[0]))
    progress.close()
    return evaluator.evaluate()


def _category_ids(info):
    if info.category_ids is not None:
        return [int(c) for c in info.category_ids]
    return list(np.arange(info.num_classes))
