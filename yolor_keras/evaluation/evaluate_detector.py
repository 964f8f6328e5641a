"""Runs a detector over evaluation batches and scores it with COCO mAP."""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data.image_decoding import letterbox_to_original
from yolor_keras.data.report import evaluation_coverage
from yolor_keras.evaluation.coco_evaluator import COCOEvaluator
from yolor_keras.evaluation.ground_truth import ground_truth
from yolor_keras.evaluation.protocol import COCO_EVAL_NMS
from yolor_keras.evaluation.protocol import PROTOCOLS
from yolor_keras.evaluation.protocol import default_image_size
from yolor_keras.evaluation.rect_batches import build_rect_batches
from yolor_keras.evaluation.rect_batches import round_image_size
from yolor_keras.layers.nms import non_max_suppression
from yolor_keras.models import decode_predictions


def detection_function(model, nms=COCO_EVAL_NMS):
    """A compiled images -> NMS detections function for ``model``.

    Args:
        model: anything with ``anchors``, ``strides`` and a call returning raw
            head outputs (`YOLORObjectDetector`, `YOLORObjectDetector`).
        nms: keyword arguments of `non_max_suppression`.
    """
    anchors, strides = model.anchors, model.strides

    # Rect batches come in several canvas shapes and the last batch is
    # smaller: one trace for any batch, height and width instead of one per
    # shape (each costs seconds to tens of seconds for a full-size model).
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def detect(images):
        raw = model(images, training=False)
        decoded = decode_predictions([tf.cast(r, tf.float32) for r in raw], anchors, strides)
        return non_max_suppression(decoded, **nms)

    return detect


def evaluation_batches(
    source, model, image_size=None, batch_size=8, protocol="official", verbose=True
):
    """Evaluation batches of a dataset for ``model``, by either protocol.

    Args:
        source: anything `yolor_keras.data.load_source` accepts, already
            opened (a `DetectionSource`).
        model: the detector; its largest stride sets the canvas rounding and
            its family the default size.
        image_size: S; by default 1280 for the P6 family (largest stride 64)
            and 640 for the CSP family, the sizes of the official results.
        batch_size: images per batch.
        protocol: "official": rect batches sorted by aspect ratio, canvases
            of long side S plus half a stride, rounded up to the stride, as
            the official `test.py`; "square": every image letterboxed into
            S x S (faster to set up, same as the training-time evaluation).

    Returns:
        (dataset, info), as `yolor_keras.data.build_dataset` returns them.
    """
    from yolor_keras.data import build_dataset

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}.")
    stride = int(max(model.strides))
    if image_size is None:
        image_size = default_image_size(model)
    rounded = round_image_size(image_size, stride)
    if rounded != image_size and verbose:
        print(
            f"Image size {image_size} is not a multiple of the largest stride {stride}; "
            f"using {rounded}."
        )
    fixed = getattr(model, "image_size", None)
    if protocol == "official" and fixed is not None:
        raise ValueError(
            f"The model was built for a fixed input size {fixed}, but the official "
            "protocol feeds each batch at its own canvas size; use protocol='square' "
            "or a model built with image_size=None."
        )
    if protocol == "official":
        return build_rect_batches(source, rounded, batch_size, stride)
    return build_dataset(
        source, image_size=rounded, batch_size=batch_size, training=False, verbose=verbose
    )


def evaluate_detector(
    model,
    dataset,
    info,
    nms=COCO_EVAL_NMS,
    verbose=True,
    annotations=None,
    results_path=None,
):
    """COCO mAP of ``model`` on evaluation batches, scored as the official `test.py`.

    Boxes are mapped back from the batch's letterbox to each image's original
    pixels and scored against the dataset's annotation file when it was read
    from one (crowd regions ignored, annotated areas), otherwise against its
    records; conf 0.001, IoU 0.65, 300 detections, multi-label NMS by
    default. Only the images in the batches are scored.

    Args:
        model: a `YOLORObjectDetector` or `YOLORObjectDetector`.
        dataset: evaluation batches: `build_dataset(..., training=False)`
            (square) or `evaluation_batches` (either protocol).
        info: its `DatasetInfo`.
        nms: keyword arguments of `non_max_suppression`.
        verbose: show a progress bar.
        annotations: the COCO ground truth (path or dict) to score against;
            by default `ground_truth(info.source)`.
        results_path: also write the detections there as a COCO results
            JSON (the format of the official `--save-json`).

    Returns:
        dict with ``"mAP"`` (@[.5:.95]), ``"mAP50"`` and the 12 COCO stats.
    """
    if info.training:
        raise ValueError("evaluate_detector needs evaluation batches (training=False).")
    if annotations is None:
        annotations = ground_truth(info.source)
    evaluator = COCOEvaluator(annotations, category_ids=_category_ids(info))
    detect = detection_function(model, nms)
    progress = tqdm(total=info.num_samples, desc="Evaluating", unit="img", disable=not verbose)
    evaluated = 0
    for images, labels in dataset:
        detections = {key: np.asarray(value) for key, value in detect(images).items()}
        detections["boxes"] = letterbox_to_original(
            detections["boxes"],
            np.asarray(labels["scale"]),
            np.asarray(labels["pad"]),
            np.asarray(labels["original_size"]),
        )
        evaluator.process(np.asarray(labels["image_id"]), detections)
        progress.update(int(images.shape[0]))
        evaluated += int(images.shape[0])
    progress.close()
    metrics = evaluator.evaluate()
    # Images dropped on the way (index time or undecodable) are reported.
    metrics.update(evaluation_coverage(info.source, evaluated))
    if results_path is not None:
        evaluator.save_results(results_path)
    return metrics


def _category_ids(info):
    if info.category_ids is not None:
        return [int(c) for c in info.category_ids]
    return list(np.arange(info.num_classes))
