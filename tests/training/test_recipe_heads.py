"""The recipe's ``model`` section: which heads, their implicit knowledge, loss weights.

One loader reads every section (`dataclass_from_dict`); these tests check
the heads section and what it builds: the task's heads and the loss
settings `compile` receives, against values written out by hand.
"""

import pathlib

import keras
import numpy as np
import pytest
import yaml

from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training import YOLORSGD
from yolor_keras.training.recipe import build_heads
from yolor_keras.training.recipe import load_recipe
from yolor_keras.training.recipe import loss_settings
from yolor_keras.training.recipe import recipe_from_dict

REPO = pathlib.Path(__file__).resolve().parents[2]
MULTI_TASK = REPO / "recipes" / "multi_task_synthetic.yaml"
VECTOR = {"add": "vector", "multiply": "vector"}


def test_default_recipe_is_a_detector_with_official_loss_settings():
    recipe = recipe_from_dict({})
    assert recipe.head_names == ("detection",)
    # hyp.scratch.1280: box 0.05, cls 0.5, obj 1.0, anchor_t 4; batch 64 = nominal 64.
    assert loss_settings(recipe) == {
        "box_gain": 0.05, "obj_gain": 1.0, "cls_gain": 0.5, "anchor_t": 4.0,
        "cls_pos_weight": 1.0, "obj_pos_weight": 1.0, "focal_gamma": 0.0,
        "loss_scale": 64.0, "loss_weights": {"detection": 1.0},
    }  # fmt: skip


@pytest.mark.parametrize("batch, nominal, scale", [(16, 64, 64.0), (24, 64, 72.0), (64, 16, 64.0)])
def test_loss_scale_is_the_batch_times_the_official_accumulation(batch, nominal, scale):
    # Official train.py: accumulate = max(round(nbs / bs), 1); one step sums bs * accumulate images.
    recipe = recipe_from_dict({"train": {"batch_size": batch, "nominal_batch_size": nominal}})
    assert loss_settings(recipe)["loss_scale"] == scale


def test_the_shipped_multi_task_recipe_builds_the_task_it_describes():
    recipe = load_recipe(MULTI_TASK)
    assert recipe.head_names == ("detection", "classification", "embedding")
    assert recipe.optimizer.warmup_min_steps == 25
    heads = build_heads(recipe, num_classes=5)
    assert [head.name for head in heads] == ["detection", "classification", "embedding"]
    assert all(head.implicit == VECTOR for head in heads)
    detection, classification, embedding = heads
    assert detection.num_classes == 5
    # The classification head predicts which of the dataset's classes an image holds.
    assert (classification.num_labels, classification.hidden_units) == (5, 128)
    assert (embedding.embedding_dim, embedding.hidden_units) == (64, 128)
    settings = loss_settings(recipe)
    assert settings["loss_weights"] == {"detection": 1.0, "classification": 0.2, "embedding": 0.1}
    assert (settings["label_pos_weight"], settings["temperature"]) == (1.0, 0.1)
    assert settings["loss_scale"] == 16.0


