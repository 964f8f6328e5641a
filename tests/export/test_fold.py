"""fold(): the deploy form computes what the trained task computes, for every head."""

import os
import pathlib

import keras
import numpy as np
import pytest

from yolor_keras.export.folding import fold
from yolor_keras.layers import ChannelAffine
from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.models import ClassificationHead
from yolor_keras.models import DetectionHead
from yolor_keras.models import EmbeddingHead
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


def perturbed(model, seed):
    """Random BatchNorm statistics and implicit parameters, so that folds show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32")
            )
            layer.gamma.assign(rng.uniform(0.1, 0.3, layer.gamma.shape).astype("float32"))
        if isinstance(layer, ImplicitKnowledge):
            for weight in layer.weights:
                weight.assign(weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32"))
    return model


@pytest.mark.parametrize(
    "preset, implicit",
    [
        (
            "yolor_p6",
            {
                "detection": "network",
                "classification": {"add": "factorization", "multiply": None},
                "embedding": "vector",
            },
        ),
        (
            "yolor_p6_paper",
            {
                "detection": {"add": None, "multiply": "factorization"},
                "classification": "network",
                "embedding": {"add": "factorization", "multiply": "network"},
            },
        ),
    ],
)
def test_fold_of_a_task_with_every_head_keeps_every_output(preset, implicit):
    heads = [
        DetectionHead(3, implicit=implicit["detection"]),
        ClassificationHead(4, hidden_units=32, implicit=implicit["classification"]),
        EmbeddingHead(16, hidden_units=32, implicit=implicit["embedding"]),
    ]
    model = perturbed(
        YOLORObjectDetector.from_preset(
            preset, heads=heads, width_multiplier=0.125, depth_multiplier=0.33
        ),
        seed=1,
    )
    folded = fold(model)
    kinds = {type(layer) for layer in folded._flatten_layers()}
    assert keras.layers.BatchNormalization not in kinds
    assert not any(issubclass(kind, ImplicitKnowledge) for kind in kinds)
    assert folded.count_params() < model.count_params()
    assert folded.head_names == model.head_names == ("detection", "classification", "embedding")
    images = np.random.default_rng(5).random((2, 128, 128, 3), dtype="float32")
    want, got = model(images), folded(images)
    assert sorted(got) == sorted(want) == ["classification", "detection", "embedding"]
    for name in want:
        for have, expected in zip(keras.tree.flatten(got[name]), keras.tree.flatten(want[name])):
            expected = keras.ops.convert_to_numpy(expected)
            scale = max(float(np.abs(expected).max()), 1.0)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(have), expected, atol=1e-5 * scale, err_msg=name
            )
    with pytest.raises(ValueError, match="already in deploy form"):
        fold(folded)
