"""The official YOLOR training augmentation, as a seeded tf.data map.

`sample_parameters` draws every random choice of one training sample from
a seed and an `AugmentationRecipe`; `augment_group` applies them to a group
of decoded images: mosaic (or letterbox), one perspective warp, optional
mixup with a second mosaic, HSV gains and flips. The same seed always gives
the same sample.

Two mosaics exist, as in the official code: the 4-image mosaic of its
`train.py` (2 x 2 tiles meeting at a random centre of a 2S x 2S canvas) and
the 9-image mosaic of its fine-tuning `tune.py` (3 x 3 tiles around a
centre tile on a 3S x 3S canvas, of which a random 2S x 2S window is kept).
Both then go through the same perspective warp to S x S.
"""

import tensorflow as tf

from yolor_keras.data import transforms


def group_size(recipe):
    """Images consumed per training sample: one mosaic's, twice with mixup."""
    tiles = recipe.mosaic_tiles
    return 2 * tiles if recipe.mixup > 0 else tiles


def sample_geometry(seed, recipe, image_size):
    """Draws the geometric parameters of one mosaic (or letterboxed image).

    Args:
        seed: (2,) int stateless seed.
        recipe: an `AugmentationRecipe`.
        image_size: S.

    Returns:
        dict of scalars: "mosaic" (bool), "center" ((2,) int32 xc, yc, the
        4-image mosaic's centre), "crop" ((2,) int32 x, y, the corner of the
        9-image mosaic's 2S x 2S window), and the float32 entries
        `transforms.perspective_matrix` reads.
    """
    u = tf.random.stateless_uniform([11], seed=seed)

    def symmetric(index, limit):  # U(-limit, limit)
        return (2.0 * u[index] - 1.0) * limit

    # The mosaic centre is drawn in [S/2, 3S/2) and truncated, as official.
    center = tf.cast(image_size * (0.5 + u[1:3]), tf.int32)
    # The 9-mosaic window corner in [0, S), truncated, as official. Only one
    # of the two is used, so they share their draws; the minimum guards
    # against float32 rounding S * u up to S.
    crop = tf.minimum(tf.cast(image_size * u[1:3], tf.int32), image_size - 1)
    return {
        "mosaic": u[0] < recipe.mosaic,
        "center": center,
        "crop": crop,
        "angle": symmetric(3, recipe.degrees),
        "scale": 1.0 + symmetric(4, recipe.scale),
        "shear_x": symmetric(5, recipe.shear),
        "shear_y": symmetric(6, recipe.shear),
        "perspective_x": symmetric(7, recipe.perspective),
        "perspective_y": symmetric(8, recipe.perspective),
        "translate_x": 0.5 + symmetric(9, recipe.translate),
        "translate_y": 0.5 + symmetric(10, recipe.translate),
    }


def sample_photometric(seed, recipe):
    """Draws HSV gains, flips and the mixup choice of one training sample.

    Args:
        seed: (2,) int stateless seed.
        recipe: an `AugmentationRecipe`.

    Returns:
        dict: "hsv_gains" (3,) float32, "flip_ud", "flip_lr", "mixup"
        (bool scalars) and "mixup_ratio" (float32 ~ Beta(8, 8)).
    """
    u = tf.random.stateless_uniform([6], seed=seed)
    limits = tf.constant([recipe.hsv_h, recipe.hsv_s, recipe.hsv_v], tf.float32)
    # Beta(8, 8) = X / (X + Y) with X, Y ~ Gamma(8).
    gammas = tf.random.stateless_gamma(
        [2], seed=tf.random.experimental.stateless_fold_in(seed, 1), alpha=8.0
    )
    return {
        "hsv_gains": 1.0 + (2.0 * u[0:3] - 1.0) * limits,
        "flip_ud": u[3] < recipe.flipud,
        "flip_lr": u[4] < recipe.fliplr,
        "mixup": u[5] < recipe.mixup,
        "mixup_ratio": gammas[0] / (gammas[0] + gammas[1]),
    }


def sample_parameters(seed, recipe, image_size):
    """All random choices of one training sample, from one seed.

    Args:
        seed: (2,) int stateless seed.
        recipe: an `AugmentationRecipe`.
        image_size: S.

    Returns:
        dict with "geometry", "mixup_geometry" (for the second mosaic) and
        "photometric" parameter dicts.
    """
    fold = tf.random.experimental.stateless_fold_in
    return {
        "geometry": sample_geometry(fold(seed, 0), recipe, image_size),
        "mixup_geometry": sample_geometry(fold(seed, 1), recipe, image_size),
        "photometric": sample_photometric(fold(seed, 2), recipe),
    }


