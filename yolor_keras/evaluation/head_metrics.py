"""Scores of the classification and embedding heads.

- classification: mean average precision over labels, and micro F1 at a
  0.5 probability threshold;
- embedding: recall@1, the share of queries whose nearest neighbour (cosine,
  itself excluded) has the same identity.

The detection head is scored with COCO mAP (`COCOEvaluator`); `evaluate`
(`yolor_keras.evaluation.evaluation_loop`) calls these for the other heads.
"""

import numpy as np


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
