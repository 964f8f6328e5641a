"""The multi-task losses against values worked out by hand on tiny batches."""

import math

import keras
import numpy as np
import pytest

from yolor_keras.losses import MultiLabelBinaryCrossentropy
from yolor_keras.losses import SupervisedContrastiveLoss

# Three unit vectors: z0 . z1 = 0.6, z0 . z2 = 0, z1 . z2 = 0.8.
EMBEDDINGS = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], "float32")


def softplus(x):
    return math.log1p(math.exp(x))


def test_bce_is_the_mean_over_labels_of_each_binary_log_loss():
    logits = np.array([[0.0, 2.0], [-1.0, 3.0]], "float32")
    targets = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    expected = [
        (math.log(2.0) + softplus(2.0)) / 2,  # -log(sigmoid(0)), -log(1 - sigmoid(2))
        (softplus(-1.0) + softplus(-3.0)) / 2,  # -log(1 - sigmoid(-1)), -log(sigmoid(3))
    ]
    per_sample = MultiLabelBinaryCrossentropy().call(targets, logits)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)
    # Called as a Keras loss it reduces to the batch mean.
    assert float(MultiLabelBinaryCrossentropy()(targets, logits)) == pytest.approx(
        np.mean(expected), rel=1e-6
    )


def test_bce_positive_weight_and_label_smoothing():
    logits = np.array([[0.0, 2.0]], "float32")
    targets = np.array([[1.0, 0.0]], "float32")
    weighted = MultiLabelBinaryCrossentropy(pos_weight=3.0).call(targets, logits)
    assert float(weighted[0]) == pytest.approx((3 * math.log(2.0) + softplus(2.0)) / 2, rel=1e-6)
    # eps = 0.2: targets become 0.9 and 0.1.
    smoothed = MultiLabelBinaryCrossentropy(label_smoothing=0.2).call(targets, logits)
    first = 0.9 * math.log(2.0) + 0.1 * math.log(2.0)
    second = 0.1 * softplus(-2.0) + 0.9 * softplus(2.0)
    assert float(smoothed[0]) == pytest.approx((first + second) / 2, rel=1e-6)


def test_bce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="num_labels"):
        MultiLabelBinaryCrossentropy().call(np.zeros((2, 3)), np.zeros((2, 4)))


def test_contrastive_loss_by_hand_with_one_positive_each():
    # Identities 5, 5, 7 at temperature 0.5: scaled similarities s01 = 1.2,
    # s02 = 0, s12 = 1.6. Samples 0 and 1 are anchors (each the other's
    # positive); sample 2 has no positive and only serves as a negative.
    loss_0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0)))
    loss_1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
    loss = SupervisedContrastiveLoss(temperature=0.5)
    per_sample = loss.call(np.array([5, 5, 7]), EMBEDDINGS)
    # Scaled by batch / anchors = 3 / 2 so that the batch mean is the anchor mean.
    np.testing.assert_allclose(per_sample, [loss_0 * 1.5, loss_1 * 1.5, 0.0], rtol=1e-5)
    assert float(loss(np.array([5, 5, 7]), EMBEDDINGS)) == pytest.approx(
        (loss_0 + loss_1) / 2, rel=1e-5
    )


def test_contrastive_loss_by_hand_with_two_positives_and_unnormalised_inputs():
    # One identity: every other sample is a positive, averaged over |P| = 2.
    denominators = [
        math.exp(1.2) + math.exp(0.0),
        math.exp(1.2) + math.exp(1.6),
        math.exp(0.0) + math.exp(1.6),
    ]
    pairs = [(1.2, 0.0), (1.2, 1.6), (0.0, 1.6)]
    expected = [-0.5 * sum(s - math.log(d) for s in pair) for pair, d in zip(pairs, denominators)]
    scaled = EMBEDDINGS * np.array([[3.0], [0.5], [7.0]], "float32")  # normalised inside
    per_sample = SupervisedContrastiveLoss(temperature=0.5).call(np.array([3, 3, 3]), scaled)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5)


def test_unlabelled_samples_are_negatives_but_never_anchors():
    embeddings = np.concatenate([EMBEDDINGS, [[0.8, -0.6]]]).astype("float32")
    per_sample = SupervisedContrastiveLoss(temperature=1.0).call(
        np.array([1, 1, -1, -1]), embeddings
    )
    # Anchor 0: positive 1 (s = 0.6) against 1, 2 (s = 0) and 3 (s = 0.8).
    loss_0 = -(0.6 - math.log(math.exp(0.6) + 1.0 + math.exp(0.8)))
    # Anchor 1: positive 0 (0.6) against 0, 2 (0.8) and 3 (0.48 - 0.48 = 0).
    loss_1 = -(0.6 - math.log(math.exp(0.6) + math.exp(0.8) + 1.0))
    np.testing.assert_allclose(per_sample, [loss_0 * 2, loss_1 * 2, 0.0, 0.0], rtol=1e-5)


def test_batch_without_any_positive_pair_gives_zero():
    per_sample = SupervisedContrastiveLoss().call(np.array([1, 2, 3]), EMBEDDINGS)
    np.testing.assert_array_equal(per_sample, np.zeros(3))


def test_contrastive_gradient_pulls_positives_together():
    import tensorflow as tf

    embeddings = tf.Variable(EMBEDDINGS)
    with tf.GradientTape() as tape:
        value = SupervisedContrastiveLoss(temperature=0.5)(np.array([5, 5, 7]), embeddings)
    gradient = tape.gradient(value, embeddings).numpy()
    # A descent step moves z0 towards its positive z1 (the dot product grows).
    moved = EMBEDDINGS - 0.1 * gradient
    assert moved[0] @ EMBEDDINGS[1] > EMBEDDINGS[0] @ EMBEDDINGS[1]


def test_losses_round_trip_through_their_config():
    for loss in (
        MultiLabelBinaryCrossentropy(pos_weight=2.0, label_smoothing=0.1),
        SupervisedContrastiveLoss(temperature=0.2),
    ):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: SupervisedContrastiveLoss(temperature=0.0), "temperature"),
        (lambda: MultiLabelBinaryCrossentropy(pos_weight=-1.0), "pos_weight"),
        (lambda: MultiLabelBinaryCrossentropy(label_smoothing=1.0), "label_smoothing"),
    ],
)
def test_bad_settings_are_refused(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