def test_the_loss_weights_of_the_recipe_weigh_the_tasks_loss():
    """compute_loss = mean over samples of sum_head weight * L_head, times the loss scale."""
    recipe = recipe_from_dict(
        {
            "train": {
                "model": "yolor_csp",
                "image_size": 64,
                "batch_size": 2,
                "nominal_batch_size": 6,
            },
            "model": {
                "width_multiplier": 0.125,
                "depth_multiplier": 0.33,
                "heads": {
                    "classification": {"loss_weight": 0.25, "hidden_units": 8, "pos_weight": 2.0},
                    "embedding": {
                        "loss_weight": 0.5,
                        "hidden_units": 8,
                        "embedding_dim": 4,
                        "temperature": 0.5,
                    },
                },
            },
        }
    )
    keras.utils.set_random_seed(0)
    task = YOLORObjectDetector.from_preset(
        "yolor_csp", width_multiplier=0.125, depth_multiplier=0.33, heads=build_heads(recipe, 3)
    )
    task.compile(optimizer=YOLORSGD(), **loss_settings(recipe))
    logits = np.array([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0], [0.3, 0.0, 1.0]], "float32")
    labels = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 0]], "float32")
    embeddings = np.array([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0.6, 0.8, 0]], "float32")
    identities = np.array([3, 3, 5], "int32")
    loss = task.compute_loss(
        y={"classification": labels, "embedding": identities},
        y_pred={"classification": logits, "embedding": embeddings},
    )
    # By hand: BCE with positive weight 2, mean over labels.
    p = 1 / (1 + np.exp(-logits))
    bce = -(2.0 * labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(axis=1)
    # Supervised contrastive, temperature 0.5: images 0 and 1 are each other's
    # positive, image 2 (no positive) is only a negative; the per-sample
    # values are L_i * batch / anchors, so that their mean is that of L_i.
    s = embeddings @ embeddings.T / 0.5
    anchor = [-(s[i, 1 - i] - np.log(np.exp(s[i, 1 - i]) + np.exp(s[i, 2]))) for i in (0, 1)]
    contrastive = np.array([anchor[0] * 1.5, anchor[1] * 1.5, 0.0])
    # accumulate = round(6 / 2) = 3: the loss scale is 6.
    expected = (0.25 * bce + 0.5 * contrastive).mean() * 6.0
    assert min(bce.min(), min(anchor)) > 0.05  # both terms are in play
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_heads_section_selects_heads_and_forms_in_canonical_order(tmp_path):
    data = yaml.safe_load(MULTI_TASK.read_text())
    # Listed out of order; a bare form is short for {implicit: FORM}.
    data["model"]["heads"] = {
        "embedding": "none",
        "classification": {"implicit": {"add": "network", "multiply": "factorization"}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    assert recipe.head_names == ("classification", "embedding")
    heads = build_heads(recipe, num_classes=4)
    assert [head.implicit for head in heads] == [
        {"add": "network", "multiply": "factorization"},
        {"add": None, "multiply": None},
    ]
    # One use left out of the dict gets YOLOR's own choice, the vector.
    partial = recipe_from_dict(
        {"model": {"heads": {"detection": {"implicit": {"add": "network"}}}}}
    )
    assert build_heads(partial, 2)[0].implicit == {"add": "network", "multiply": "vector"}
    # A copy with other heads (e.g. for an ablation), checked the same way.
    assert recipe.with_heads({"detection": None}).head_names == ("detection",)
    assert build_heads(recipe.with_heads({"detection": None}), 2)[0].implicit == {
        "add": None,
        "multiply": None,
    }
    with pytest.raises(ValueError, match="model.heads.detection.implicit"):
        recipe.with_heads({"detection": "matrix"})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"widht_multiplier": 0.5}}, r"unknown key\(s\) \['widht_multiplier'\] in section `model`"),
        ({"model": {"heads": {"detection": "matrix"}}}, r"model\.heads\.detection\.implicit: .*'matrix'"),
        (
            {"model": {"heads": {"detection": {"implicit": {"shift": "vector"}}}}},
            r"model\.heads\.detection\.implicit: unknown key\(s\) \['shift'\]",
        ),
        (
            {"model": {"heads": {"detection": {"implicit": {"add": "mlp"}}}}},
            r"model\.heads\.detection\.implicit\['add'\]",
        ),
        ({"model": {"heads": {"segmentation": "vector"}}}, r"unknown head\(s\) \['segmentation'\]"),
        ({"model": {"heads": {}}}, "at least one"),
        ({"model": {"heads": {"detection": {"embedding_dim": 8}}}}, r"section `model.heads.detection`"),
        ({"model": {"heads": {"embedding": {"loss_weight": -1}}}}, "model.heads.embedding.loss_weight must be >= 0"),
        ({"model": {"heads": {"embedding": {"temperature": "warm"}}}}, "`model.heads.embedding.temperature` must be float"),
        ({"model": {"heads": {"embedding": {}}}, "train": {"batch_size": 1}}, "batch_size must be >= 2"),
        ({"train": {"image_size": 96}}, "multiple of 64, the largest stride of yolor_p6"),
        ({"train": {"model": "yolor_tiny"}}, "Unknown YOLOR preset"),
        ({"schedule": {}}, "unknown section"),
    ],
)  # fmt: skip
def test_bad_recipes_name_the_file_and_field(data, message):
    with pytest.raises(ValueError, match=message) as error:
        recipe_from_dict(data, source="bad.yaml")
    assert str(error.value).startswith("bad.yaml: ")


def test_image_size_check_uses_the_models_largest_stride():
    # 96 = 3 x 32: valid for the CSP family (largest stride 32), not for P6 (64).
    assert (
        recipe_from_dict({"train": {"model": "yolor_csp", "image_size": 96}}).train.image_size == 96
    )
    with pytest.raises(ValueError, match="multiple of 64"):
        recipe_from_dict({"train": {"model": "yolor_w6", "image_size": 96}})
