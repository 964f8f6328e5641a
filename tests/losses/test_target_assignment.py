"""Target assignment against cell lists derived by hand from the official rule."""

import keras
import numpy as np
import pytest

from yolor_keras.losses import assign_targets
from yolor_keras.losses import scatter_last_write

# A 64 x 64 input at stride 8: an 8 x 8 grid. In grid units the anchors are
# 1 x 1, 2 x 2 and 8 x 8.
ANCHORS = np.array([[8, 8], [16, 16], [64, 64]], "float32")


def _assigned(boxes, classes, anchors=ANCHORS, neighbor_rule="main"):
    """The valid candidates as (image, row, col, anchor, cell, class, box, anchor_wh)."""
    out = assign_targets(
        np.asarray(boxes, "float32"),
        np.asarray(classes, "int32"),
        anchors,
        stride=8,
        grid_size=(8, 8),
        neighbor_rule=neighbor_rule,
    )
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    rows = []
    for b, k in zip(*np.nonzero(out["valid"])):
        rows.append(
            (
                int(b),
                int(out["row"][b, k]),
                int(out["col"][b, k]),
                int(out["anchor"][b, k]),
                int(out["cell"][b, k]),
                int(out["class"][b, k]),
                tuple(np.round(out["target_box"][b, k], 6)),
                tuple(out["anchor_wh"][b, k]),
            )
        )
    return rows


def test_cells_and_anchors_of_known_targets():
    boxes = np.zeros((2, 3, 4), "float32")
    classes = np.full((2, 3), -1)
    # Image 0: centre (21, 35) px = (2.625, 4.375) cells, size 2 x 1.5 cells.
    # Anchors 1x1 (worst ratio 2) and 2x2 (4/3) match, 8x8 (5.33) does not.
    # x sits in the right half of column 2 -> right neighbour column 3;
    # y sits in the upper half of row 4 -> upper neighbour row 3.
    boxes[0, 0], classes[0, 0] = [13, 29, 29, 41], 4
    # A zero-width box with a real class is not a target.
    boxes[0, 1], classes[0, 1] = [30, 30, 30, 40], 1
    # Image 1: centre (6, 3) px = (0.75, 0.375) cells, size 1 x 0.75 cells.
    # Right half of column 0 -> column 1; the upper neighbour would cross the
    # border (y < 1) and is dropped. 1x1 and 2x2 match (worst 2.67), 8x8 not.
    boxes[1, 0], classes[1, 0] = [2, 0, 10, 6], 2
    expected = [
        # Official order: offset (centre, left, up, right, down), then anchor.
        (0, 4, 2, 0, (4 * 8 + 2) * 3 + 0, 4, (0.625, 0.375, 2.0, 1.5), (1.0, 1.0)),
        (0, 4, 2, 1, (4 * 8 + 2) * 3 + 1, 4, (0.625, 0.375, 2.0, 1.5), (2.0, 2.0)),
        (0, 3, 2, 0, (3 * 8 + 2) * 3 + 0, 4, (0.625, 1.375, 2.0, 1.5), (1.0, 1.0)),
        (0, 3, 2, 1, (3 * 8 + 2) * 3 + 1, 4, (0.625, 1.375, 2.0, 1.5), (2.0, 2.0)),
        (0, 4, 3, 0, (4 * 8 + 3) * 3 + 0, 4, (-0.375, 0.375, 2.0, 1.5), (1.0, 1.0)),
        (0, 4, 3, 1, (4 * 8 + 3) * 3 + 1, 4, (-0.375, 0.375, 2.0, 1.5), (2.0, 2.0)),
        (1, 0, 0, 0, 0, 2, (0.75, 0.375, 1.0, 0.75), (1.0, 1.0)),
        (1, 0, 0, 1, 1, 2, (0.75, 0.375, 1.0, 0.75), (2.0, 2.0)),
        (1, 0, 1, 0, 3, 2, (-0.25, 0.375, 1.0, 0.75), (1.0, 1.0)),
        (1, 0, 1, 1, 4, 2, (-0.25, 0.375, 1.0, 0.75), (2.0, 2.0)),
    ]
    assert _assigned(boxes, classes) == expected


def test_ratio_exactly_anchor_t_is_rejected():
    # 32 x 8 px = 4 x 1 cells: 4.0 against the 1x1 anchor (not < 4), 2.0
    # against 2x2, and 8.0 against 8x8. Centre (28, 28) = (3.5, 3.5) cells is
    # in neither half, so only the centre cell is used.
    rows = _assigned([[[12, 24, 44, 32]]], [[0]])
    assert [(r[1], r[2], r[3]) for r in rows] == [(3, 3, 1)]


def test_padding_gives_no_candidates():
    out = assign_targets(np.zeros((3, 4, 4), "float32"), np.full((3, 4), -1), ANCHORS, 8, (8, 8))
    assert out["valid"].shape == (3, 5 * 3 * 4)
    assert not keras.ops.convert_to_numpy(out["valid"]).any()


@pytest.mark.parametrize(
    "rule, expected_cells",
    [
        # Centre (24, 40) px = (3.0, 5.0) cells, exactly on a corner. Main: the
        # centre, the left and the upper neighbour.
        ("main", [(5, 3), (5, 2), (4, 3)]),
        # Paper also passes its right/lower test (measured from the far edge,
        # 5.0 and 3.0 cells: fraction 0 < 0.5), and 3.0 + 0.5 and 5.0 + 0.5
        # fall back into the centre cell, which is listed twice more.
        ("paper", [(5, 3), (5, 2), (4, 3), (5, 3), (5, 3)]),
    ],
)
def test_neighbor_rule_on_a_cell_corner(rule, expected_cells):
    rows = _assigned([[[20, 36, 28, 44]]], [[0]], anchors=ANCHORS[:1], neighbor_rule=rule)
    assert [(r[1], r[2]) for r in rows] == expected_cells


def test_lower_and_left_neighbours():
    # Centre (11, 53) px = (1.375, 6.625) cells: left half of column 1 (and
    # x > 1) -> column 0; lower half of row 6 (and y < 7) -> row 7.
    rows = _assigned([[[7, 49, 15, 57]]], [[0]], anchors=ANCHORS[:1])
    assert [(r[1], r[2], r[6][:2]) for r in rows] == [
        (6, 1, (0.375, 0.625)),
        (6, 0, (1.375, 0.625)),
        (7, 1, (0.375, -0.375)),
    ]


def test_scatter_last_write_keeps_the_last_valid_candidate():
    values = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0]], "float32")
    cells = np.array([[5, 5, 2, 5, 0], [1, 1, 1, 3, 3]], "int32")
    valid = np.array([[True, True, True, False, True], [True, False, False, True, True]])
    grid = keras.ops.convert_to_numpy(scatter_last_write(values, cells, valid, 6))
    # Image 0: cell 5 is written by 0.1 then 0.2 (0.4 is not valid), cell 2
    # by 0.3, cell 0 by 0.5. Image 1: cell 1 keeps 0.6, cell 3 gets 0.9 then 1.0.
    np.testing.assert_allclose(grid, [[0.5, 0, 0.3, 0, 0, 0.2], [0, 0.6, 0, 1.0, 0, 0]], atol=0)


def test_rejects_unknown_neighbor_rule():
    with pytest.raises(ValueError, match="neighbor_rule"):
        assign_targets(
            np.zeros((1, 1, 4)), np.zeros((1, 1)), ANCHORS, 8, (8, 8), neighbor_rule="v7"
        )
