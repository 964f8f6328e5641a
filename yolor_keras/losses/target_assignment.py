"""YOLOR's target assignment: which predictions learn from which box.

This is the official ``build_targets`` written for static shapes. Instead of
filtering targets into ragged lists, every (neighbour offset, anchor, target)
triple of one pyramid level becomes a *candidate* with a validity flag, so the
shapes depend only on the batch, the label padding and the anchor count, and
the whole assignment runs in a graph or under XLA.

The rule, for one level with grid cells of ``stride`` pixels:

* A target may use an anchor when neither side is more than ``anchor_t``
  times larger or smaller than the anchor's: max(w/a_w, a_w/w, h/a_h, a_h/h)
  < anchor_t.
* It goes to the cell holding its centre and to up to two neighbours (the
  official offset 0.5): the left cell when the centre lies in the left half of
  its cell, the right cell when in the right half, and likewise upper or
  lower; never across the outermost cells.

The candidates are ordered as the official code lists them: neighbour offset
first (centre, left, up, right, down), then anchor, then target. Where two
candidates share a cell and anchor, the official ``tobj[b, a, gj, gi] = iou``
keeps the later one, which `scatter_last_write` reproduces.
"""

import numpy as np
from keras import ops

NEIGHBOR_RULES = ("main", "paper")

# (dx, dy) subtracted from the target centre, in grid units, before taking
# the cell: the centre cell, then the left, upper, right and lower neighbour.
_OFFSETS = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]], dtype="float32")
NUM_OFFSETS = len(_OFFSETS)


def assign_targets(boxes, classes, anchors, stride, grid_size, anchor_t=4.0, neighbor_rule="main"):
    """Lists every assignment candidate of one pyramid level.

    Args:
        boxes: ``(batch, max_boxes, 4)`` ground-truth boxes, ``x1, y1, x2, y2``
            in input pixels.
        classes: ``(batch, max_boxes)`` integer class ids; ``-1`` marks
            padding. Boxes with a non-positive side are skipped as well.
        anchors: ``(num_anchors, 2)`` anchor ``(w, h)`` of this level in input
            pixels.
        stride: the level's stride in pixels; boxes are divided by it to get
            grid units.
        grid_size: ``(height, width)`` of the level's grid in cells.
        anchor_t: the anchor-multiple threshold (the recipe's 4.0).
        neighbor_rule: ``"main"`` or ``"paper"``, the branch of the official
            code whose right/lower-neighbour test to use. They differ only
            for a centre exactly on a cell edge, where ``"paper"`` adds the
            centre cell a second time.

    Returns:
        A dict of ``(batch, K)`` tensors, ``K = 5 * num_anchors * max_boxes``,
        one entry per candidate in the official order:

        * ``"valid"``: bool, whether the candidate is an assignment;
        * ``"row"``, ``"col"``, ``"anchor"``: int32 grid cell and anchor;
        * ``"cell"``: int32 index ``(row * width + col) * num_anchors + anchor``
          into the level's predictions flattened from
          ``(height, width, num_anchors)``;
        * ``"class"``: int32 class id;
        * ``"target_box"``: ``(batch, K, 4)`` float32 target ``x, y, w, h`` in
          grid units, ``x, y`` relative to the cell's top-left corner;
        * ``"anchor_wh"``: ``(batch, K, 2)`` float32 anchor in grid units.
    """
    if neighbor_rule not in NEIGHBOR_RULES:
        raise ValueError(f"`neighbor_rule` must be one of {NEIGHBOR_RULES}, got {neighbor_rule!r}.")
    anchors_grid = np.asarray(anchors, dtype="float32").reshape(-1, 2) / float(stride)
    num_anchors = anchors_grid.shape[0]
    height, width = grid_size

    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    centre_x = (boxes[..., 0] + boxes[..., 2]) / (2.0 * stride)
    centre_y = (boxes[..., 1] + boxes[..., 3]) / (2.0 * stride)
    box_w = (boxes[..., 2] - boxes[..., 0]) / float(stride)
    box_h = (boxes[..., 3] - boxes[..., 1]) / float(stride)
    present = (classes >= 0) & (box_w > 0.0) & (box_h > 0.0)

    # Anchor test, (batch, max_boxes, num_anchors). The sides are positive
    # wherever `present` holds; elsewhere the ratio may be inf and is unused.
    safe_w = ops.where(present, box_w, 1.0)[..., None]
    safe_h = ops.where(present, box_h, 1.0)[..., None]
    ratio_w = safe_w / anchors_grid[:, 0]
    ratio_h = safe_h / anchors_grid[:, 1]
    worst_ratio = ops.maximum(
        ops.maximum(ratio_w, 1.0 / ratio_w), ops.maximum(ratio_h, 1.0 / ratio_h)
    )
    matched = present[..., None] & (worst_ratio < anchor_t)

    # Neighbour tests, each (batch, max_boxes).
    frac_x = centre_x - ops.floor(centre_x)
    frac_y = centre_y - ops.floor(centre_y)
    use_left = (frac_x < 0.5) & (centre_x > 1.0)
    use_up = (frac_y < 0.5) & (centre_y > 1.0)
    if neighbor_rule == "main":
        use_right = (frac_x > 0.5) & (centre_x < width - 1.0)
        use_down = (frac_y > 0.5) & (centre_y < height - 1.0)
    else:
        # The paper branch measures from the far edge of the grid.
        from_right = width - centre_x
        from_bottom = height - centre_y
        use_right = (from_right - ops.floor(from_right) < 0.5) & (from_right > 1.0)
        use_down = (from_bottom - ops.floor(from_bottom) < 0.5) & (from_bottom > 1.0)
    use_offset = ops.stack([ops.ones_like(use_left), use_left, use_up, use_right, use_down], axis=1)

    # Candidates laid out (batch, offset, anchor, target).
    valid = use_offset[:, :, None, :] & ops.transpose(matched, (0, 2, 1))[:, None, :, :]
    offset_x = _OFFSETS[:, 0].reshape(1, NUM_OFFSETS, 1, 1)
    offset_y = _OFFSETS[:, 1].reshape(1, NUM_OFFSETS, 1, 1)
    grid_x = centre_x[:, None, None, :]
    grid_y = centre_y[:, None, None, :]
    # Flooring before clipping gives the same cells as the official
    # truncation towards zero followed by clamping.
    col = ops.clip(ops.floor(grid_x - offset_x), 0.0, width - 1.0)
    row = ops.clip(ops.floor(grid_y - offset_y), 0.0, height - 1.0)
    shape = ops.shape(valid)
    col = ops.broadcast_to(col, shape)
    row = ops.broadcast_to(row, shape)
    anchor = ops.broadcast_to(
        ops.reshape(ops.arange(num_anchors, dtype="int32"), (1, 1, num_anchors, 1)),
        shape,
    )
    # The official target offset is taken from the clamped cell: `gi, gj` are
    # views of `gij` and are clamped in place before `gxy - gij` is formed.
    target_box = ops.stack(
        [
            grid_x - col,
            grid_y - row,
            ops.broadcast_to(box_w[:, None, None, :], shape),
            ops.broadcast_to(box_h[:, None, None, :], shape),
        ],
        axis=-1,
    )
    anchor_wh = ops.take(ops.convert_to_tensor(anchors_grid), anchor, axis=0)
    target_class = ops.broadcast_to(classes[:, None, None, :], shape)

    row = ops.cast(row, "int32")
    col = ops.cast(col, "int32")
    cell = (row * width + col) * num_anchors + anchor

    def flat(x):
        return ops.reshape(x, (shape[0], -1) + tuple(x.shape[4:]))

    return {
        "valid": flat(valid),
        "row": flat(row),
        "col": flat(col),
        "anchor": flat(anchor),
        "cell": flat(cell),
        "class": flat(target_class),
        "target_box": flat(target_box),
        "anchor_wh": flat(anchor_wh),
    }


