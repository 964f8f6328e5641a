"""The small layers of the YOLOR graphs: ReOrg, AnchorSplit, ChannelAffine, InputSizeCheck."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_test_helper import check_config_round_trip
from layer_test_helper import check_output_shapes
from layer_test_helper import check_saving
from layer_test_helper import run_layer_test

from yolor_keras.layers import AnchorSplit
from yolor_keras.layers import ChannelAffine
from yolor_keras.layers import InputSizeCheck
from yolor_keras.layers import ReOrg


def test_reorg_uses_the_official_block_order():
    # One channel, pixels a b / c d (rows, columns). Official order of the four
    # sub-images: (even row, even col), (odd row, even col), (even, odd), (odd, odd).
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    image = np.array([[a, b], [c, d]], "float32").reshape(1, 2, 2, 1)
    out = keras.ops.convert_to_numpy(ReOrg()(image))
    np.testing.assert_array_equal(out.reshape(-1), [a, c, b, d])
    # tf.nn.space_to_depth swaps the middle blocks: the pitfall ReOrg avoids.
    np.testing.assert_array_equal(tf.nn.space_to_depth(image, 2).numpy().reshape(-1), [a, b, c, d])


def test_reorg_is_block_major_over_all_channels():
    rng = np.random.default_rng(0)
    image = rng.random((2, 4, 6, 3), dtype=np.float32)
    out = keras.ops.convert_to_numpy(ReOrg()(image))
    assert out.shape == (2, 2, 3, 12)
    for block, (row, col) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        for channel in range(3):
            np.testing.assert_array_equal(
                out[..., block * 3 + channel], image[:, row::2, col::2, channel]
            )


def test_reorg_config_shapes_and_saving(tmp_path):
    check_config_round_trip(ReOrg, {}, (8, 8, 3))
    check_output_shapes(ReOrg, {}, (8, 8, 3), (4, 4, 12))
    check_saving(ReOrg, {}, (8, 8, 3), tmp_path)


def test_anchor_split_maps_channel_anchor_times_fields_plus_field():
    fields, anchors = 8, 3
    values = np.arange(2 * 4 * 5 * anchors * fields, dtype="float32").reshape(
        2, 4, 5, anchors * fields
    )
    out = keras.ops.convert_to_numpy(AnchorSplit(anchors)(values))
    assert out.shape == (2, 4, 5, anchors, fields)
    for anchor in range(anchors):
        for field in range(fields):
            np.testing.assert_array_equal(
                out[..., anchor, field], values[..., anchor * fields + field]
            )


def test_anchor_split_config_shapes_and_errors(tmp_path):
    check_config_round_trip(AnchorSplit, {"num_anchors": 3}, (4, 4, 24))
    check_output_shapes(AnchorSplit, {"num_anchors": 3}, (4, 4, 24), (4, 4, 3, 8))
    check_saving(AnchorSplit, {"num_anchors": 3}, (4, 4, 24), tmp_path)
    with pytest.raises(ValueError, match="25 channels cannot be split evenly over 3 anchors"):
        AnchorSplit(3)(keras.Input((4, 4, 25)))


def test_anchor_split_with_unknown_spatial_size():
    inputs = keras.Input((None, None, 24))
    model = keras.Model(inputs, AnchorSplit(3)(inputs))
    assert model(np.zeros((1, 6, 2, 24), "float32")).shape == (1, 6, 2, 3, 8)


def test_channel_affine_layer_battery(tmp_path):
    run_layer_test(ChannelAffine, {}, (4, 4, 5), (4, 4, 5), ["scale", "offset"], tmp_path)


def test_channel_affine_values():
    layer = ChannelAffine()
    layer.build((None, 2, 2, 3))
    layer.scale.assign(np.array([2.0, -1.0, 0.5], "float32"))
    layer.offset.assign(np.array([1.0, 0.0, -3.0], "float32"))
    x = np.ones((1, 2, 2, 3), "float32") * np.array([1.0, 2.0, 4.0], "float32")
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[0, 0, 0], [3.0, -2.0, -1.0])


def test_input_size_check_passes_multiples_through():
    x = np.random.default_rng(1).random((1, 128, 64, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(InputSizeCheck(64)(x)), x)


def test_input_size_check_names_the_size_and_the_multiple():
    with pytest.raises(ValueError, match=r"Image width 100 is not a multiple of 64.*128"):
        InputSizeCheck(64)(np.zeros((1, 128, 100, 3), "float32"))
    with pytest.raises(ValueError, match=r"Image height 96 is not a multiple of 64"):
        InputSizeCheck(64)(keras.Input((96, 128, 3)))
