"""`train` (and `yolor train`) with a multi-head recipe: targets, start weights, scores, resume."""

import json
import math

import keras
import numpy as np
import pytest

from yolor_keras.data import class_presence
from yolor_keras.data import load_source
from yolor_keras.data import read_identities
from yolor_keras.data.synthetic import generate_dataset
from yolor_keras.tasks import YOLORObjectDetector
from yolor_keras.training.recipe import recipe_from_dict
from yolor_keras.training.trainer import extra_targets
from yolor_keras.training.trainer import initial_task

HEADS = {
    "detection": {"implicit": "vector", "loss_weight": 1.0},
    "classification": {"implicit": "network", "loss_weight": 0.5, "hidden_units": 16},
    "embedding": {
        "implicit": "factorization",
        "loss_weight": 0.25,
        "hidden_units": 16,
        "embedding_dim": 8,
    },
}
RECIPE = {
    "train": {"model": "yolor_p6", "image_size": 64, "epochs": 2, "batch_size": 8,
              "nominal_batch_size": 8, "eval_interval": 1},
    "model": {"width_multiplier": 0.125, "depth_multiplier": 0.33, "heads": HEADS},
    "optimizer": {"warmup_min_steps": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_dataset(str(root), num_train=16, num_val=8, image_size=96, seed=2)
    return root


def test_extra_targets_are_the_class_presence_and_identities_of_the_split(shapes):
    source = load_source(str(shapes), split="train", verbose=False)
    targets = extra_targets(str(shapes), "train", ("detection", "classification", "embedding"))
    assert set(targets) == {"classification", "embedding"}
    np.testing.assert_array_equal(targets["classification"](source), class_presence(source))
    # Identities of this split's file, in the source's order.
    identity_of = read_identities(str(shapes / "annotations" / "instances_train.json"))
    expected = [identity_of[sample.image_id] for sample in source.samples]
    np.testing.assert_array_equal(targets["embedding"](source), expected)
    assert extra_targets(str(shapes), "train", ("detection",)) is None
    with pytest.raises(ValueError, match=r"instances_test\.json does not exist"):
        extra_targets(str(shapes), "test", ("embedding",))


def test_a_detectors_weights_start_a_multi_head_task(tmp_path):
    keras.utils.set_random_seed(0)
    detector = YOLORObjectDetector.from_preset(
        "yolor_p6", num_classes=3, width_multiplier=0.125, depth_multiplier=0.33
    )
    for variable in detector.trainable_variables:  # off the initial values, so a copy shows
        variable.assign(np.array(variable) + 0.01)
    path = tmp_path / "detector.keras"
    detector.save(path)
    recipe = recipe_from_dict(RECIPE)
    task = initial_task(recipe, 3, ["a", "b", "c"], weights=str(path))
    assert task.head_names == ("detection", "classification", "embedding")
    assert task.class_names == ["a", "b", "c"]
    images = np.random.default_rng(1).random((2, 64, 64, 3), dtype="float32")
    for got, want in zip(task(images)["detection"], detector(images)):
        np.testing.assert_allclose(got, want, atol=1e-5 * float(np.abs(want).max()))
    # The same heads: the saved task itself.
    same = initial_task(recipe_from_dict({**RECIPE, "model": {}}), 3, "abc", weights=str(path))
    assert same.head_names == ("detection",) and same.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="predicts 3 classes but the dataset has 4"):
        initial_task(recipe, 4, "abcd", weights=str(path))


@pytest.mark.slow
def test_yolor_train_with_a_multi_head_recipe_scores_every_head_and_resumes(shapes, tmp_path):
    import yaml

    from yolor_keras.cli import main
    from yolor_keras.training.callbacks import load_checkpoint

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes), "--recipe", str(recipe), "--out", str(out)]
    assert main(args) == 0
    results = (out / "results.csv").read_text().splitlines()
    header = results[0].split(",")
    # Every head's loss terms and scores are logged.
    for column in ("box", "obj", "cls", "labels", "contrastive", "loss",
                   "val_mAP", "val_mAP50", "val_label_mAP", "val_label_F1", "val_recall_at_1"):  # fmt: skip
        assert column in header, (column, header)
    last = dict(zip(header, results[-1].split(",")))
    assert math.isfinite(float(last["loss"]))
    for name in ("val_mAP50", "val_label_mAP", "val_label_F1", "val_recall_at_1"):
        assert 0.0 <= float(last[name]) <= 1.0, name

    saved = keras.saving.load_model(out / "model.keras")
    assert isinstance(saved, YOLORObjectDetector)
    assert saved.head_names == ("detection", "classification", "embedding")
    assert [head.implicit["add"] for head in saved.heads] == ["vector", "network", "factorization"]
    assert saved.class_names and len(saved.class_names) == saved.num_classes

    # The checkpoint keeps the recipe's loss settings; a resumed run trains the same task on.
    task, state = load_checkpoint(str(out / "checkpoints" / "epoch_001"))
    assert task.loss_settings["loss_weights"] == {
        "detection": 1.0,
        "classification": 0.5,
        "embedding": 0.25,
    }
    assert task.loss_settings["loss_scale"] == 8.0
    assert state["epoch"] == 2
    assert main(args + ["--resume", "--epochs", "3"]) == 0
    state = json.loads((out / "checkpoints" / "epoch_002" / "state.json").read_text())
    assert state["epoch"] == 3 and state["step"] == 6


def test_results_csv_has_a_column_for_every_heads_scores(tmp_path):
    from yolor_keras.training.callbacks import ResultsLog
    from yolor_keras.training.callbacks import score_columns

    columns = score_columns(("detection", "classification", "embedding"))
    assert columns == ["val_mAP", "val_mAP50", "val_label_mAP", "val_label_F1", "val_recall_at_1"]
    assert score_columns(("embedding",)) == ["val_recall_at_1"]
    path = tmp_path / "results.csv"
    # Epoch 0 not evaluated: its scores are empty, and the columns stay for later epochs.
    ResultsLog(str(path), columns).on_epoch_end(0, {"loss": 2.0, "labels": 0.5})
    ResultsLog(str(path), columns).on_epoch_end(
        1, {"loss": 1.5, "labels": 0.25, "val_recall_at_1": 0.75}
    )
    assert path.read_text().splitlines() == [
        "epoch,labels,loss,val_mAP,val_mAP50,val_label_mAP,val_label_F1,val_recall_at_1",
        "0,0.5,2.0,,,,,",
        "1,0.25,1.5,,,,,0.75",
    ]
