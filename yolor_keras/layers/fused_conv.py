"""`FusedConv2D`: the deploy form's conv, padded like PyTorch, with its bias and SiLU.

The deploy form of a model is almost only conv -> bias -> SiLU. On the
TensorFlow backend the grappler remapper fuses that chain into one oneDNN
convolution (``_FusedConv2D`` with ``BiasAdd`` and ``_MklSwish``) only when it
sees exactly ``Conv2D -> BiasAdd -> Mul(y, Sigmoid(y))``. Keras' own Conv2D +
Activation("silu") breaks the pattern twice: Conv2D adds its bias with
``AddV2``, and ``tf.nn.silu`` is a ``custom_gradient`` whose ``IdentityN``
sits between the convolution and the multiply, so the SiLU ran as a separate
op after every convolution. This layer emits the fusable form on TensorFlow
and the same computation with `keras.ops` on the other backends.
"""

import keras
from keras import ops

ACTIVATIONS = (None, "silu")


@keras.saving.register_keras_serializable(package="yolor_keras")
class FusedConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` with PyTorch's symmetric zero padding and a fused SiLU.

    Computes ``act(conv(pad(x), kernel, strides) + bias)`` where ``pad`` adds
    ``pad`` zero rows and columns on every side, as PyTorch's
    ``nn.Conv2d(padding=pad)`` does (Keras' "same" pads only bottom/right
    for stride 2), and ``act`` is SiLU (``y * sigmoid(y)``) or nothing. The
    weights are a Conv2D's (``kernel``, ``bias``), so folding, weight
    conversion and exports treat it as one.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: stride, an int.
        pad: zero padding on each side, an int (PyTorch's ``padding``).
        activation: ``"silu"`` or None.
        **kwargs: other `keras.layers.Conv2D` arguments (``use_bias``,
            initializers, ``name``, ``dtype``).

    Example:

    ```python
    x = keras.Input((64, 64, 32))
    y = FusedConv2D(64, 3, strides=2, pad=1, activation="silu")(x)  # (32, 32, 64)
    ```
    """

    def __init__(self, filters, kernel_size, strides=1, pad=0, activation=None, **kwargs):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"FusedConv2D activation must be one of {ACTIVATIONS}; got {activation!r}."
            )
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"FusedConv2D pad must be a non-negative int; got {pad!r}.")
        for key in ("padding", "data_format", "dilation_rate", "groups"):
            if kwargs.get(key) not in (None, "valid", "channels_last", 1, (1, 1)):
                raise ValueError(f"FusedConv2D does not support {key}={kwargs[key]!r}.")
            kwargs.pop(key, None)
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding="valid",
            data_format="channels_last",
            **kwargs,
        )
        self.pad = pad
        self.fused_activation = activation

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype) if self.use_bias else None
        if keras.backend.backend() == "tensorflow":
            return self._call_tensorflow(inputs, kernel, bias)
        return self._call_portable(inputs, kernel, bias)

    def _paddings(self):
        return [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]]

    def _call_portable(self, inputs, kernel, bias):
        x = ops.pad(inputs, self._paddings()) if self.pad else inputs
        y = ops.conv(x, kernel, strides=self.strides, padding="valid")
        if bias is not None:
            y = y + bias
        if self.fused_activation == "silu":
            y = y * ops.sigmoid(y)
        return y

    def _call_tensorflow(self, inputs, kernel, bias):
        import tensorflow as tf

        x = inputs
        padding = "VALID"
        if self.pad:
            if self.strides == (1, 1) and self.kernel_size[0] == 2 * self.pad + 1:
                # Exactly TF's SAME here; one op that every exporter knows.
                padding = "SAME"
            else:
                # A Pad before the conv: the remapper folds it into the same
                # oneDNN primitive (_PadWithFusedConv2D), and TFLite / ONNX
                # converters take it as it is.
                x = tf.pad(x, self._paddings())
        y = tf.nn.conv2d(x, kernel, strides=self.strides, padding=padding)
        if bias is not None:
            y = tf.nn.bias_add(y, bias)
        if self.fused_activation == "silu":
            # Not tf.nn.silu: its custom gradient's IdentityN blocks the fusion.
            y = y * tf.sigmoid(y)
        return y

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        size = self.kernel_size[0]

        def out(length):
            if length is None:
                return None
            return (length + 2 * self.pad - size) // self.strides[0] + 1

        return (batch, out(height), out(width), self.filters)

    def get_config(self):
        config = super().get_config()
        for key in ("padding", "data_format", "dilation_rate", "groups", "activation"):
            config.pop(key, None)
        config.update(pad=self.pad, activation=self.fused_activation)
        return config
