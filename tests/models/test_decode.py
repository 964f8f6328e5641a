"""decode_predictions against the official formulas, written out by hand."""

import math

import keras
import numpy as np
import pytest

from yolor_keras.models import decode_predictions


def _sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t))


def _expected(raw_levels, anchors, strides):
    """Loops over level, anchor, row, column: the official flattening order."""
    rows_out = []
    for raw, level_anchors, stride in zip(raw_levels, anchors, strides):
        _, height, width, num_anchors, _ = raw.shape
        for a in range(num_anchors):
            for row in range(height):
                for col in range(width):
                    t = raw[0, row, col, a]
                    s = [_sigmoid(float(v)) for v in t]
                    rows_out.append(
                        [
                            (2 * s[0] - 0.5 + col) * stride,
                            (2 * s[1] - 0.5 + row) * stride,
                            (2 * s[2]) ** 2 * level_anchors[a][0],
                            (2 * s[3]) ** 2 * level_anchors[a][1],
                        ]
                        + s[4:]
                    )
    return np.array(rows_out)[None]


def test_simple_values():
    # t = 0 gives sigma 0.5: centre (col + 0.5) * stride, size = anchor.
    # t = ln 3 gives sigma 0.75: centre (col + 1) * stride, size = 2.25 anchor.
    raw = np.zeros((1, 1, 2, 1, 6), "float32")
    raw[0, 0, 1, 0, :4] = math.log(3.0)
    out = keras.ops.convert_to_numpy(decode_predictions([raw], [[[10.0, 20.0]]], [8]))
    np.testing.assert_allclose(out[0, 0], [4.0, 4.0, 10.0, 20.0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], [16.0, 8.0, 22.5, 45.0, 0.5, 0.5], rtol=1e-6)


def test_matches_the_formulas_and_official_order():
    rng = np.random.default_rng(0)
    raw = [
        rng.normal(size=(1, 2, 3, 2, 7)).astype("float32"),
        rng.normal(size=(1, 1, 2, 2, 7)).astype("float32"),
    ]
    anchors = np.array([[[12, 16], [19, 36]], [[40, 28], [36, 75]]], "float32")
    strides = [8, 16]
    out = keras.ops.convert_to_numpy(decode_predictions(raw, anchors, strides))
    assert out.shape == (1, 2 * 2 * 3 + 2 * 1 * 2, 7)
    np.testing.assert_allclose(out, _expected(raw, anchors, strides), rtol=1e-5, atol=1e-5)


def test_batch_entries_are_independent():
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=(3, 2, 2, 3, 6)).astype("float32")]
    anchors = [[[1, 2], [3, 4], [5, 6]]]
    both = keras.ops.convert_to_numpy(decode_predictions(raw, anchors, [32]))
    second = keras.ops.convert_to_numpy(decode_predictions([raw[0][1:2]], anchors, [32]))
    np.testing.assert_allclose(both[1:2], second, rtol=1e-6)


def test_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match="must match"):
        decode_predictions([np.zeros((1, 2, 2, 3, 6), "float32")], [[[1, 1]] * 3] * 2, [8])
