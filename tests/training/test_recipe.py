"""Recipes reproduce the official hyperparameter files and reject bad input."""

import pathlib

import pytest
import yaml

from yolor_keras.training.recipe import load_recipe
from yolor_keras.training.recipe import recipe_from_dict

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "main"

# recipe file -> official hyperparameter file it reproduces
OFFICIAL = {
    "scratch_1280.yaml": "hyp.scratch.1280.yaml",
    "scratch_640.yaml": "hyp.scratch.640.yaml",
    "finetune_1280.yaml": "hyp.finetune.1280.yaml",
}


@pytest.mark.parametrize("recipe_file, official_file", sorted(OFFICIAL.items()))
def test_recipes_reproduce_the_official_hyperparameters(recipe_file, official_file):
    official_path = REFERENCE / official_file
    if not official_path.exists():
        import os

        message = f"official hyperparameter files not found at {REFERENCE}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    official = yaml.safe_load(official_path.read_text())
    hyp = load_recipe(REPO / "recipes" / recipe_file).hyp
    # iou_t is unused by the official loss; everything else must match.
    compared = {key: value for key, value in official.items() if key != "iou_t"}
    assert {key: hyp[key] for key in compared} == compared


def test_unknown_keys_and_wrong_types_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_zero'\].*optimizer"):
        recipe_from_dict({"optimizer": {"lr_zero": 0.1}}, source="r.yaml")
    with pytest.raises(ValueError, match=r"r.yaml: `train.epochs` must be int"):
        recipe_from_dict({"train": {"epochs": "ten"}}, source="r.yaml")
    with pytest.raises(ValueError, match=r"r.yaml: section `augment`.*'mosaic' is a probability"):
        recipe_from_dict({"augment": {"mosaic": 2.0}}, source="r.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")
