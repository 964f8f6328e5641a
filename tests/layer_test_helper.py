"""A reusable battery of checks that every custom layer must pass.

It follows keras-hub's layer test: config and JSON round trip, symbolic vs
eager output shapes, one `fit` step that must move the chosen weights,
`.keras` save/load with identical outputs, and mixed-precision dtypes.
"""

import json
import os

import keras
import numpy as np


def _fresh(layer_cls, init_kwargs):
    return layer_cls(**init_kwargs)


def check_config_round_trip(layer_cls, init_kwargs, input_shape):
    layer = _fresh(layer_cls, init_kwargs)
    layer.build((None,) + tuple(input_shape))
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, f"get_config lost {key}: {config[key]} != {value}"
    assert layer_cls.from_config(config).get_config() == config

    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(restored) is layer_cls
    assert restored.get_config() == config


def check_output_shapes(layer_cls, init_kwargs, input_shape, expected_shape):
    symbolic = _fresh(layer_cls, init_kwargs)(keras.Input(input_shape, batch_size=2))
    eager_layer = _fresh(layer_cls, init_kwargs)
    eager = eager_layer(np.random.rand(2, *input_shape).astype("float32"))
    assert tuple(symbolic.shape) == (2,) + tuple(expected_shape)
    assert tuple(eager.shape) == (2,) + tuple(expected_shape)
    assert tuple(eager_layer.compute_output_shape((2,) + tuple(input_shape))) == (
        (2,) + tuple(expected_shape)
    )


def check_fit_step_moves_weights(layer_cls, init_kwargs, input_shape, weight_names):
    layer = _fresh(layer_cls, init_kwargs)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {v.path: np.array(v) for v in layer.trainable_weights}
    assert before, f"{layer_cls.__name__} has no trainable weights"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4,) + tuple(input_shape)).astype("float32")
    y = rng.normal(size=(4,) + tuple(model.output.shape[1:])).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    moved = {
        v.path.split("/")[-1]
        for v in layer.trainable_weights
        if not np.allclose(before[v.path], np.array(v))
    }
    missing = set(weight_names) - moved
    assert not missing, f"no gradient reached {sorted(missing)} of {layer_cls.__name__}"


def check_saving(layer_cls, init_kwargs, input_shape, tmp_path):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, _fresh(layer_cls, init_kwargs)(inputs))
    x = np.random.default_rng(1).random((2,) + tuple(input_shape)).astype("float32")
    path = os.path.join(tmp_path, "layer_model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(restored(x))
    )


# Unit roundoff (half the machine epsilon) of each compute dtype: float16
# keeps 11 significant bits, bfloat16 only 8.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}

# A layer that rounds its input, its weights and its result once each is off
# by at most about 3 roundoffs of the largest activation; 4 leaves room for
# an implicit vector computed by a small matmul (network / factorization
# forms measured at most 2.1 over 20 random initialisations).
ROUNDOFFS_ALLOWED = 4.0


def mixed_precision_tolerance(compute_dtype, reference):
    """The absolute tolerance of a low-precision run against float32.

    It scales with the largest activation, so it stays far below the
    implicit vectors' own size (stddev 0.02): an output that skipped
    ImplicitAdd (x instead of x + a) or ImplicitMultiply (x instead of x * m)
    is off by about 0.02 * |x|, several times this bound.
    """
    magnitude = float(np.max(np.abs(reference)))
    return ROUNDOFFS_ALLOWED * UNIT_ROUNDOFF[compute_dtype] * magnitude


def assert_matches_float32(output, reference, compute_dtype):
    """Asserts a low-precision output agrees with the float32 reference."""
    output = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(output, "float32")))
    reference = np.asarray(keras.ops.convert_to_numpy(reference), "float32")
    np.testing.assert_allclose(
        output, reference, rtol=0, atol=mixed_precision_tolerance(compute_dtype, reference)
    )


def check_mixed_precision(layer_cls, init_kwargs, input_shape):
    for policy, compute in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        layer = layer_cls(dtype=policy, **init_kwargs)
        x = np.random.default_rng(2).random((2,) + tuple(input_shape)).astype("float32")
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == compute, (policy, out.dtype)
        for variable in layer.weights:
            assert variable.dtype == "float32", (policy, variable.path, variable.dtype)
        # The low-precision result must agree with a float32 run to within
        # the rounding of the compute dtype.
        reference = layer_cls.from_config({**layer.get_config(), "dtype": "float32"})
        reference.build(x.shape)
        reference.set_weights(layer.get_weights())
        assert_matches_float32(out, reference(x), compute)


def run_layer_test(
    layer_cls, init_kwargs, input_shape, expected_output_shape, weight_names, tmp_path
):
    """Runs every check above on one layer configuration.

    Args:
        layer_cls: the layer class under test.
        init_kwargs: constructor arguments (must survive `get_config`).
        input_shape: input shape without the batch axis.
        expected_output_shape: output shape without the batch axis.
        weight_names: names of weights a fit step must update.
        tmp_path: a folder for the `.keras` file.
    """
    check_config_round_trip(layer_cls, init_kwargs, input_shape)
    check_output_shapes(layer_cls, init_kwargs, input_shape, expected_output_shape)
    check_fit_step_moves_weights(layer_cls, init_kwargs, input_shape, weight_names)
    check_saving(layer_cls, init_kwargs, input_shape, tmp_path)
    check_mixed_precision(layer_cls, init_kwargs, input_shape)
