"""The multi-task recipe file and its typed loader."""

import pathlib

import pytest
import yaml

from yolor_keras.tasks.multi_task_recipe import load_multi_task_recipe
from yolor_keras.tasks.multi_task_recipe import multi_task_recipe_from_dict

RECIPE = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "multi_task_synthetic.yaml"


def test_the_shipped_recipe_builds_the_model_it_describes():
    recipe = load_multi_task_recipe(RECIPE)
    assert recipe.implicit == {
        head: {"add": "vector", "multiply": "vector"}
        for head in ("detection", "classification", "embedding")
    }
    assert recipe.optimizer.warmup_min_steps == 25
    model = recipe.build_model(num_classes=5, loss_scale=16.0)
    assert model.heads == ("detection", "classification", "embedding")
    assert model.loss_weights == {"detection": 1.0, "classification": 0.2, "embedding": 0.1}
    assert (model.embedding_dim, model.head_width, model.loss_scale) == (64, 128, 16.0)
    assert model.width_multiplier == 0.125 and model.temperature == 0.1


def test_heads_section_selects_heads_and_forms(tmp_path):
    data = yaml.safe_load(RECIPE.read_text())
    data["heads"] = {
        "embedding": "none",
        "classification": {"add": "network", "multiply": "factorization"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_multi_task_recipe(path)
    model = recipe.build_model(num_classes=5)
    assert model.heads == ("classification", "embedding")
    assert model.implicit == {
        "classification": {"add": "network", "multiply": "factorization"},
        "embedding": {"add": None, "multiply": None},
    }
    # A copy with other heads, e.g. for an ablation.
    assert recipe.with_heads({"detection": None}).implicit == {
        "detection": {"add": None, "multiply": None}
    }


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"model": {"widht_multiplier": 0.5}},
            r"unknown key\(s\) \['widht_multiplier'\] in section `model`",
        ),
        ({"train": {"epochs": "ten"}}, "`train.epochs` must be int"),
        ({"heads": {"detection": "matrix"}}, "section `heads`.*'matrix'"),
        ({"heads": {}}, "at least one"),
        ({"model": {"image_size": 96}}, "multiple of 64"),
        ({"loss": {"weights": {"segmentation": 1.0}}}, "loss.weights"),
        ({"schedule": {}}, "unknown section"),
        ({"model": {"preset": "yolor_tiny"}}, "Unknown YOLOR preset"),
    ],
)
def test_bad_recipes_name_the_file_and_field(data, message):
    with pytest.raises(ValueError, match=message) as error:
        multi_task_recipe_from_dict(data, source="bad.yaml")
    assert "bad.yaml" in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_multi_task_recipe(tmp_path / "nothing.yaml")
