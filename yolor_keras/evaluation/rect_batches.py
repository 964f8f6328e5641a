"""Rect batches: the letterbox of the official evaluation.

The official `test.py` does not letterbox every image into an S x S square.
Its loader sorts the images by aspect ratio (height / width), cuts the sorted
list into batches, and gives each batch the smallest canvas that holds all
its images at long side S, plus half a stride of margin, rounded up to a
multiple of the model's largest stride:

    shape = [max aspect, 1]       if every image of the batch is landscape
            [1, 1 / min aspect]   if every image is portrait
            [1, 1]                otherwise                (height, width)
    canvas = ceil(shape * S / stride + pad) * stride       with pad = 0.5

So a 640 x 480 (w x h) image at S = 1280 with stride 64 runs on a
1344 x 1024 canvas, and a square one on 1344 x 1344. Each image is first
resized to long side S (the short side truncated, as the official loader
does) and then centred on its batch's canvas with grey 114 padding, the odd
pixel going right / bottom, by the project's one `letterbox`
(`yolor_keras.data.letterbox_ops`).

Boxes are mapped back with the exact per-axis scale of the resize and the
integer offsets at which the image was pasted.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from yolor_keras.data.image_decoding import read_image
from yolor_keras.data.letterbox_ops import centre_offsets
from yolor_keras.data.letterbox_ops import letterbox
from yolor_keras.data.pipeline import DatasetInfo

# The margin of the official evaluation canvas, in strides.
OFFICIAL_PAD = 0.5


def round_image_size(image_size, stride):
    """The image size rounded up to a multiple of the stride (as `test.py` does)."""
    image_size, stride = int(image_size), int(stride)
    if image_size <= 0 or stride <= 0:
        raise ValueError(f"image_size and stride must be positive; got {image_size} and {stride}.")
    return math.ceil(image_size / stride) * stride


def rect_batch_shapes(sizes, batch_size, image_size, stride, pad=OFFICIAL_PAD):
    """The aspect-ratio order of the images and the canvas of each batch.

    Args:
        sizes: `(N, 2)` (height, width) of each image.
        batch_size: images per batch.
        image_size: S, the long side of every resized image.
        stride: the model's largest stride (64 for the P6 family, 32 for
            the CSP family); canvases are multiples of it.
        pad: margin in strides (0.5 in the official evaluation).

    Returns:
        (order, shapes): `order` `(N,)` int64, the image indices sorted by
        aspect ratio, so that image `order[k]` is in batch `k // batch_size`;
        `shapes` `(num_batches, 2)` int64 (height, width) of each canvas.
    """
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if not len(sizes):
        raise ValueError("rect_batch_shapes needs at least one image.")
    if (sizes <= 0).any():
        raise ValueError(f"image sizes must be positive; got {sizes[(sizes <= 0).any(1)][0]}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    aspect = sizes[:, 0] / sizes[:, 1]
    # A stable sort, so that ties keep file order; the canvases depend only
    # on the sorted aspect values, which are the same for any tie order.
    order = np.argsort(aspect, kind="stable")
    aspect = aspect[order]
    num_batches = -(-len(sizes) // int(batch_size))
    fractions = np.ones((num_batches, 2), np.float64)
    for index in range(num_batches):
        batch = aspect[index * batch_size : (index + 1) * batch_size]
        smallest, largest = batch.min(), batch.max()
        if largest < 1:  # all landscape: full width, the tallest one's height
            fractions[index] = [largest, 1.0]
        elif smallest > 1:  # all portrait: full height, the widest one's width
            fractions[index] = [1.0, 1.0 / smallest]
    # Same operation order as the official formula, so float rounding agrees.
    shapes = np.ceil(fractions * image_size / stride + pad).astype(np.int64) * int(stride)
    return order.astype(np.int64), shapes


def resized_size(height, width, image_size):
    """Size of an image resized to long side S, as the official loader does.

    The ratio is S / long side; each side is multiplied by it and truncated
    (not rounded), and an image already at long side S is left as is.

    Returns:
        (new_height, new_width) ints, each at least 1.
    """
    ratio = image_size / max(height, width)
    if ratio == 1:
        return int(height), int(width)
    return max(int(height * ratio), 1), max(int(width * ratio), 1)


@dataclasses.dataclass
class RectPlan:
    """Where every image goes in the official evaluation, by input position.

    All arrays have one row per image, in the order of the `sizes` given to
    `plan_rect_batches` (not the sorted order).

    Attributes:
        order: image indices sorted by aspect ratio.
        batch: `(N,)` the batch index of each image.
        canvas: `(N, 2)` (height, width) of its batch's canvas.
        resized: `(N, 2)` (height, width) of the image on the canvas.
        offset: `(N, 2)` (top, left) of the image on the canvas.
        original: `(N, 2)` (height, width) of the original image.
        batch_shapes: `(num_batches, 2)` (height, width) of each canvas.
    """

    order: np.ndarray
    batch: np.ndarray
    canvas: np.ndarray
    resized: np.ndarray
    offset: np.ndarray
    original: np.ndarray
    batch_shapes: np.ndarray

    @property
    def scale(self):
        """`(N, 2)` (x, y) scale from original to canvas pixels."""
        return self.resized[:, ::-1] / self.original[:, ::-1]

    @property
    def pad(self):
        """`(N, 2)` (x, y) offset of the image on its canvas."""
        return self.offset[:, ::-1].astype(np.float64)


def plan_rect_batches(sizes, batch_size, image_size, stride, pad=OFFICIAL_PAD):
    """Computes the canvas, size and position of every image (see `RectPlan`).

    Args:
        sizes: `(N, 2)` (height, width) of each original image.
        batch_size, image_size, stride, pad: as in `rect_batch_shapes`.
    """
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    order, shapes = rect_batch_shapes(sizes, batch_size, image_size, stride, pad)
    batch = np.empty(len(sizes), np.int64)
    batch[order] = np.arange(len(sizes)) // int(batch_size)
    canvas = shapes[batch]
    resized = np.empty_like(sizes)
    offset = np.empty_like(sizes)
    for index, ((height, width), (canvas_height, canvas_width)) in enumerate(zip(sizes, canvas)):
        new_height, new_width = resized_size(int(height), int(width), image_size)
        if new_height > canvas_height or new_width > canvas_width:
            raise ValueError(
                f"image {index} resized to {new_height}x{new_width} does not fit its "
                f"{canvas_height}x{canvas_width} canvas; canvases come from rect_batch_shapes."
            )
        resized[index] = new_height, new_width
        offset[index] = centre_offsets(new_height, new_width, int(canvas_height), int(canvas_width))
    return RectPlan(order, batch, canvas, resized, offset, sizes, shapes)


def image_sizes(source):
    """Image ids and (height, width) of every image of a `DetectionSource`.

    A `RecordSet` knows them from indexing; other sources (tfds) give them
    through their COCO export, which reads each image header once.

    Returns:
        (ids `(N,)` int64, sizes `(N, 2)` int64).
    """
    samples = getattr(source, "samples", None)
    if samples is not None:
        ids = [sample.image_id for sample in samples]
        sizes = [(sample.height, sample.width) for sample in samples]
    else:
        images = source.to_coco_dict()["images"]
        ids = [image["id"] for image in images]
        sizes = [(image["height"], image["width"]) for image in images]
    ids = np.asarray(ids, np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(
            f"{_source_name(source)}: image ids are not unique; the evaluation "
            "needs one id per image."
        )
    return ids, np.asarray(sizes, np.int64).reshape(-1, 2)


def build_rect_batches(source, image_size, batch_size, stride, pad=OFFICIAL_PAD):
    """Evaluation batches of a source, letterboxed as the official `test.py` does.

    Args:
        source: a `DetectionSource` (see `yolor_keras.data.load_source`).
        image_size: S; rounded up to a multiple of `stride` as the official
            code does.
        batch_size: images per batch.
        stride: the model's largest stride (`max(model.strides)`).
        pad: canvas margin in strides (0.5 in the official evaluation).

    Returns:
        (dataset, info): `dataset` yields `(images, labels)` with images
        `(B, H, W, 3)` float32 in [0, 1], where (H, W) is the batch's canvas,
        and labels a dict of "image_id" `(B,)` int64, "original_size"
        `(B, 2)` int32 (height, width), "scale" and "pad" `(B, 2)` float32
        (x, y), with which `letterbox_to_original` maps boxes back. Batches
        come in the order they fill, each holding images of one canvas.
        `info` is a `DatasetInfo` (image_size is the rounded S).
    """
    image_size = round_image_size(image_size, stride)
    ids, sizes = image_sizes(source)
    plan = plan_rect_batches(sizes, batch_size, image_size, stride, pad)
    # One int32 row per image, looked up by image id inside the graph:
    # batch, canvas h/w, resized h/w, top, left, original h/w.
    rows = np.concatenate(
        [plan.batch[:, None], plan.canvas, plan.resized, plan.offset, plan.original], axis=1
    ).astype(np.int32)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids, tf.int64), tf.range(len(ids), dtype=tf.int64)
        ),
        default_value=-1,
    )
    rows = tf.constant(rows)

    def attach_plan(element):
        return element, tf.gather(rows, table.lookup(element["image_id"]))

    def decode(element, row):
        canvas_height, canvas_width = row[1], row[2]
        new_height, new_width = row[3], row[4]
        image = read_image(element["image"], element["is_path"])
        # The official test.py shrinks with INTER_AREA: antialias.
        image, scale, pad = letterbox(
            image,
            image_size,
            canvas_size=(canvas_height, canvas_width),
            resized_size=(new_height, new_width),
            antialias=True,
        )
        labels = {
            "image_id": element["image_id"],
            "original_size": tf.stack([row[7], row[8]]),
            "scale": scale,
            "pad": pad,
        }
        return image, labels

    def batch_window(key, window):
        del key
        decoded = window.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        if not source.fully_verified:
            # As in training: an image that fails to decode is skipped (and
            # logged), not fatal; its batch is one image shorter.
            decoded = decoded.ignore_errors(log_warning=True)
        return decoded.batch(batch_size)

    # Only the encoded records (paths or bytes) wait in open windows; pixels
    # are decoded once a batch is complete.
    dataset = source.encoded_dataset(shuffle=False).map(attach_plan)
    dataset = dataset.group_by_window(
        key_func=lambda element, row: tf.cast(row[0], tf.int64),
        reduce_func=batch_window,
        window_size=batch_size,
    )
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)
    info = DatasetInfo(
        class_names=source.class_names,
        category_ids=source.category_ids,
        num_samples=len(ids),
        num_batches=len(plan.batch_shapes),
        image_size=image_size,
        batch_size=batch_size,
        training=False,
        recipe=None,
        source=source,
    )
    return dataset, info


def _source_name(source):
    report = getattr(source, "report", None)
    return getattr(report, "name", None) or repr(source)
