"""The mixed-precision check of the layer battery is strict enough to matter.

A float16 or bfloat16 run of a layer is compared with a float32 run of the
same weights. The implicit vectors start near the identity (a ~ N(0, 0.02),
m ~ N(1, 0.02)), so an output that skipped the layer altogether is off by
only about 0.02 * |x|: a tolerance of 2e-2, the vectors' own size, cannot
tell the difference. These tests check that the battery's tolerance (a few
unit roundoffs of the compute dtype, times the largest activation) passes
the real layers and fails a layer whose vector is set to the identity.
"""

import keras
import numpy as np
import pytest
from layer_test_helper import UNIT_ROUNDOFF
from layer_test_helper import assert_matches_float32
from layer_test_helper import mixed_precision_tolerance

from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitMultiply

POLICIES = [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
# (layer, the vector value that makes it the identity)
IDENTITIES = [(ImplicitAdd, 0.0), (ImplicitMultiply, 1.0)]
SEEDS = range(5)


def test_unit_roundoffs_are_those_of_the_formats():
    # Half the gap between 1 and the next representable number.
    assert UNIT_ROUNDOFF["float16"] == float(np.finfo(np.float16).eps) / 2

    def bfloat16(value):
        rounded = keras.ops.cast(keras.ops.cast(value, "bfloat16"), "float32")
        return float(keras.ops.convert_to_numpy(rounded))

    assert bfloat16(1.0 + 2.0**-7) == 1.0 + 2.0**-7  # 8 significant bits: 2^-7 is the gap
    assert bfloat16(1.0 + 2.0**-9) == 1.0  # less than half the gap rounds away
    assert UNIT_ROUNDOFF["bfloat16"] == 2.0**-7 / 2


def _run(layer_cls, policy, seed):
    """(low-precision layer, its output, float32 output) on the battery's input."""
    keras.utils.set_random_seed(seed)
    layer = layer_cls(dtype=policy)
    x = np.random.default_rng(2).random((2, 5, 4, 6)).astype("float32")
    output = layer(x)
    reference = layer_cls.from_config({**layer.get_config(), "dtype": "float32"})
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    return layer, x, output, keras.ops.convert_to_numpy(reference(x))


@pytest.mark.parametrize("policy, compute", POLICIES)
@pytest.mark.parametrize("layer_cls, identity", IDENTITIES, ids=["add", "multiply"])
def test_dropping_the_implicit_layer_fails_the_tolerance(layer_cls, identity, policy, compute):
    for seed in SEEDS:
        layer, x, output, reference = _run(layer_cls, policy, seed)
        assert_matches_float32(output, reference, compute)  # the real layer passes

        # The layer dropped: its vector set to the identity, output == x.
        (vector,) = layer.weights
        vector.assign(np.full(vector.shape, identity, "float32"))
        dropped = keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32"))
        np.testing.assert_allclose(dropped, x, atol=4 * UNIT_ROUNDOFF[compute])
        with pytest.raises(AssertionError):
            assert_matches_float32(dropped, reference, compute)
        error = np.abs(dropped - reference).max()
        tolerance = mixed_precision_tolerance(compute, reference)
        if compute == "float16":
            # float16 rounds 8 times finer: a dropped layer is off by many
            # tolerances, not by a hair. (bfloat16's tolerance, ~0.016 here,
            # is close to the vectors' stddev; it still catches a dropped
            # layer unless all 6 channels' |a| or |m - 1| fall under 0.8
            # stddev, about 3% of initialisations, which float16 catches.)
            assert error > 4 * tolerance, (seed, error, tolerance)
        if layer_cls is ImplicitMultiply:
            # The former tolerance (rtol = atol = 2e-2) let a dropped
            # multiply pass: |x * m - x| = |x| |m - 1| is well under 2e-2.
            np.testing.assert_allclose(dropped, reference, rtol=2e-2, atol=2e-2)
