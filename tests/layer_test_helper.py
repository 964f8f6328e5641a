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


def check_mixed_precision(layer_cls, init_kwargs, input_shape):
    for policy, compute in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        layer = layer_cls(dtype=policy, **init_kwargs)
        x = np.random.default_rng(2).random((2,) + tuple(input_shape)).astype("float32")
        out = layer(x)
        assert keras.backend.standardize_dtype(out.dtype) == compute, (policy, out.dtype)
        for variable in layer.weights:
            assert variable.dtype == "float32", (policy, variable.path, variable.dtype)
        # The low-precision result must still agree with a float32 run.
        reference = layer_cls.from_config({**layer.get_config(), "dtype": "float32"})
        reference.build(x.shape)
        reference.set_weights(layer.get_weights())
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
            keras.ops.convert_to_numpy(reference(x)),
            rtol=2e-2,
            atol=2e-2,
        )


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
