"""Reading images, and decoding encoded samples into pixels for training and evaluation."""

import os

import numpy as np
import tensorflow as tf

from yolor_keras.data import exif
from yolor_keras.data import transforms
from yolor_keras.data.letterbox_ops import boxes_to_original
from yolor_keras.data.letterbox_ops import fit_size
from yolor_keras.data.letterbox_ops import letterbox


def read_image(source, is_path=None, name=None):
    """Reads one image as RGB uint8 pixels, turned as its EXIF orientation says.

    This is the project's one image reader. Grayscale, palette, RGBA and
    CMYK images come out as RGB; decoding goes through `exif.decode_image`,
    so a file gives the same pixels in training, evaluation, `detect` and
    the SavedModel.

    Two call forms share it:
    - In a graph (tf.data): `source` a tf.string tensor (a path or encoded
      bytes) and `is_path` a tf.bool saying which; returns a `(H, W, 3)`
      uint8 tensor.
    - Eagerly (`is_path` None): `source` a file path, encoded bytes, or a
      `(H, W, 3)` uint8 array (returned as is); returns a NumPy array, and
      bad input raises an error that names the image.

    Args:
        source: see above.
        is_path: tf.bool for the graph form; None for the eager form.
        name: how the eager form names the image in errors (defaults to the
            path, "encoded image" or "image array").

    Raises:
        FileNotFoundError: (eager) the path does not exist.
        ValueError: (eager) empty or undecodable data, or an array of the
            wrong shape or dtype; the message names the image.
        TypeError: (eager) a source of another type.
    """
    if is_path is not None:
        data = tf.cond(is_path, lambda: tf.io.read_file(source), lambda: source)
        return exif.decode_image(data)
    if isinstance(source, np.ndarray):
        name = name or "image array"
        if source.ndim != 3 or source.shape[-1] != 3 or source.dtype != np.uint8:
            raise ValueError(
                f"{name} must be a (height, width, 3) uint8 RGB array; got shape "
                f"{source.shape} and dtype {source.dtype}."
            )
        if source.shape[0] < 1 or source.shape[1] < 1:
            raise ValueError(f"{name} is empty: shape {source.shape}.")
        return source
    if isinstance(source, (bytes, bytearray)):
        name = name or "encoded image"
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{name}: no such image file.")
        with open(source, "rb") as file:
            data = file.read()
    else:
        raise TypeError(
            "An image must be a file path, encoded bytes or a uint8 array; got "
            f"{type(source).__name__}."
        )
    if not data:
        raise ValueError(f"{name}: the file is empty.")
    try:
        image = exif.decode_image_eagerly(data)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        reason = error.message.strip().splitlines()[0]
        raise ValueError(
            f"{name}: not a readable JPEG/PNG/GIF/BMP/WebP image ({reason})."
        ) from None
    return image.numpy()


_JPEG_SCALES = (1, 2, 4, 8)  # the DCT scalings libjpeg decodes directly