def scatter_last_write(values, cell, valid, num_cells):
    """Writes candidate values into a per-sample grid, the last write winning.

    This is ``grid[b, cell] = values`` with repeated indices resolved as an
    indexed assignment on PyTorch's CPU does it, in candidate order: each cell
    keeps the value of the last valid candidate that names it. Cells no valid
    candidate names hold 0.

    Args:
        values: ``(batch, K)`` float values to write.
        cell: ``(batch, K)`` int32 cell index of each candidate, in
            ``[0, num_cells)``.
        valid: ``(batch, K)`` bool, which candidates write at all.
        num_cells: the number of cells per sample.

    Returns:
        A ``(batch, num_cells)`` tensor of ``values``'s dtype.
    """
    cell = ops.cast(cell, "int32")
    shape = ops.shape(cell)
    batch, num_candidates = shape[0], shape[1]
    segment = cell + ops.arange(batch, dtype="int32")[:, None] * num_cells
    segment = ops.reshape(segment, (-1,))
    num_segments = batch * num_cells
    # Float positions are exact well past any realistic candidate count and
    # every backend's segment_max supports them.
    position = ops.broadcast_to(ops.arange(1, num_candidates + 1, dtype="float32")[None, :], shape)
    position = ops.reshape(ops.where(valid, position, 0.0), (-1,))
    last_position = ops.segment_max(position, segment, num_segments=num_segments)
    is_last = (position > 0.0) & (position == ops.take(last_position, segment))
    written = ops.where(is_last, ops.reshape(values, (-1,)), ops.zeros_like(position))
    grid = ops.segment_sum(written, segment, num_segments=num_segments)
    return ops.reshape(grid, (batch, num_cells))
