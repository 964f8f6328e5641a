"""The classification and embedding scores against values worked out by hand."""

import math

import numpy as np
import pytest

from yolor_keras.evaluation.head_metrics import multilabel_average_precision
from yolor_keras.evaluation.head_metrics import multilabel_f1
from yolor_keras.evaluation.head_metrics import recall_at_1


def test_average_precision_by_hand():
    targets = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.4], [0.3, 0.3, 0.3], [0.1, 0.4, 0.2]])
    mean, per_label = multilabel_average_precision(targets, scores)
    # Label 0 ranks images 0 (hit), 1, 2 (hit), 3: AP = (1/1 + 2/3) / 2.
    assert per_label[0] == pytest.approx((1 + 2 / 3) / 2)
    # Label 1 has no positive image: left out.
    assert math.isnan(per_label[1])
    # Label 2's only positive (image 1) is ranked second: AP = 1/2.
    assert per_label[2] == pytest.approx(0.5)
    assert mean == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_perfect_ranking_scores_one():
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    assert multilabel_average_precision(targets, targets * 0.9 + 0.05)[0] == pytest.approx(1.0)


def test_micro_f1_by_hand():
    targets = np.array([[1, 0, 1], [0, 1, 0]])
    probabilities = np.array([[0.9, 0.6, 0.2], [0.1, 0.7, 0.4]])
    # TP = 2 ((0,0), (1,1)), FP = 1 ((0,1)), FN = 1 ((0,2)): F1 = 4 / 6.
    assert multilabel_f1(targets, probabilities) == pytest.approx(4 / 6)


def test_recall_at_1_by_hand():
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9], [-1.0, 0.0], [0.0, 2.0]])
    identities = np.array([1, 1, 2, 3, -1, 2])
    # Queries: 0 -> 1 (same), 1 -> 0 (same), 2 -> 5 (same, cosine 1), 5 -> 2 (same);
    # 3 has no partner and is no query; 4 has no identity and is ignored.
    assert recall_at_1(embeddings, identities) == pytest.approx(1.0)
    identities = np.array([1, 1, 2, 2, -1, 3])
    # Now 2's nearest is 5 (identity 3): a miss; 3 -> 2 (same). 3 of 4.
    assert recall_at_1(embeddings, identities) == pytest.approx(3 / 4)


def test_recall_without_queries_is_nan_and_shapes_are_checked():
    assert math.isnan(recall_at_1(np.eye(3), np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="one identity each"):
        recall_at_1(np.eye(3), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        multilabel_average_precision(np.zeros((2, 3)), np.zeros((3, 2)))