def read_image_for_size(image, is_path, long_side):
    """Decodes an image at the smallest JPEG scale that still covers a size.

    libjpeg can decode at 1/2, 1/4 or 1/8 scale straight from the DCT
    coefficients, which costs less than a full decode and yields fewer
    pixels to resample. The scale is the smallest whose long side is still
    at least `long_side`, so no detail the output can hold is lost. Other
    formats are decoded at full size. The EXIF orientation is applied, so
    pixels and size are those of the displayed image.

    Args:
        image: tf.string, a file path or encoded bytes.
        is_path: tf.bool, whether `image` is a path.
        long_side: the long side the image will be resampled to.

    Returns:
        (pixels (h, w, 3) uint8, original (2,) int32 height and width of
        the displayed image).
    """
    data = tf.cond(is_path, lambda: tf.io.read_file(image), lambda: image)

    def scaled_jpeg():
        stored = tf.image.extract_jpeg_shape(data)[:2]
        orientation = exif.exif_orientation(data)
        longest = tf.reduce_max(stored)
        # Number of halvings (at most 3) that keep the long side covered.
        index = tf.add_n([tf.cast(longest // r >= long_side, tf.int32) for r in (2, 4, 8)])
        branches = [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in _JPEG_SCALES]
        pixels = exif.apply_orientation(tf.switch_case(index, branches), orientation)
        original = tf.where(exif.swaps_axes(orientation), stored[::-1], stored)
        return pixels, original

    def any_format():
        decoded = exif.decode_image(data)
        return decoded, tf.shape(decoded)[:2]

    pixels, original = tf.cond(tf.io.is_jpeg(data), scaled_jpeg, any_format)
    return tf.ensure_shape(pixels, [None, None, 3]), original


def decode_for_training(element, image_size, resize=True):
    """Decodes a sample and sizes it for the mosaic: long side S.

    This is the official `load_image`: aspect kept, bilinear, no padding
    (mosaic places the image itself). With `resize=False` the pixels are
    not resized (only JPEG-downscaled, see `read_image_for_size`) and only
    the tile size is computed; the axis-aligned mosaic then resamples them
    once, straight into the output.

    Args:
        element: an encoded sample (see `DetectionSource`).
        image_size: S.
        resize: resize the pixels to the tile size now.

    Returns:
        dict with "image" (h, w, 3) uint8, "source_size" (2,) int32 (its h,
        w), "size" (2,) int32 (the tile's h, w, long side S), "boxes"
        (n, 4) float32 xyxy in tile pixels and "classes" (n,) int32.
    """
    image, original = read_image_for_size(element["image"], element["is_path"], image_size)
    new_height, new_width = fit_size(original[0], original[1], image_size)
    if resize:
        image = transforms.resize_image(image, new_height, new_width, antialias=False)
    scale = tf.cast(tf.stack([new_width, new_height, new_width, new_height]), tf.float32)
    return {
        "image": image,
        "source_size": tf.shape(image)[:2],
        "size": tf.stack([new_height, new_width]),
        "boxes": _dense(element["boxes"]) * scale,
        "classes": _dense(element["classes"]),
    }


def decode_for_evaluation(element, image_size):
    """Decodes a sample and letterboxes it into an S x S grey square.

    Args:
        element: an encoded sample (see `DetectionSource`).
        image_size: S.

    Returns:
        dict with "image" (S, S, 3) uint8, "boxes" (n, 4) float32 xyxy in
        letterboxed pixels, "classes" (n,) int32, "image_id" int64,
        "original_size" (2,) int32 (height, width), "scale" (2,) float32
        (x, y) and "pad" (2,) float32 (x, y): a letterboxed point p maps
        back to the original image as (p - pad) / scale.
    """
    image = read_image(element["image"], element["is_path"])
    shape = tf.shape(image)
    new_height, new_width = fit_size(shape[0], shape[1], image_size)
    # uint8 out: the in-memory cache holds a quarter of float32's bytes.
    letterboxed, scale, pad = letterbox(
        image, image_size, resized_size=(new_height, new_width), antialias=True, dtype="uint8"
    )
    # Boxes are stored normalised to the original size.
    boxes = _dense(element["boxes"]) * tf.cast(
        tf.stack([new_width, new_height, new_width, new_height]), tf.float32
    )
    return {
        "image": letterboxed,
        "boxes": boxes + tf.tile(pad, [2]),
        "classes": _dense(element["classes"]),
        "image_id": element["image_id"],
        "original_size": tf.shape(image)[:2],
        "scale": scale,
        "pad": pad,
    }


def letterbox_to_original(boxes, scale, pad, original_size=None):
    """Maps xyxy boxes from letterboxed pixels back to original pixels (NumPy).

    `yolor_keras.data.letterbox_ops.boxes_to_original` does the mapping; this
    takes and returns NumPy arrays, for evaluation loops.

    Args:
        boxes: (N, 4) boxes of one image, or (B, N, 4) of a batch.
        scale: (2,) or (B, 2) (x, y) letterbox scale, from the labels dict.
        pad: (2,) or (B, 2) (x, y) letterbox padding, from the labels dict.
        original_size: optional (2,) or (B, 2) (height, width) to clip to.

    Returns:
        NumPy float32 boxes of the same shape, in original pixels.
    """
    boxes = np.asarray(boxes, np.float32)
    return boxes_to_original(boxes, scale, pad, original_size).numpy()


def _dense(value):
    if isinstance(value, tf.RaggedTensor):
        return value.to_tensor()
    return value
