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


# The tile of each of the 11 cells `mosaic9_cells` returns, in order.
MOSAIC9_CELL_TILES = (8, 7, 6, 5, 1, 2, 0, 6, 5, 3, 4)


def mosaic9_cells(sizes, offsets, side):
    """Splits the 9-mosaic window into 11 rectangles of one tile each.

    The 9 tiles own disjoint regions that cover the plane like a pinwheel
    around the centre tile: tiles 1-2 the band above it (right of its left
    edge), 3-4 the band right of it (below its top edge), 5-6 the band
    below it (left of its right edge) and 7-8 the band left of it (above
    its bottom edge), each band split between its two tiles. Cutting the
    bottom band at the centre's left edge as well makes the regions join
    by concatenation (`join_mosaic9_cells`), so the window is built with
    each pixel written once.

    Args:
        sizes: (9, 2) int32 (height, width) of each tile.
        offsets: (9, 2) int32 window corners of the tiles
            (`mosaic9_offsets`).
        side: the window side, 2S.

    Returns:
        11 cells (x0, y0, x1, y1) in the window, some possibly empty, of
        the tiles `MOSAIC9_CELL_TILES`. Window edges are the Python ints 0
        and `side`; inner edges are int32 scalars.
    """
    heights, widths = tf.unstack(sizes, axis=1)
    # The centre tile always lies inside the window (its corner is S minus
    # a crop offset in [0, S), and its sides are at most S).
    left, top = offsets[0, 0], offsets[0, 1]
    right, bottom = left + widths[0], top + heights[0]
    top_split = tf.clip_by_value(offsets[2, 0], left, side)  # tile 1 | 2
    right_split = tf.clip_by_value(offsets[4, 1], top, side)  # 3 over 4
    left_split = tf.clip_by_value(offsets[7, 1], 0, bottom)  # 8 over 7
    # Tile 6 | tile 5, once left of the centre's left edge, once below it.
    bottom_split_left = tf.clip_by_value(offsets[5, 0], 0, left)
    bottom_split_mid = tf.clip_by_value(offsets[5, 0], left, right)
    return [
        (0, 0, left, left_split),
        (0, left_split, left, bottom),
        (0, bottom, bottom_split_left, side),
        (bottom_split_left, bottom, left, side),
        (left, 0, top_split, top),
        (top_split, 0, side, top),
        (left, top, right, bottom),
        (left, bottom, bottom_split_mid, side),
        (bottom_split_mid, bottom, right, side),
        (right, top, side, right_split),
        (right, right_split, side, side),
    ]


def join_mosaic9_cells(blocks):
    """Joins the 11 rendered cells of `mosaic9_cells` into one image."""
    (
        cell8,
        cell7,
        cell6_left,
        cell5_left,
        cell1,
        cell2,
        cell0,
        cell6_mid,
        cell5_mid,
        cell3,
        cell4,
    ) = blocks

    def across(*parts):
        return tf.concat(parts, axis=1)

    def down(*parts):
        return tf.concat(parts, axis=0)

    left_column = down(cell8, cell7, across(cell6_left, cell5_left))
    middle = down(cell0, across(cell6_mid, cell5_mid))
    lower = across(middle, down(cell3, cell4))
    return across(left_column, down(across(cell1, cell2), lower))


