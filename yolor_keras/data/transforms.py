"""Deterministic geometric and photometric transforms, in TensorFlow.

Each function applies an already-chosen transform: the random parameters
are drawn once elsewhere (`augment.py`) and then applied to the image and
the boxes alike, so that the two cannot disagree.

Coordinates are continuous pixel coordinates: pixel (i, j) covers
[j, j+1] x [i, i+1], so a box (x1, y1, x2, y2) covers exactly the pixels it
was drawn on. Boxes are xyxy in pixels throughout.
"""

import math

import tensorflow as tf

from yolor_keras.data.letterbox_ops import PAD_VALUE

GREY = PAD_VALUE  # the official padding value, on the 0-255 scale (one constant)


def paste_tile(image, height, width, offset_x, offset_y, region):
    """Crops the part of an image that falls in a canvas region, padded grey.

    The image's top-left corner sits at (offset_x, offset_y) on a larger
    canvas; the result is the canvas region [x0, x1) x [y0, y1), holding the
    visible part of the image and grey elsewhere.

    Args:
        image: (H, W, 3) uint8; only its top-left `height` x `width` is valid.
        height: valid image height (int32 scalar).
        width: valid image width (int32 scalar).
        offset_x: canvas x of the image's left edge (may be negative).
        offset_y: canvas y of the image's top edge (may be negative).
        region: (x0, y0, x1, y1) int32 scalars, the canvas region to return.

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    x0, y0, x1, y1 = region
    visible_x0 = tf.clip_by_value(offset_x, x0, x1)
    visible_x1 = tf.clip_by_value(offset_x + width, visible_x0, x1)
    visible_y0 = tf.clip_by_value(offset_y, y0, y1)
    visible_y1 = tf.clip_by_value(offset_y + height, visible_y0, y1)
    crop = image[
        visible_y0 - offset_y : visible_y1 - offset_y,
        visible_x0 - offset_x : visible_x1 - offset_x,
    ]
    paddings = [
        [visible_y0 - y0, y1 - visible_y1],
        [visible_x0 - x0, x1 - visible_x1],
        [0, 0],
    ]
    return tf.pad(crop, paddings, constant_values=GREY)


def mosaic_offsets(sizes, center):
    """Canvas positions of the 4 mosaic tiles, as in the official mosaic.

    Image 0 ends at the centre from the top-left, image 1 starts there
    towards the top-right, image 2 towards the bottom-left and image 3
    towards the bottom-right.

    Args:
        sizes: (4, 2) int32 (height, width) of each tile.
        center: (2,) int32 (xc, yc), the point where the 4 tiles meet.

    Returns:
        (4, 2) int32 (x, y) of each tile's top-left corner on the canvas.
    """
    xc, yc = center[0], center[1]
    heights, widths = sizes[:, 0], sizes[:, 1]
    offsets_x = tf.stack([xc - widths[0], xc, xc - widths[2], xc])
    offsets_y = tf.stack([yc - heights[0], yc - heights[1], yc, yc])
    return tf.stack([offsets_x, offsets_y], axis=-1)


def mosaic_regions(center, image_size):
    """The 4 canvas quadrants (x0, y0, x1, y1) of a (2S, 2S) mosaic canvas."""
    side = 2 * image_size
    xc, yc = center[0], center[1]
    return [(0, 0, xc, yc), (xc, 0, side, yc), (0, yc, xc, side), (xc, yc, side, side)]


def compose_canvas(images, sizes, offsets, regions):
    """Pastes tiles into their canvas regions (grey elsewhere) and joins them.

    Args:
        images: (T, H, W, 3) uint8, each valid in its top-left `sizes[i]`.
        sizes: (T, 2) int32 (height, width) of each tile.
        offsets: (T, 2) int32 (x, y) canvas corner of each tile.
        regions: T canvas rectangles (x0, y0, x1, y1): 4 quadrants in
            reading order for a mosaic, or one for a letterbox.

    Returns:
        The canvas, (y1 - y0, x1 - x0, 3) of the regions' union, uint8.
    """
    tiles = [
        paste_tile(images[i], sizes[i, 0], sizes[i, 1], offsets[i, 0], offsets[i, 1], region)
        for i, region in enumerate(regions)
    ]
    if len(tiles) == 1:
        return tiles[0]
    return tf.concat([tf.concat(tiles[:2], axis=1), tf.concat(tiles[2:], axis=1)], axis=0)


def resize_image(image, new_height, new_width, antialias):
    """Resizes a uint8 image bilinearly; a no-op when the size is unchanged.

    Args:
        image: (H, W, 3) uint8.
        new_height: target height (int32 scalar).
        new_width: target width (int32 scalar).
        antialias: low-pass when shrinking (like cv2.INTER_AREA, used for
            evaluation); without it this is cv2.INTER_LINEAR (training).

    Returns:
        (new_height, new_width, 3) uint8.
    """
    shape = tf.shape(image)

    def resize():
        resized = tf.image.resize(image, tf.stack([new_height, new_width]), antialias=antialias)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    unchanged = tf.logical_and(tf.equal(shape[0], new_height), tf.equal(shape[1], new_width))
    return tf.cond(unchanged, lambda: image, resize)


def translation(dx, dy):
    """3x3 matrix of a translation by (dx, dy)."""
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack(
        [
            tf.stack([one, zero, dx]),
            tf.stack([zero, one, dy]),
            tf.stack([zero, zero, one]),
        ]
    )


def perspective_matrix(params, canvas_height, canvas_width, output_size):
    """The official random-perspective matrix M = T @ Sh @ R @ P @ C.

    C moves the canvas centre to the origin, P adds perspective, R rotates
    (counter-clockwise on screen for positive angles, as cv2) and scales,
    Sh shears and T moves the origin to a point near the output centre.

    Args:
        params: dict of float32 scalars: "angle" (degrees), "scale",
            "shear_x", "shear_y" (degrees), "perspective_x",
            "perspective_y", "translate_x", "translate_y" (fractions of
            the output size; 0.5 is the centre).
        canvas_height: input canvas height (float32 scalar).
        canvas_width: input canvas width (float32 scalar).
        output_size: output side length S (the output is S x S).

    Returns:
        (3, 3) float32, mapping input to output coordinates.
    """
    zero, one = tf.constant(0.0), tf.constant(1.0)
    center = translation(-canvas_width / 2, -canvas_height / 2)
    perspective = tf.stack(
        [
            tf.stack([one, zero, zero]),
            tf.stack([zero, one, zero]),
            tf.stack([params["perspective_x"], params["perspective_y"], one]),
        ]
    )
    radians = params["angle"] * (math.pi / 180)
    alpha = params["scale"] * tf.cos(radians)
    beta = params["scale"] * tf.sin(radians)
    rotation = tf.stack(
        [
            tf.stack([alpha, beta, zero]),
            tf.stack([-beta, alpha, zero]),
            tf.stack([zero, zero, one]),
        ]
    )
    shear = tf.stack(
        [
            tf.stack([one, tf.tan(params["shear_x"] * (math.pi / 180)), zero]),
            tf.stack([tf.tan(params["shear_y"] * (math.pi / 180)), one, zero]),
            tf.stack([zero, zero, one]),
        ]
    )
    move = translation(params["translate_x"] * output_size, params["translate_y"] * output_size)
    return move @ shear @ rotation @ perspective @ center


def warp_image(image, matrix, output_size):
    """Resamples an image through a 3x3 matrix in one bilinear pass.

    Args:
        image: (H, W, 3) uint8.
        matrix: (3, 3) float32 mapping input to output coordinates.
        output_size: S; the output is S x S, grey outside the input.

    Returns:
        (S, S, 3) uint8.
    """
    # ImageProjectiveTransformV3 wants the output->input map on pixel
    # indices; shifting by half a pixel on both sides makes it act on the
    # continuous coordinates the boxes use.
    to_index = translation(tf.constant(-0.5), tf.constant(-0.5))
    from_index = translation(tf.constant(0.5), tf.constant(0.5))
    inverse = to_index @ tf.linalg.inv(matrix) @ from_index
    inverse = inverse / inverse[2, 2]
    transform = tf.reshape(inverse, [9])[:8]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.constant([output_size, output_size], tf.int32),
        fill_value=tf.constant(GREY, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return warped[0]


def transform_boxes(boxes, matrix, output_size):
    """Maps boxes through a 3x3 matrix as the official code does.

    The 4 corners of each box are transformed; the new box is their
    bounding box, clipped to the S x S output.

    Args:
        boxes: (n, 4) float32 xyxy.
        matrix: (3, 3) float32 mapping input to output coordinates.
        output_size: S.

    Returns:
        (n, 4) float32 xyxy.
    """
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    corners_x = tf.stack([x1, x2, x1, x2], axis=-1)
    corners_y = tf.stack([y1, y2, y2, y1], axis=-1)
    points = tf.stack([corners_x, corners_y, tf.ones_like(corners_x)], axis=-1)
    mapped = tf.einsum("ncj,ij->nci", points, matrix)
    xs = mapped[..., 0] / mapped[..., 2]
    ys = mapped[..., 1] / mapped[..., 2]
    new_boxes = tf.stack(
        [
            tf.reduce_min(xs, axis=-1),
            tf.reduce_min(ys, axis=-1),
            tf.reduce_max(xs, axis=-1),
            tf.reduce_max(ys, axis=-1),
        ],
        axis=-1,
    )
    return tf.clip_by_value(new_boxes, 0.0, float(output_size))


def box_candidates(before, after, wh_thr=2.0, ar_thr=20.0, area_thr=0.1):
    """The official rule for keeping a box after a geometric transform.

    A box survives when it is wider and taller than `wh_thr` pixels, kept
    more than `area_thr` of its (scale-adjusted) area, and its aspect ratio
    stays below `ar_thr`.

    Args:
        before: (n, 4) boxes before the transform, multiplied by its scale.
        after: (n, 4) boxes after the transform (and clipping).
        wh_thr: minimum width and height in pixels.
        ar_thr: maximum aspect ratio (either way).
        area_thr: minimum ratio of the new area to the old.

    Returns:
        (n,) bool.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = tf.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (
        (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (aspect < ar_thr)
    )


def adjust_hsv(image, gains):
    """Multiplies hue, saturation and value by gains, as the official code.

    The hue (an angle in [0, 1) turns) is multiplied and wraps around;
    saturation and value saturate at 1. The conversions are written out
    (they match `tf.image.rgb_to_hsv` / `hsv_to_rgb` to 1e-6) so that XLA
    can fuse the whole function into one pass over the pixels.

    Args:
        image: (..., 3) float32 RGB in [0, 1].
        gains: (3,) float32 gains for hue, saturation, value.

    Returns:
        (..., 3) float32 RGB in [0, 1].
    """
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    inverse_chroma = 1.0 / tf.maximum(chroma, 1e-12)
    hue = tf.where(
        tf.equal(value, red),
        (green - blue) * inverse_chroma,
        tf.where(
            tf.equal(value, green),
            2.0 + (blue - red) * inverse_chroma,
            4.0 + (red - green) * inverse_chroma,
        ),
    )
    hue = tf.where(chroma > 0, hue * (1.0 / 6.0), 0.0)
    hue = (hue - tf.floor(hue)) * gains[0]  # into [0, 1) first, then the gain
    hue = hue - tf.floor(hue)
    saturation = tf.minimum(chroma / tf.maximum(value, 1e-12) * gains[1], 1.0)
    value = tf.minimum(value * gains[2], 1.0)
    # HSV -> RGB: channel = v - v s clip(min(k, 4 - k), 0, 1),
    # k = (n + 6 h) mod 6 with n = 5, 3, 1 for R, G, B.
    hue6 = hue * 6.0
    value_saturation = value * saturation

    def channel(n):
        k = n + hue6
        k = tf.where(k >= 6.0, k - 6.0, k)
        return value - value_saturation * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)

    return tf.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


