"""The one evaluation loop: `task.detect` over evaluation batches, every head scored.

- detection: COCO mAP@[.5:.95], mAP@.5 and the 12 COCO stats, boxes mapped
  back from each batch's letterbox to the image's own pixels and scored as
  the official `test.py` (`COCOEvaluator`), by either protocol of
  `evaluation_batches`;
- classification: label mAP and micro F1 (`head_metrics`);
- embedding: recall@1 (`head_metrics`).
"""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data.image_decoding import letterbox_to_original
from yolor_keras.data.report import evaluation_coverage
from yolor_keras.evaluation.coco_evaluator import COCOEvaluator
from yolor_keras.evaluation.ground_truth import ground_truth
from yolor_keras.evaluation.head_metrics import multilabel_average_precision
from yolor_keras.evaluation.head_metrics import multilabel_f1
from yolor_keras.evaluation.head_metrics import recall_at_1
from yolor_keras.evaluation.protocol import COCO_EVAL_NMS
from yolor_keras.evaluation.protocol import PROTOCOLS
from yolor_keras.evaluation.protocol import default_image_size
from yolor_keras.evaluation.rect_batches import build_rect_batches
from yolor_keras.evaluation.rect_batches import round_image_size
from yolor_keras.layers.nms import NonMaxSuppression
from yolor_keras.tasks.yolor_object_detector import EMBEDDING_OUTPUT
from yolor_keras.tasks.yolor_object_detector import LABEL_OUTPUT


def evaluation_decoder():
    """The NMS of the official mAP runs (`COCO_EVAL_NMS`) as a prediction decoder."""
    return NonMaxSuppression(**COCO_EVAL_NMS)


def detection_function(task, prediction_decoder=None):
    """``task.detect`` compiled once for any batch size and canvas shape.

    Rect batches come in several canvas shapes and the last batch is
    smaller: one trace serves them all instead of one per shape (each costs
    seconds to tens of seconds for a full-size model).

    Args:
        task: a `YOLORObjectDetector`.
        prediction_decoder: the `NonMaxSuppression` to end detection with;
            `evaluation_decoder()` (the official evaluation settings) by
            default.

    Returns:
        A function images ``(B, H, W, 3)`` float32 -> the dict of
        ``task.detect``.
    """
    _check_task(task)
    decoder = evaluation_decoder() if prediction_decoder is None else prediction_decoder

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def detect(images):
        return task.detect(images, prediction_decoder=decoder)

    return detect


def _check_task(task):
    missing = [name for name in ("detect", "head_names", "strides") if not hasattr(task, name)]
    if missing:
        raise ValueError(
            f"{getattr(task, 'name', type(task).__name__)!r} lacks {missing}: evaluation runs "
            "`YOLORObjectDetector.detect`; build the model with `YOLORObjectDetector`."
        )


