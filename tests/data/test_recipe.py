"""AugmentationRecipe: the official hyp files and clear errors."""

import os

import pytest

from yolor_keras.data import AugmentationRecipe

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference", "main")


def test_defaults_are_hyp_scratch_1280():
    path = os.path.join(REFERENCE, "hyp.scratch.1280.yaml")
    if not os.path.isfile(path):
        pytest.skip("the shared reference files are not next to this checkout")
    assert AugmentationRecipe.from_yaml(path) == AugmentationRecipe()


def test_from_dict_reads_augmentation_keys_and_ignores_the_rest():
    # Values of hyp.scratch.640.yaml, with optimiser keys mixed in.
    recipe = AugmentationRecipe.from_dict(
        {"lr0": 0.01, "box": 0.05, "translate": 0.1, "scale": 0.9, "mosaic": 1.0}
    )
    assert recipe.translate == 0.1 and recipe.scale == 0.9
    assert recipe.hsv_s == 0.7  # untouched keys keep the defaults
    assert AugmentationRecipe.from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("mosaic", 1.5, "probability"),
        ("fliplr", -0.1, ">= 0"),
        ("scale", 1.0, "< 1"),
        ("degrees", "ten", "must be a number"),
        ("mixup", float("nan"), "finite"),
    ],
)
def test_bad_values_name_the_field(field, value, error):
    with pytest.raises((ValueError, TypeError), match=field):
        AugmentationRecipe.from_dict({field: value})
    with pytest.raises((ValueError, TypeError), match=error):
        AugmentationRecipe.from_dict({field: value})


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "hyp.bad.yaml"
    path.write_text("mosaic: 2.0\n")
    with pytest.raises(ValueError, match="hyp.bad.yaml"):
        AugmentationRecipe.from_yaml(path)
