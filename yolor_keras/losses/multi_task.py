"""Losses of the multi-task heads: multi-label BCE and supervised contrastive.

Both return one value per sample, so that Keras (or a task's
`compute_loss`) can reduce them correctly under `tf.distribute`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolor_keras")
class MultiLabelBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on logits, averaged over labels: one value per image.

    Each of the C labels is an independent yes/no question ("is a circle in
    the image?"), as in multi-label image classification.

    Args:
        pos_weight: weight of the positive term of every label (PyTorch's
            ``pos_weight``); above 1 favours recall of rare labels.
        label_smoothing: targets become ``1 - eps / 2`` and ``eps / 2``.
        name: name of the loss.
        reduction: Keras reduction of the per-sample values.
        dtype: dtype of the computation; float32 unless given.

    Example:

    ```python
    loss = MultiLabelBinaryCrossentropy()
    per_image = loss.call(multi_hot, logits)  # (batch,)
    ```
    """

    def __init__(
        self,
        pos_weight=1.0,
        label_smoothing=0.0,
        name="multi_label_bce",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if pos_weight <= 0:
            raise ValueError(f"`pos_weight` must be positive, got {pos_weight}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")
        self.pos_weight = float(pos_weight)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, self.dtype)
        targets = ops.cast(y_true, self.dtype)
        if len(logits.shape) != 2 or tuple(targets.shape[-1:]) != tuple(logits.shape[-1:]):
            raise ValueError(
                f"{self.name}: expected targets and logits of shape (batch, num_labels); "
                f"got {tuple(targets.shape)} and {tuple(logits.shape)}."
            )
        eps = self.label_smoothing
        targets = targets * (1.0 - eps) + 0.5 * eps
        # softplus(-x) = -log(sigmoid(x)) and softplus(x) = -log(1 - sigmoid(x)),
        # both stable for large |x|.
        per_label = self.pos_weight * targets * ops.softplus(-logits) + (
            1.0 - targets
        ) * ops.softplus(logits)
        return ops.mean(per_label, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"pos_weight": self.pos_weight, "label_smoothing": self.label_smoothing})
        return config


@keras.saving.register_keras_serializable(package="yolor_keras")
class SupervisedContrastiveLoss(keras.losses.Loss):
    """Supervised contrastive loss (Khosla et al., 2020) with in-batch negatives.

    Embeddings are L2-normalised; with ``s_ij = z_i · z_j / temperature``,
    every sample i of the batch is an anchor whose positives P(i) are the
    other samples with its identity, and whose contrast set is every other
    sample::

        L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip) / sum_{a != i} exp(s_ia) )

    Samples with a negative identity (no label) and samples without a
    positive in the batch are not anchors (they still serve as negatives).
    The per-sample values are ``L_i * batch / num_anchors`` for anchors and
    0 otherwise, so that their **batch mean is the mean of L_i over the
    anchors**, whatever share of the batch has a positive (the same
    convention as `YOLORLoss`'s box term). Batches must be large enough to
    hold repeated identities; a batch without any anchor gives 0.

    Args:
        temperature: the softmax temperature tau (0.1).
        name: name of the loss.
        reduction: Keras reduction of the per-sample values.
        dtype: dtype of the computation; float32 unless given.

    Example:

    ```python
    loss = SupervisedContrastiveLoss(temperature=0.1)
    per_image = loss.call(identities, embeddings)  # (batch,)
    ```
    """

    def __init__(
        self,
        temperature=0.1,
        name="supervised_contrastive",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {temperature}.")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        embeddings = ops.cast(y_pred, self.dtype)
        if len(embeddings.shape) != 2:
            raise ValueError(
                f"{self.name}: embeddings must have shape (batch, dim); got "
                f"{tuple(embeddings.shape)}."
            )
        identities = ops.reshape(ops.cast(ops.round(ops.cast(y_true, "float32")), "int32"), (-1,))
        embeddings = embeddings / ops.maximum(
            ops.sqrt(ops.sum(ops.square(embeddings), axis=-1, keepdims=True)), 1e-12
        )
        batch = ops.shape(embeddings)[0]
        logits = ops.matmul(embeddings, ops.transpose(embeddings)) / self.temperature
        not_self = ops.logical_not(ops.cast(ops.eye(batch), "bool"))
        labelled = identities >= 0
        positive = ops.logical_and(
            ops.equal(identities[:, None], identities[None, :]),
            ops.logical_and(not_self, ops.logical_and(labelled[:, None], labelled[None, :])),
        )
        # log-softmax over the other samples; the max shift keeps exp finite.
        very_negative = ops.cast(-1e9, self.dtype)
        masked = ops.where(not_self, logits, very_negative)
        shift = ops.stop_gradient(ops.max(masked, axis=1, keepdims=True))
        log_denominator = ops.log(
            ops.sum(ops.where(not_self, ops.exp(masked - shift), 0.0), axis=1, keepdims=True)
        )
        log_probability = logits - shift - log_denominator

        positive_weight = ops.cast(positive, self.dtype)
        num_positives = ops.sum(positive_weight, axis=1)
        is_anchor = ops.cast(num_positives > 0, self.dtype)
        mean_log_probability = ops.sum(
            ops.where(positive, log_probability, 0.0), axis=1
        ) / ops.maximum(num_positives, 1.0)
        per_anchor = -mean_log_probability * is_anchor
        num_anchors = ops.maximum(ops.sum(is_anchor), 1.0)
        return per_anchor * ops.cast(batch, self.dtype) / num_anchors

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
