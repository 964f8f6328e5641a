"""A tiny YOLOR learns the synthetic shapes dataset (slow: minutes of training)."""

import pytest


# The demo's full run: 40 epochs of 480 images at 256 px, about 25 minutes
# on two quiet cores (the suite's default 900 s per test is too short).
@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_tiny_yolor_reaches_map50_of_one_half(tmp_path):
    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.demo import DEMO_DATA
    from yolor_keras.demo import DEMO_MODEL
    from yolor_keras.demo import DEMO_RECIPE
    from yolor_keras.training.recipe import recipe_from_dict
    from yolor_keras.training.trainer import train

    generate_dataset(str(tmp_path / "data"), **DEMO_DATA)
    recipe = recipe_from_dict(DEMO_RECIPE, source="demo recipe")
    result = train(
        str(tmp_path / "data"),
        out_dir=str(tmp_path / "run"),
        recipe=recipe,
        verbose=2,
        **DEMO_MODEL,
    )
    assert result.metrics is not None
    assert result.metrics["mAP50"] >= 0.5, result.metrics