@tf.function(jit_compile=True)
def photometric(image, hsv_gains, flip_up_down, flip_left_right, apply_hsv):
    """Scales to [0, 1], applies HSV gains and flips: one fused XLA pass.

    Args:
        image: (S, S, 3) float32 in [0, 255].
        hsv_gains: (3,) float32 hue, saturation and value gains.
        flip_up_down: bool scalar.
        flip_left_right: bool scalar.
        apply_hsv: Python bool; False skips the colour conversion.

    Returns:
        (S, S, 3) float32 in [0, 1].
    """
    image = image * (1.0 / 255.0)
    if apply_hsv:
        image = adjust_hsv(image, hsv_gains)
    image = tf.where(flip_up_down, tf.reverse(image, [0]), image)
    return tf.where(flip_left_right, tf.reverse(image, [1]), image)


def output_pixel_range(start, end, scale, canvas_center, translate, output_size):
    """Output pixels whose centres fall in the mapped canvas span [start, end).

    The canvas maps to the output by `scale * (x - canvas_center) +
    translate` (an axis-aligned affine). Adjacent spans get disjoint pixel
    ranges that cover everything between them.

    Returns:
        (first, stop) int32: pixels first .. stop - 1, clipped to [0, S].
    """

    def to_pixel(x):
        mapped = scale * (tf.cast(x, tf.float32) - canvas_center) + translate
        pixel = tf.cast(tf.math.ceil(mapped - 0.5), tf.int32)
        return tf.clip_by_value(pixel, 0, output_size)

    first = to_pixel(start)
    return first, tf.maximum(to_pixel(end), first)


