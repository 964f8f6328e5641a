"""fold(): the deploy form computes what the trained model computes."""

import os
import pathlib

import keras
import numpy as np
import pytest

from yolor_keras.export.folding import fold
from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.layers import ChannelAffine
from yolor_keras.tasks import YOLORObjectDetector

TINY = {"num_classes": 3, "width_multiplier": 0.125, "depth_multiplier": 0.33}
FIXTURES = pathlib.Path(
    os.environ.get("YOLOR_FIXTURES")
    or pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
)


def all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def randomised(name, seed=0):
    """A tiny detector whose BatchNorms and implicit vectors are far from identity."""
    model = YOLORObjectDetector.from_preset(name, **TINY)
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.2, channels))
            layer.moving_mean.assign(rng.normal(0.0, 0.2, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
        elif isinstance(layer, ImplicitAdd):
            layer.implicit.assign(rng.normal(0.0, 0.5, layer.implicit.shape))
        elif isinstance(layer, ImplicitMultiply):
            layer.implicit.assign(rng.uniform(0.5, 1.5, layer.implicit.shape))
    return model


def outputs(model, images):
    return [keras.ops.convert_to_numpy(r) for r in model(images)]


def assert_same_outputs(expected, got, relative=1e-4):
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=relative, atol=relative * np.abs(a).max())


@pytest.mark.parametrize("name", ["yolor_p6", "yolor_p6_paper"])
def test_folded_model_matches_and_has_no_batchnorm_or_implicit_layers(name):
    model = randomised(name)
    before = [np.array(w) for w in model.weights]
    images = np.random.default_rng(1).random((2, 128, 128, 3)).astype("float32")
    expected = outputs(model, images)

    folded = fold(model)

    assert folded is not model and folded.deploy and not model.deploy
    assert_same_outputs(expected, outputs(folded, images))
    layers = list(all_layers(folded))
    assert not [
        layer.name for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert not [layer.name for layer in layers if isinstance(layer, ImplicitKnowledge)]
    affine = [layer for layer in layers if isinstance(layer, ChannelAffine)]
    # Only the paper branch's CSP BatchNorms (over a concat with a residual
    # branch) have no conv to fold into.
    assert bool(affine) == (name == "yolor_p6_paper")
    assert all(layer.name.endswith("-bn") for layer in affine)
    assert len(folded.weights) < len(model.weights)
    # The trained model is untouched.
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.array(new))
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(model))


def test_folded_model_saves_and_loads(tmp_path):
    folded = fold(randomised("yolor_csp", seed=2))
    path = os.path.join(tmp_path, "deploy.keras")
    folded.save(path)
    restored = keras.saving.load_model(path)
    assert restored.deploy
    images = np.random.default_rng(3).random((1, 64, 64, 3)).astype("float32")
    for a, b in zip(outputs(folded, images), outputs(restored, images)):
        np.testing.assert_array_equal(a, b)


def test_fold_rejects_deploy_models_and_other_objects():
    deploy = YOLORObjectDetector.from_preset("yolor_csp", deploy=True, **TINY)
    with pytest.raises(ValueError, match="already in deploy form"):
        fold(deploy)
    with pytest.raises(ValueError, match="needs a YOLORObjectDetector"):
        fold(keras.Sequential([keras.layers.Dense(2)]))


def test_folded_official_checkpoint_still_matches_official_outputs():
    if not (FIXTURES / "tiny_yolor_p6_paper.pt").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"parity fixtures not found at {FIXTURES}")
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    from yolor_keras.convert import convert_checkpoint

    folded = fold(convert_checkpoint(FIXTURES / "tiny_yolor_p6_paper.pt", "yolor_p6_paper"))
    image = np.load(FIXTURES / "tiny_input.npz")["x"].transpose(0, 2, 3, 1)
    reference = np.load(FIXTURES / "tiny_yolor_p6_paper_output.npz")
    for level, raw in enumerate(outputs(folded, image)):
        expected = reference[f"raw_{level}_f64"].transpose(0, 2, 3, 1, 4)
        assert np.abs(raw - expected).max() <= 3e-2 * expected.std()
