"""`YOLORImageConverter`: the letterbox as a Keras preprocessing layer."""

import keras
import tensorflow as tf

from yolor_keras.data.letterbox_ops import PAD_VALUE
from yolor_keras.data.letterbox_ops import boxes_to_original
from yolor_keras.data.letterbox_ops import letterbox


@keras.saving.register_keras_serializable(package="yolor_keras")
class YOLORImageConverter(keras.layers.Layer):
    """Letterboxes images into the detector's S x S input, and maps boxes back.

    A preprocessing layer, like Keras' own `Resizing` or keras-hub's
    `ImageConverter`: it runs TensorFlow ops (resize and pad through
    `yolor_keras.data.letterbox_ops.letterbox`, the project's one letterbox), so
    it works in `tf.data` pipelines and inside exported TensorFlow graphs
    (SavedModel), not under the JAX or PyTorch backends' own tensors. It has
    no weights.

    Each image is scaled to long side S (aspect kept, r = min(S/h, S/w),
    sides rounded), centred, and padded with the official grey (114 / 255),
    the odd padding pixel going bottom / right. The pixels are rounded to
    integers before scaling to [0, 1], as the official uint8 pipeline has
    them.

    Args:
        image_size: S, the side of the square output.
        pad_value: grey level of the padding on the 0-255 scale.
        antialias: low-pass filter when shrinking. False (default) is the
            official inference resize (`cv2.INTER_LINEAR`); True is the
            official evaluation's (`cv2.INTER_AREA`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        images: `(batch, height, width, 3)` uint8, or float in [0, 255];
            one size per batch (letterbox images of different sizes in
            separate calls). A single `(height, width, 3)` image works too.

    Returns:
        `(letterboxed, scale, pad)`: `letterboxed` `(batch, S, S, 3)`
        float32 in [0, 1]; `scale` `(batch, 2)` float32 `(x, y)`, resized /
        original size; `pad` `(batch, 2)` float32 `(x, y)`, the left and top
        padding. An original pixel `p` lands at `p * scale + pad`.

    Example:

    ```python
    converter = YOLORImageConverter(640)
    inputs, scale, pad = converter(images)            # (B, 640, 640, 3)
    boxes = converter.boxes_to_original(detected_boxes, scale, pad, sizes)
    ```
    """

    def __init__(self, image_size, pad_value=PAD_VALUE, antialias=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(
                f"YOLORImageConverter: `image_size` must be a positive int; got {image_size!r}."
            )
        if not 0 <= pad_value <= 255:
            raise ValueError(
                f"YOLORImageConverter: `pad_value` must be in [0, 255]; got {pad_value!r}."
            )
        self.image_size = image_size
        self.pad_value = pad_value
        self.antialias = bool(antialias)
        # uint8 images must reach `call` as they are, not cast to the
        # layer's float dtype first.
        self._convert_input_args = False
        # NumPy batches are welcome, as in Keras' own preprocessing layers.
        self._allow_non_tensor_positional_args = True
        self.built = True

    def call(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(
                "YOLORImageConverter expects (batch, height, width, 3) or "
                f"(height, width, 3) images; got shape {images.shape}."
            )
        return letterbox(
            images, self.image_size, antialias=self.antialias, pad_value=self.pad_value
        )

    def boxes_to_original(self, boxes, scale, pad, original_size=None):
        """Maps xyxy boxes from the letterboxed input back to original pixels.

        Args:
            boxes: `(batch, N, 4)` (or `(N, 4)` for one image) in input pixels.
            scale: `(batch, 2)` (or `(2,)`), as returned by the call.
            pad: `(batch, 2)` (or `(2,)`), as returned by the call.
            original_size: optional `(batch, 2)` (or `(2,)`) `(height,
                width)`; boxes are clipped to it.

        Returns:
            float32 tensor shaped like `boxes`, in original pixels.
        """
        return boxes_to_original(boxes, scale, pad, original_size)

    def compute_output_shape(self, input_shape):
        leading = tuple(input_shape[:-3])
        side = self.image_size
        return leading + (side, side, 3), leading + (2,), leading + (2,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "pad_value": self.pad_value,
                "antialias": self.antialias,
            }
        )
        return config