def evaluation_batches(
    source, model, image_size=None, batch_size=8, protocol="official", verbose=True
):
    """Evaluation batches of a dataset for ``model``, by either protocol.

    Args:
        source: anything `yolor_keras.data.load_source` accepts, already
            opened (a `DetectionSource`).
        model: the task; its largest stride sets the canvas rounding and
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


def _head_targets(labels, head, heads):
    """The targets of one head in a batch's labels.

    Detection-only batches hold the detection labels themselves; batches
    with extra targets (`build_dataset(..., extra_targets=...)`) key them by
    head.
    """
    if isinstance(labels, dict) and "detection" in labels and isinstance(labels["detection"], dict):
        keyed = labels
    elif head == "detection":
        return labels
    else:
        keyed = {}
    if head not in keyed:
        raise ValueError(
            f"The task has a {head} head (heads {list(heads)}), but the evaluation batches "
            f"carry no {head!r} targets (they hold {sorted(keyed or labels)}); build them "
            f"with build_dataset(..., extra_targets=...) for that head."
        )
    return keyed[head]


def evaluate(
    task,
    dataset,
    info,
    prediction_decoder=None,
    verbose=True,
    annotations=None,
    results_path=None,
):
    """Scores every head of ``task`` on evaluation batches.

    The batches go through ``task.detect`` (compiled once for any shape).
    Detection boxes are mapped back from the batch's letterbox to each
    image's original pixels and scored as the official `test.py`, against
    the dataset's annotation file when it was read from one (crowd regions
    ignored, annotated areas), otherwise against its records; the NMS is
    the official evaluation's (conf 0.001, IoU 0.65, 300 detections,
    multi-label) unless ``prediction_decoder`` says otherwise. Only the
    images in the batches are scored.

    Args:
        task: a `YOLORObjectDetector` (any heads).
        dataset: evaluation batches: `build_dataset(..., training=False)`
            (square; with ``extra_targets`` for the classification and
            embedding heads) or `evaluation_batches` (either protocol).
        info: its `DatasetInfo`.
        prediction_decoder: a `NonMaxSuppression` for the detection head;
            `evaluation_decoder()` by default.
        verbose: show a progress bar.
        annotations: the COCO ground truth (path or dict) to score detection
            against; by default `ground_truth(info.source)`.
        results_path: also write the detections there as a COCO results
            JSON (the format of the official `--save-json`).

    Returns:
        dict with, per head of the task: ``"mAP"`` (@[.5:.95]), ``"mAP50"``,
        the 12 COCO stats (`COCO_STAT_NAMES`), ``"images_evaluated"`` and
        ``"images_in_split"`` (detection); ``"label_mAP"`` and
        ``"label_F1"`` (classification); ``"recall@1"`` (embedding).
    """
    if info.training:
        raise ValueError("evaluate needs evaluation batches (training=False).")
    detect = detection_function(task, prediction_decoder)
    heads = tuple(task.head_names)
    if results_path is not None and "detection" not in heads:
        raise ValueError(
            f"results_path: the task has no detection head (heads {list(heads)}) to write "
            "COCO results of."
        )
    evaluator = None
    if "detection" in heads:
        if annotations is None:
            annotations = ground_truth(info.source)
        evaluator = COCOEvaluator(annotations, category_ids=_category_ids(info))
    label_targets, probabilities, identities, embeddings = [], [], [], []
    progress = tqdm(total=info.num_samples, desc="Evaluating", unit="img", disable=not verbose)
    evaluated = 0
    for images, labels in dataset:
        # Targets first: a head without any fails before the network runs.
        targets = {head: _head_targets(labels, head, heads) for head in heads}
        outputs = {key: np.asarray(value) for key, value in detect(images).items()}
        if evaluator is not None:
            boxes = letterbox_to_original(
                outputs["boxes"],
                np.asarray(targets["detection"]["scale"]),
                np.asarray(targets["detection"]["pad"]),
                np.asarray(targets["detection"]["original_size"]),
            )
            detections = {
                "boxes": boxes,
                "scores": outputs["scores"],
                "classes": outputs["classes"],
                "num_detections": outputs["num_detections"],
            }
            evaluator.process(np.asarray(targets["detection"]["image_id"]), detections)
        if "classification" in heads:
            probabilities.append(outputs[LABEL_OUTPUT])
            label_targets.append(np.asarray(targets["classification"]))
        if "embedding" in heads:
            embeddings.append(outputs[EMBEDDING_OUTPUT])
            identities.append(np.asarray(targets["embedding"]))
        progress.update(int(images.shape[0]))
        evaluated += int(images.shape[0])
    progress.close()

    metrics = {}
    if evaluator is not None:
        metrics.update(evaluator.evaluate())
        # Images dropped on the way (index time or undecodable) are reported.
        metrics.update(evaluation_coverage(info.source, evaluated))
        if results_path is not None:
            evaluator.save_results(results_path)
    if probabilities:
        targets_array = np.concatenate(label_targets)
        probability_array = np.concatenate(probabilities)
        metrics["label_mAP"] = multilabel_average_precision(targets_array, probability_array)[0]
        metrics["label_F1"] = multilabel_f1(targets_array, probability_array)
    if embeddings:
        metrics["recall@1"] = recall_at_1(np.concatenate(embeddings), np.concatenate(identities))
    return metrics


def _category_ids(info):
    if info.category_ids is not None:
        return [int(c) for c in info.category_ids]
    return list(np.arange(info.num_classes))
