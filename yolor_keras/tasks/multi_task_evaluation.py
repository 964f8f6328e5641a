"""Scores of a `YOLORMultiTask` on evaluation batches, one metric family per head.

- detection: COCO mAP@.5 and mAP@.5:.95 by the official protocol (boxes
  mapped back to original pixels; `COCOEvaluator`);
- classification: mean average precision over labels, and micro F1 at a
  0.5 probability threshold;
- embedding: recall@1, the share of queries whose nearest neighbour (cosine,
  itself excluded) has the same identity.
"""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from yolor_keras.data.image_decoding import letterbox_to_original
from yolor_keras.evaluation import COCO_EVAL_NMS
from yolor_keras.evaluation import COCOEvaluator
from yolor_keras.layers.nms import non_max_suppression


def multilabel_average_precision(targets, scores):
    """Mean over labels of the average precision of ranking images by score.

    For one label, with images sorted by descending score,
    ``AP = (1 / P) * sum_k precision@k * [image k is positive]`` where P is
    the number of positives. Labels without a positive image are left out
    of the mean (their AP is undefined).

    Args:
        targets: ``(N, C)`` 0/1 array.
        scores: ``(N, C)`` scores (higher means more likely).

    Returns:
        (mean AP, list of per-label AP with NaN for labels left out).
    """
    targets = np.asarray(targets, np.float64)
    scores = np.asarray(scores, np.float64)
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(
            f"targets and scores must both be (N, C); got {targets.shape} and {scores.shape}."
        )
    per_label = []
    for label in range(targets.shape[1]):
        positives = targets[:, label].sum()
        if positives == 0:
            per_label.append(float("nan"))
            continue
        order = np.argsort(-scores[:, label], kind="stable")
        hits = targets[order, label]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        per_label.append(float((precision * hits).sum() / positives))
    valid = [value for value in per_label if not np.isnan(value)]
    return (float(np.mean(valid)) if valid else float("nan")), per_label


def multilabel_f1(targets, probabilities, threshold=0.5):
    """Micro-averaged F1 of thresholded multi-label predictions.

    ``F1 = 2 TP / (2 TP + FP + FN)`` over every (image, label) pair.
    """
    targets = np.asarray(targets) > 0.5
    predicted = np.asarray(probabilities) > threshold
    true_positives = np.sum(targets & predicted)
    errors = np.sum(targets ^ predicted)
    denominator = 2 * true_positives + errors
    return float(2 * true_positives / denominator) if denominator else 1.0


def recall_at_1(embeddings, identities):
    """Share of queries whose nearest other sample shares their identity.

    Samples with a negative identity are neither queries nor neighbours;
    a query needs at least one other sample of its identity.

    Args:
        embeddings: ``(N, D)`` vectors (compared by cosine similarity).
        identities: ``(N,)`` integer identities.

    Returns:
        recall@1 in [0, 1], or NaN when there is no valid query.
    """
    embeddings = np.asarray(embeddings, np.float64)
    identities = np.asarray(identities).reshape(-1)
    if embeddings.ndim != 2 or len(embeddings) != len(identities):
        raise ValueError(
            f"embeddings must be (N, D) with one identity each; got {embeddings.shape} "
            f"and {identities.shape}."
        )
    keep = identities >= 0
    embeddings, identities = embeddings[keep], identities[keep]
    norms = np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    unit = embeddings / norms
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    same = identities[:, None] == identities[None, :]
    np.fill_diagonal(same, False)
    queries = same.any(axis=1)
    if not queries.any():
        return float("nan")
    nearest = np.argmax(similarity, axis=1)
    return float(np.mean(identities[nearest][queries] == identities[queries]))


def evaluate_multi_task(model, dataset, info, nms=COCO_EVAL_NMS, verbose=True):
    """Scores every enabled head of ``model`` on evaluation batches.

    Args:
        model: a `YOLORMultiTask`.
        dataset: evaluation batches of `build_multi_task_dataset(...,
            training=False)`.
        info: its `MultiTaskDatasetInfo`.
        nms: keyword arguments of `non_max_suppression` (the official
            evaluation settings by default).
        verbose: show a progress bar.

    Returns:
        dict with, per enabled head: ``"mAP50"`` and ``"mAP"`` (detection),
        ``"label_mAP"`` and ``"label_F1"`` (classification), ``"recall@1"``
        (embedding).
    """
    if info.training:
        raise ValueError("evaluate_multi_task needs evaluation batches (training=False).")
    heads = model.heads

    @tf.function(reduce_retracing=True)
    def run(images):
        outputs = model(images, training=False)
        results = {}
        if "detection" in heads:
            raw = [tf.cast(level, tf.float32) for level in outputs["detection"]]
            results["detections"] = non_max_suppression(model.decode(raw), **nms)
        if "classification" in heads:
            results["probabilities"] = tf.sigmoid(tf.cast(outputs["classification"], tf.float32))
        if "embedding" in heads:
            results["embedding"] = tf.cast(outputs["embedding"], tf.float32)
        return results

    evaluator = None
    if "detection" in heads:
        category_ids = info.category_ids or list(range(info.num_classes))
        evaluator = COCOEvaluator(info.source.to_coco_dict(), category_ids=list(category_ids))
    label_targets, probabilities, identities, embeddings = [], [], [], []
    progress = tqdm(total=info.num_samples, desc="Evaluating", unit="img", disable=not verbose)
    for images, targets in dataset:
        results = run(images)
        if evaluator is not None:
            labels = targets["detection"]
            detections = {key: value.numpy() for key, value in results["detections"].items()}
            detections["boxes"] = letterbox_to_original(
                detections["boxes"],
                labels["scale"].numpy(),
                labels["pad"].numpy(),
                labels["original_size"].numpy(),
            )
            evaluator.process(labels["image_id"].numpy(), detections)
        if "probabilities" in results:
            probabilities.append(results["probabilities"].numpy())
            label_targets.append(targets["classification"].numpy())
        if "embedding" in results:
            embeddings.append(results["embedding"].numpy())
            identities.append(targets["embedding"].numpy())
        progress.update(int(images.shape[0]))
    progress.close()

    metrics = {}
    if evaluator is not None:
        coco = evaluator.evaluate()
        metrics.update(mAP50=coco["mAP50"], mAP=coco["mAP"])
    if probabilities:
        targets_array = np.concatenate(label_targets)
        probability_array = np.concatenate(probabilities)
        metrics["label_mAP"] = multilabel_average_precision(targets_array, probability_array)[0]
        metrics["label_F1"] = multilabel_f1(targets_array, probability_array)
    if embeddings:
        metrics["recall@1"] = recall_at_1(np.concatenate(embeddings), np.concatenate(identities))
    return metrics
