"""`BatchNormalization`: Keras' layer, with one fused training op on TensorFlow.

In training, Keras' `BatchNormalization` computes the batch moments and the
normalisation as separate element-wise ops (mean, squared difference,
variance, rsqrt, multiply, add). Each is a pass over the full activation and
the backward pass differentiates every one of them. TensorFlow's
``FusedBatchNormV3`` does the same work in one op per direction (oneDNN
kernels on x86), saving only the input and the per-channel batch
statistics for the gradient.

This subclass uses that op when it computes exactly what Keras' own
training path computes, and Keras' path everywhere else (other backends,
inference, masks, synchronized or renormalised statistics, a channel axis
other than the last of a 4-D input). Weights, their names and order
(``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), the config and
``isinstance(layer, keras.layers.BatchNormalization)`` are all Keras'.

The moving statistics follow Keras' rule in both paths:
``moving = moving * momentum + batch * (1 - momentum)`` with the *biased*
batch variance (the one the normalisation divides by). The fused op reports
the unbiased variance, so it is rescaled by ``(n - 1) / n``.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolor_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' `BatchNormalization` with a fused TensorFlow training path.

    Args:
        fused: use TensorFlow's fused op in training where it applies (the
            default). False always takes Keras' own computation.
        **kwargs: `keras.layers.BatchNormalization` arguments.
    """

    def __init__(self, fused=True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def _fused_applies(self, inputs, training, mask):
        return (
            self.fused
            and training
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.renorm
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            # cuDNN's fused kernel refuses smaller epsilons.
            and self.epsilon >= 1.001e-5
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # Keras computes batch normalisation in float32 even under a
        # float16/bfloat16 policy; so does this path.
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else tf.ones((channels,))
        beta = ops.cast(self.beta, "float32") if self.center else tf.zeros((channels,))
        empty = tf.constant([], dtype="float32")
        y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=gamma,
            offset=beta,
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # The op's variance carries Bessel's correction; Keras' moving
        # variance averages the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
        variance = unbiased_variance * ((count - 1.0) / tf.maximum(count, 1.0))
        mean = tf.stop_gradient(mean)
        variance = tf.stop_gradient(variance)
        momentum = self.momentum
        self.moving_mean.assign(
            ops.cast(self.moving_mean, "float32") * momentum + mean * (1.0 - momentum)
        )
        self.moving_variance.assign(
            ops.cast(self.moving_variance, "float32") * momentum + variance * (1.0 - momentum)
        )
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["fused"] = self.fused
        return config