def is_axis_aligned(recipe):
    """True when the recipe's warp is only scale and translation.

    The official recipes are (degrees, shear and perspective are 0); their
    mosaics are then rendered tile by tile straight from the source images.
    """
    return recipe.degrees == 0 and recipe.shear == 0 and recipe.perspective == 0


def mosaic9_offsets(sizes, crop, image_size):
    """Canvas positions of the 9 tiles of the official 9-image mosaic.

    On a 3S x 3S canvas, tile 0 has its top-left corner at (S, S); the
    others go around it clockwise from the top: 1 above it (left-aligned),
    2 to the right of tile 1 (bottom-aligned with it), 3 to the right of
    tile 0 (top-aligned), 4 below tile 3 (left-aligned with it), 5 below
    tile 0 (right-aligned), 6 to the left of tile 5, 7 to the left of
    tile 0 (bottom-aligned) and 8 above tile 7 (right-aligned with it).
    The kept 2S x 2S window starts at `crop`, so the corners are returned
    relative to it. Every tile's long side is at most S, which keeps the
    tiles pairwise disjoint and inside the canvas except past its left
    (tile 6) and top (tile 8) edges.

    Args:
        sizes: (9, 2) int32 (height, width) of each tile.
        crop: (2,) int32 (x, y) corner of the kept window on the 3S canvas.
        image_size: S.

    Returns:
        (9, 2) int32 (x, y) of each tile's top-left corner in the window.
    """
    heights, widths = tf.unstack(sizes, axis=1)
    s = image_size
    h0, w0 = heights[0], widths[0]
    offsets_x = tf.stack(
        [
            s,
            s,
            s + widths[1],
            s + w0,
            s + w0,
            s + w0 - widths[5],
            s + w0 - widths[5] - widths[6],
            s - widths[7],
            s - widths[8],
        ]
    )
    offsets_y = tf.stack(
        [
            s,
            s - heights[1],
            s - heights[2],
            s,
            s + heights[3],
            s + h0,
            s + h0,
            s + h0 - heights[7],
            s + h0 - heights[7] - heights[8],
        ]
    )
    return tf.stack([offsets_x, offsets_y], axis=-1) - crop[tf.newaxis]


