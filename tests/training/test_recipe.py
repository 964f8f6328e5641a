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


# The official paper schedule (README of the `paper` branch), as facts:
# script, --epochs, --hyp, --weights (the checkpoint continued from).
OFFICIAL_PAPER_SCHEDULE = [
    ("train.py", 300, "hyp.scratch.1280.yaml", ""),
    ("tune.py", 450, "hyp.finetune.1280.yaml", "runs/train/yolor-p6/weights/last_298.pt"),
    ("train.py", 450, "hyp.finetune.1280.yaml", "runs/train/yolor-p6-tune/weights/epoch_424.pt"),
]


def test_paper_plan_lays_out_the_official_three_stages():
    from yolor_keras.cli import build_parser
    from yolor_keras.training.recipe import load_stage_plan

    plan = load_stage_plan(REPO / "recipes" / "paper_p6.yaml")
    assert len(plan) == len(OFFICIAL_PAPER_SCHEDULE)
    parser, _ = build_parser()
    for index, (stage, (script, epochs, hyp_file, weights)) in enumerate(
        zip(plan, OFFICIAL_PAPER_SCHEDULE)
    ):
        assert (stage.model, stage.image_size, stage.batch_size) == ("yolor_p6_paper", 1280, 64)
        assert stage.epochs == epochs
        assert stage.stage == ("tune" if script == "tune.py" else "train")
        if weights:
            # last_298.pt / epoch_424.pt: the checkpoint after that 0-based epoch of the previous stage.
            epoch = int(weights.rsplit("_", 1)[1].split(".")[0])
            assert stage.continue_from == f"{plan[index - 1].out}/checkpoints/epoch_{epoch:03d}"
            assert epoch in plan[index - 1].save_epochs
        else:
            assert stage.continue_from is None
        official_path = REFERENCE.parent / "paper" / hyp_file
        if official_path.exists():
            official = yaml.safe_load(official_path.read_text())
            hyp = load_recipe(stage.recipe).hyp
            compared = {key: value for key, value in official.items() if key != "iou_t"}
            assert {key: hyp[key] for key in compared} == compared, stage.name
        # Each stage is a valid `yolor train` command.
        args = parser.parse_args(stage.command("coco"))
        assert (args.epochs, args.batch_size, args.image_size, args.stage) == (
            epochs,
            64,
            1280,
            stage.stage,
        )
        assert args.continue_from == stage.continue_from
    assert plan[0].command("coco")[-2:] == ["--save-epochs", "298"]


def test_stage_plan_errors_name_the_file_and_stage(tmp_path):
    from yolor_keras.training.recipe import load_stage_plan

    (tmp_path / "r.yaml").write_text("train: {epochs: 3}\n")
    plan = tmp_path / "plan.yaml"
    body = (
        "model: yolor_p6\nimage_size: 64\nbatch_size: 4\nstages:\n"
        "  - {name: a, stage: train, recipe: r.yaml, epochs: 3, out: runs/a, save_epochs: [1]}\n"
        "  - {name: b, stage: tune, recipe: r.yaml, epochs: 5, out: runs/b, continue_from: {stage: a, epoch: %s}}\n"
    )
    plan.write_text(body % 1)
    assert load_stage_plan(plan)[1].continue_from == "runs/a/checkpoints/epoch_001"
    plan.write_text(body % 0)
    with pytest.raises(
        ValueError,
        match=r"plan.yaml: stages\[1\]: continues from epoch 0 of 'a', which keeps only \[1\]",
    ):
        load_stage_plan(plan)
    plan.write_text(body.replace("stage: tune", "stage: finetune") % 1)
    with pytest.raises(ValueError, match=r"stages\[1\]: `stage` must be one of"):
        load_stage_plan(plan)