def resample_tile(images, index, tile, placement, output_box, fill):
    """Renders one tile's part of an axis-aligned warp straight from its source.

    For a scale-and-translate warp (no rotation, shear or perspective) each
    mosaic tile lands in an axis-aligned output rectangle, so it can be
    resampled directly from the (un-resized) source image: the resize to the
    tile size and the warp become one bilinear sampling, and no canvas is
    built.

    Args:
        images: (G, H, W, 3) uint8 group of source images (zero padded).
        index: which image of the group.
        tile: dict with "source_size" (2,) int32 (h, w) of the valid source
            pixels, "size" (2,) int32 (h, w) of the tile on the canvas,
            "offset" (2,) int32 (x, y) of its top-left canvas corner and
            "region" (x0, y0, x1, y1), the canvas part it may cover.
        placement: dict with "scale" (float32 scalar), "center" (2,) float32
            canvas point that maps to "translate" (2,) float32 output point,
            and "output_size" (int S).
        output_box: (x0, y0, x1, y1) int32 output pixel range to return.
        fill: the value outside the tile (0-255 scale).

    Returns:
        (y1 - y0, x1 - x0, 3) float32 on the 0-255 scale.
    """
    scale = placement["scale"]
    ranges, sampling = [], []
    for axis, size_axis in ((0, 1), (1, 0)):  # x uses width (size[1]), y height
        offset = tile["offset"][axis]
        start = tf.maximum(offset, tile["region"][axis])
        end = tf.minimum(offset + tile["size"][size_axis], tile["region"][axis + 2])
        first, stop = output_pixel_range(
            start,
            end,
            scale,
            placement["center"][axis],
            placement["translate"][axis],
            placement["output_size"],
        )
        first = tf.clip_by_value(first, output_box[axis], output_box[axis + 2])
        stop = tf.clip_by_value(stop, first, output_box[axis + 2])
        # Source index of output pixel j: a + j * b (continuous coordinates,
        # shifted by half a pixel to crop_and_resize's pixel indices).
        ratio = tf.cast(tile["source_size"][size_axis], tf.float32) / tf.cast(
            tile["size"][size_axis], tf.float32
        )
        canvas_x = (
            tf.cast(first, tf.float32) + 0.5 - placement["translate"][axis]
        ) / scale + placement["center"][axis]
        a = (canvas_x - tf.cast(offset, tf.float32)) * ratio - 0.5
        b = ratio / scale
        limit = tf.cast(tile["source_size"][size_axis] - 1, tf.float32)
        count = stop - first
        # Keep the samples on valid pixels; this moves the outermost samples
        # by at most half a source pixel.
        low = tf.clip_by_value(a, 0.0, limit)
        high = tf.clip_by_value(a + b * tf.cast(tf.maximum(count - 1, 0), tf.float32), 0.0, limit)
        padded = tf.cast(tf.shape(images)[2 - axis] - 1, tf.float32)
        ranges.append((first, stop, count))
        sampling.append((low / padded, high / padded))
    (x_first, x_stop, x_count), (y_first, y_stop, y_count) = ranges
    (x_low, x_high), (y_low, y_high) = sampling
    crop = tf.image.crop_and_resize(
        images,
        tf.stack([y_low, x_low, y_high, x_high])[tf.newaxis],
        tf.fill([1], index),
        tf.stack([tf.maximum(y_count, 1), tf.maximum(x_count, 1)]),
    )[0, :y_count, :x_count]
    return tf.pad(
        crop,
        [
            [y_first - output_box[1], output_box[3] - y_stop],
            [x_first - output_box[0], output_box[2] - x_stop],
            [0, 0],
        ],
        constant_values=float(fill),
    )


def flip_boxes(boxes, image_size, up_down, left_right):
    """Mirrors xyxy boxes in an S x S image, as `photometric` mirrors pixels.

    Args:
        boxes: (n, 4) float32 xyxy.
        image_size: S.
        up_down: bool scalar, mirror vertically.
        left_right: bool scalar, mirror horizontally.

    Returns:
        (n, 4) float32 xyxy.
    """
    size = float(image_size)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    x1, x2 = tf.where(left_right, size - x2, x1), tf.where(left_right, size - x1, x2)
    y1, y2 = tf.where(up_down, size - y2, y1), tf.where(up_down, size - y1, y2)
    return tf.stack([x1, y1, x2, y2], axis=-1)