def _layout(group, geometry, use_mosaic, image_size, tiles=4):
    """Where the group's images sit on the canvas, and their boxes there.

    The group holds one mosaic's `tiles` images (4 or 9); a letterbox uses
    only the first.

    Returns:
        dict: "offsets" (T, 2) int32 tile corners, "regions" (list of T
        canvas rectangles each tile may cover), "canvas_size" (float32
        side), "boxes" (TM, 4) canvas boxes and "keep" (TM,) bool; a
        letterbox has one tile.
    """
    sizes, boxes = group["size"], group["boxes"]
    valid = group["classes"] >= 0
    if use_mosaic:
        side = 2 * image_size
        if tiles == 9:
            offsets = mosaic9_offsets(sizes, geometry["crop"], image_size)
            # The tiles are disjoint, so each may cover the whole window
            # where it lies; the window's edges are the only cut.
            regions = [(0, 0, side, side)] * 9
        else:
            offsets = transforms.mosaic_offsets(sizes[:4], geometry["center"])
            regions = transforms.mosaic_regions(geometry["center"], image_size)
        shifted = (
            boxes + tf.cast(tf.tile(offsets, [1, 2]), tf.float32)[:, tf.newaxis, :]
        )
        # As official: clip to the canvas; tiles never overlap, so this is exact.
        shifted = tf.clip_by_value(shifted, 0.0, float(side))
        keep = valid
        canvas_size = float(side)
    else:
        height, width = sizes[0, 0], sizes[0, 1]
        offsets = tf.stack([(image_size - width) // 2, (image_size - height) // 2])[
            tf.newaxis
        ]
        regions = [(0, 0, image_size, image_size)]
        # Same box count as a mosaic: the other images' boxes are dropped.
        offset = tf.cast(tf.tile(offsets, [1, 2]), tf.float32)[:, tf.newaxis, :]
        shifted = tf.concat([boxes[:1] + offset, tf.zeros_like(boxes[1:])], axis=0)
        keep = tf.concat([valid[:1], tf.zeros_like(valid[1:])], axis=0)
        canvas_size = float(image_size)
    return {
        "offsets": offsets,
        "regions": regions,
        "canvas_size": canvas_size,
        "boxes": tf.reshape(shifted, [-1, 4]),
        "keep": tf.reshape(keep, [-1]),
    }


def _compose_canvas9(images, sizes, offsets, side):
    """Pastes 9 disjoint tiles on a grey `side` x `side` canvas.

    Unlike the 4-mosaic's quadrants, the 9 tiles do not split the canvas
    into a grid, so each is pasted over the whole canvas and selected by
    its own rectangle.

    Returns:
        (side, side, 3) uint8.
    """
    canvas = tf.fill([side, side, 3], tf.constant(transforms.GREY, tf.uint8))
    coordinates = tf.range(side)
    for i in range(9):
        height, width = sizes[i, 0], sizes[i, 1]
        x, y = offsets[i, 0], offsets[i, 1]
        pasted = transforms.paste_tile(
            images[i], height, width, x, y, (0, 0, side, side)
        )
        inside_x = (coordinates >= x) & (coordinates < x + width)
        inside_y = (coordinates >= y) & (coordinates < y + height)
        mask = inside_y[:, tf.newaxis, tf.newaxis] & inside_x[tf.newaxis, :, tf.newaxis]
        canvas = tf.where(mask, pasted, canvas)
    return canvas


def _render_warped(group, layout, matrix, image_size):
    """General warp: paste the tiles on a canvas, then one projective warp."""
    if len(layout["regions"]) == 9:
        canvas = _compose_canvas9(
            group["image"], group["size"], layout["offsets"], 2 * image_size
        )
    else:
        canvas = transforms.compose_canvas(
            group["image"], group["size"], layout["offsets"], layout["regions"]
        )
    warped = transforms.warp_image(canvas, matrix, image_size)
    return tf.cast(warped, tf.float32)


def _render_axis_aligned(group, layout, geometry, image_size):
    """Scale-and-translate warp: each tile resampled once from its source."""
    canvas_center = layout["canvas_size"] / 2
    placement = {
        "scale": geometry["scale"],
        "center": tf.constant([canvas_center, canvas_center], tf.float32),
        "translate": tf.stack([geometry["translate_x"], geometry["translate_y"]])
        * float(image_size),
        "output_size": image_size,
    }
    regions = layout["regions"]
    if len(regions) == 9:
        return _render_axis_aligned9(group, layout, placement, image_size)
    if len(regions) == 1:
        output_regions = [(0, 0, image_size, image_size)]
    else:
        # The output splits where the mosaic centre lands.
        split_x, _ = transforms.output_pixel_range(
            regions[0][2],
            regions[0][2],
            placement["scale"],
            canvas_center,
            placement["translate"][0],
            image_size,
        )
        split_y, _ = transforms.output_pixel_range(
            regions[0][3],
            regions[0][3],
            placement["scale"],
            canvas_center,
            placement["translate"][1],
            image_size,
        )
        output_regions = [
            (0, 0, split_x, split_y),
            (split_x, 0, image_size, split_y),
            (0, split_y, split_x, image_size),
            (split_x, split_y, image_size, image_size),
        ]
    blocks = []
    for i, (region, output_region) in enumerate(zip(regions, output_regions)):
        tile = {
            "source_size": group["source_size"][i],
            "size": group["size"][i],
            "offset": layout["offsets"][i],
            "region": region,
        }
        blocks.append(
            transforms.resample_tile(
                group["image"], i, tile, placement, output_region, transforms.GREY
            )
        )
    if len(blocks) == 4:
        image = tf.concat(
            [tf.concat(blocks[:2], axis=1), tf.concat(blocks[2:], axis=1)], axis=0
        )
    else:
        image = blocks[0]
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _render_axis_aligned9(group, layout, placement, image_size):
    """The 9-mosaic's scale-and-translate warp, each tile from its source.

    Disjoint tiles land in disjoint output pixel ranges, so each tile is
    resampled over the whole output with a fill no pixel can have (-1) and
    laid over the grey background where it has pixels.
    """
    full = (0, 0, image_size, image_size)
    image = tf.fill([image_size, image_size, 3], float(transforms.GREY))
    for i, region in enumerate(layout["regions"]):
        tile = {
            "source_size": group["source_size"][i],
            "size": group["size"][i],
            "offset": layout["offsets"][i],
            "region": region,
        }
        block = transforms.resample_tile(
            group["image"], i, tile, placement, full, fill=-1
        )
        image = tf.where(block >= 0.0, block, image)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _compose(group, geometry, recipe, image_size):
    """Mosaic (or letterbox) one mosaic's images, warp once, move the boxes.

    Returns:
        (image (S, S, 3) float32 on the 0-255 scale, boxes (TM, 4),
        classes (TM,), keep (TM,) bool), T = `recipe.mosaic_tiles`.
    """

    def render(use_mosaic):
        layout = _layout(
            group, geometry, use_mosaic, image_size, recipe.mosaic_tiles
        )
        matrix = transforms.perspective_matrix(
            geometry, layout["canvas_size"], layout["canvas_size"], image_size
        )
        if is_axis_aligned(recipe):
            image = _render_axis_aligned(group, layout, geometry, image_size)
        else:
            image = _render_warped(group, layout, matrix, image_size)
        boxes = transforms.transform_boxes(layout["boxes"], matrix, image_size)
        before = layout["boxes"] * geometry["scale"]
        keep = layout["keep"] & transforms.box_candidates(before, boxes)
        return image, boxes, keep

    if recipe.mosaic >= 1:
        image, boxes, keep = render(True)
    elif recipe.mosaic <= 0:
        image, boxes, keep = render(False)
    else:
        image, boxes, keep = tf.cond(
            geometry["mosaic"], lambda: render(True), lambda: render(False)
        )
    return image, boxes, tf.reshape(group["classes"], [-1]), keep


def augment_group(group, seed, recipe, image_size, max_boxes):
    """Turns a group of decoded images into one augmented training sample.

    Args:
        group: dict of a padded batch of `decode_for_training` outputs:
            "image" (G, H, W, 3) uint8, "source_size" and "size" (G, 2)
            int32, "boxes" (G, M, 4) float32 and "classes" (G, M) int32
            (-1 = padding), with G = `group_size(recipe)`: the first
            `recipe.mosaic_tiles` images make the mosaic, the rest the
            mixup partner's.
        seed: (2,) int stateless seed of this sample.
        recipe: an `AugmentationRecipe`.
        image_size: S.
        max_boxes: boxes are padded (or cut) to this many.

    Returns:
        (image (S, S, 3) float32 in [0, 1], {"boxes": (max_boxes, 4)
        float32 xyxy pixels, "classes": (max_boxes,) int32, -1 padded}).
    """
    params = sample_parameters(seed, recipe, image_size)
    photometric = params["photometric"]
    tiles = recipe.mosaic_tiles
    first = {key: value[:tiles] for key, value in group.items()}
    image, boxes, classes, keep = _compose(
        first, params["geometry"], recipe, image_size
    )

    if recipe.mixup > 0:
        second = {key: value[tiles:] for key, value in group.items()}
        ratio = photometric["mixup_ratio"]

        def mix():
            image2, boxes2, _, keep2 = _compose(
                second, params["mixup_geometry"], recipe, image_size
            )
            return image * ratio + image2 * (1 - ratio), boxes2, keep2

        def do_not_mix():  # the second mosaic is not even rendered
            return image, tf.zeros_like(boxes), tf.zeros_like(keep)

        image, boxes2, keep2 = tf.cond(photometric["mixup"], mix, do_not_mix)
        boxes = tf.concat([boxes, boxes2], axis=0)
        classes = tf.concat([classes, tf.reshape(second["classes"], [-1])], axis=0)
        keep = tf.concat([keep, keep2], axis=0)

    flip_ud = photometric["flip_ud"]
    flip_lr = photometric["flip_lr"]
    image = transforms.photometric(
        image,
        photometric["hsv_gains"],
        flip_ud,
        flip_lr,
        apply_hsv=bool(recipe.hsv_h or recipe.hsv_s or recipe.hsv_v),
    )
    boxes = transforms.flip_boxes(boxes, image_size, flip_ud, flip_lr)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return image, pad_boxes(boxes, classes, keep, max_boxes)


def pad_boxes(boxes, classes, keep, max_boxes):
    """Keeps the wanted boxes and pads them to a fixed count.

    Args:
        boxes: (n, 4) float32.
        classes: (n,) int32.
        keep: (n,) bool.
        max_boxes: the fixed count; extra boxes beyond it are dropped.

    Returns:
        {"boxes": (max_boxes, 4) float32 (zeros as padding),
         "classes": (max_boxes,) int32 (-1 as padding)}.
    """
    index = tf.where(keep)[:max_boxes, 0]
    kept_boxes = tf.gather(boxes, index)
    kept_classes = tf.gather(classes, index)
    missing = max_boxes - tf.shape(index)[0]
    return {
        "boxes": tf.ensure_shape(
            tf.pad(kept_boxes, [[0, missing], [0, 0]]), [max_boxes, 4]
        ),
        "classes": tf.ensure_shape(
            tf.pad(kept_classes, [[0, missing]], constant_values=-1), [max_boxes]
        ),
    }