def _layout(group, geometry, use_mosaic, image_size, tiles=4):
    """Where the group's images sit on the canvas, and their boxes there.

    The group holds one mosaic's `tiles` images (4 or 9); a letterbox uses
    only the first.

    Returns:
        dict: "offsets" (T, 2) int32 tile corners, "regions" (list of T
        canvas rectangles each tile may cover; None for 9 tiles), "cells"
        (the `mosaic9_cells` of a 9-mosaic, else None), "canvas_size"
        (float32 side), "boxes" (TM, 4) canvas boxes and "keep" (TM,)
        bool; a letterbox has one tile.
    """
    sizes, boxes = group["size"], group["boxes"]
    valid = group["classes"] >= 0
    cells = None
    if use_mosaic:
        side = 2 * image_size
        if tiles == 9:
            offsets = mosaic9_offsets(sizes, geometry["crop"], image_size)
            cells = mosaic9_cells(sizes, offsets, side)
            regions = None
        else:
            offsets = transforms.mosaic_offsets(sizes[:4], geometry["center"])
            regions = transforms.mosaic_regions(geometry["center"], image_size)
        shifted = boxes + tf.cast(tf.tile(offsets, [1, 2]), tf.float32)[:, tf.newaxis, :]
        # As official: clip to the canvas; tiles never overlap, so this is exact.
        shifted = tf.clip_by_value(shifted, 0.0, float(side))
        keep = valid
        canvas_size = float(side)
    else:
        height, width = sizes[0, 0], sizes[0, 1]
        offsets = tf.stack([(image_size - width) // 2, (image_size - height) // 2])[tf.newaxis]
        regions = [(0, 0, image_size, image_size)]
        # Same box count as a mosaic: the other images' boxes are dropped.
        offset = tf.cast(tf.tile(offsets, [1, 2]), tf.float32)[:, tf.newaxis, :]
        shifted = tf.concat([boxes[:1] + offset, tf.zeros_like(boxes[1:])], axis=0)
        keep = tf.concat([valid[:1], tf.zeros_like(valid[1:])], axis=0)
        canvas_size = float(image_size)
    return {
        "offsets": offsets,
        "regions": regions,
        "cells": cells,
        "canvas_size": canvas_size,
        "boxes": tf.reshape(shifted, [-1, 4]),
        "keep": tf.reshape(keep, [-1]),
    }


def _paste_cell(images, index, size, offset, cell):
    """The part of tile `index` inside a canvas cell, padded grey.

    `transforms.paste_tile` on the whole group: slicing it directly copies
    only the visible pixels, not the whole tile first.

    Args:
        images: (G, H, W, 3) uint8 group.
        index: the tile (Python int).
        size: (2,) int32 (height, width) of the tile.
        offset: (2,) int32 (x, y) canvas corner of the tile.
        cell: (x0, y0, x1, y1) int32 scalars.

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    x0, y0, x1, y1 = cell
    visible_x0 = tf.clip_by_value(offset[0], x0, x1)
    visible_x1 = tf.clip_by_value(offset[0] + size[1], visible_x0, x1)
    visible_y0 = tf.clip_by_value(offset[1], y0, y1)
    visible_y1 = tf.clip_by_value(offset[1] + size[0], visible_y0, y1)
    crop = images[
        index,
        visible_y0 - offset[1] : visible_y1 - offset[1],
        visible_x0 - offset[0] : visible_x1 - offset[0],
    ]
    paddings = [
        [visible_y0 - y0, y1 - visible_y1],
        [visible_x0 - x0, x1 - visible_x1],
        [0, 0],
    ]
    return tf.pad(crop, paddings, constant_values=transforms.GREY)


def _compose_canvas9(images, sizes, offsets, cells):
    """Pastes the 9 tiles on the grey 2S x 2S window, cell by cell.

    Returns:
        (2S, 2S, 3) uint8.
    """
    blocks = [
        _paste_cell(images, tile, sizes[tile], offsets[tile], cell)
        for tile, cell in zip(MOSAIC9_CELL_TILES, cells)
    ]
    return join_mosaic9_cells(blocks)


def _render_warped(group, layout, matrix, image_size):
    """General warp: paste the tiles on a canvas, then one projective warp."""
    if layout["cells"] is not None:
        canvas = _compose_canvas9(group["image"], group["size"], layout["offsets"], layout["cells"])
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
    if layout["cells"] is not None:
        return _render_axis_aligned9(group, layout, placement, image_size)
    regions = layout["regions"]
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
        image = tf.concat([tf.concat(blocks[:2], axis=1), tf.concat(blocks[2:], axis=1)], axis=0)
    else:
        image = blocks[0]
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _render_axis_aligned9(group, layout, placement, image_size):
    """The 9-mosaic's scale-and-translate warp, cell by cell from the sources.

    Each cell's inner edges map to output pixel boundaries and the window's
    edges to the output's (grey beyond the window, as for the 4-mosaic), so
    the cells become output blocks that join the same way.
    """

    def to_output(edge, axis):
        if isinstance(edge, int):  # a window edge
            return 0 if edge == 0 else image_size
        first, _ = transforms.output_pixel_range(
            edge,
            edge,
            placement["scale"],
            placement["center"][axis],
            placement["translate"][axis],
            image_size,
        )
        return first

    blocks = []
    for tile, cell in zip(MOSAIC9_CELL_TILES, layout["cells"]):
        source = {
            "source_size": group["source_size"][tile],
            "size": group["size"][tile],
            "offset": layout["offsets"][tile],
            "region": cell,
        }
        output_box = tuple(to_output(edge, i % 2) for i, edge in enumerate(cell))
        blocks.append(
            transforms.resample_tile(
                group["image"], tile, source, placement, output_box, transforms.GREY
            )
        )
    image = join_mosaic9_cells(blocks)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _compose(group, geometry, recipe, image_size):
    """Mosaic (or letterbox) one mosaic's images, warp once, move the boxes.

    Returns:
        (image (S, S, 3) float32 on the 0-255 scale, boxes (TM, 4),
        classes (TM,), keep (TM,) bool), T = `recipe.mosaic_tiles`.
    """

    def render(use_mosaic):
        layout = _layout(group, geometry, use_mosaic, image_size, recipe.mosaic_tiles)
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


# Every branch on a tensor here is an explicit tf.cond, so AutoGraph has
# nothing to convert; skipping it saves seconds when tf.data traces the
# unrolled 9-mosaic.
@tf.autograph.experimental.do_not_convert
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
    image, boxes, classes, keep = _compose(first, params["geometry"], recipe, image_size)

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
        "boxes": tf.ensure_shape(tf.pad(kept_boxes, [[0, missing], [0, 0]]), [max_boxes, 4]),
        "classes": tf.ensure_shape(
            tf.pad(kept_classes, [[0, missing]], constant_values=-1), [max_boxes]
        ),
    }
