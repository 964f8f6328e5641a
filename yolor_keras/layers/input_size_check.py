"""`InputSizeCheck`: an identity layer that rejects image sizes the net cannot take."""

import keras


@keras.saving.register_keras_serializable(package="yolor_keras")
class InputSizeCheck(keras.layers.Layer):
    """Passes images through, raising a clear error on a bad height or width.

    A YOLOR network halves its feature maps once per stride-2 stage and later
    concatenates maps of neighbouring levels, so both sides of the image must
    be multiples of the largest stride. Without this check a wrong size fails
    deep inside the graph with a shape mismatch that does not say why.

    The check uses static shapes, which are known whenever the model is
    called eagerly or traced for a concrete input.

    Args:
        multiple: the required divisor of height and width (the largest stride).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def _check(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"Expected images of shape (batch, height, width, channels); got {tuple(shape)}."
            )
        for side, size in (("height", shape[1]), ("width", shape[2])):
            if size is not None and int(size) % self.multiple:
                next_valid = (int(size) // self.multiple + 1) * self.multiple
                raise ValueError(
                    f"Image {side} {int(size)} is not a multiple of {self.multiple}, the "
                    f"model's largest stride; pad or resize the images to a multiple of "
                    f"{self.multiple} (for example {next_valid})."
                )

    def call(self, inputs):
        self._check(inputs.shape)
        return inputs

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["multiple"] = self.multiple
        return config
