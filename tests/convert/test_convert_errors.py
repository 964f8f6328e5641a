"""Conversion refuses bad input with clear errors and never leaves partial files."""

import os

import keras
import numpy as np
import pytest
import torch

from yolor_keras.cli import main as yolor_main
from yolor_keras.convert import convert_checkpoint
from yolor_keras.convert import read_checkpoint


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_wrong_branch(fixtures_dir, tmp_path):
    out = tmp_path / "out.keras"
    with pytest.raises(
        ValueError, match=r"paper-branch checkpoint but 'yolor_p6' is a main-branch model"
    ):
        convert_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt", "yolor_p6", out_path=out)
    assert _leftovers(tmp_path) == []


def test_wrong_main_variant_names_the_right_one(fixtures_dir):
    with pytest.raises(
        ValueError, match=r"does not hold a yolor_p6 model; its weights match \['yolor_csp'\]"
    ):
        convert_checkpoint(fixtures_dir / "tiny_yolor_csp_main.pt", "yolor_p6")


def test_wrong_paper_variant_names_the_right_one(fixtures_dir):
    with pytest.raises(
        ValueError, match=r"does not hold a yolor_w6_paper model.*\['yolor_p6_paper'\]"
    ):
        convert_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt", "yolor_w6_paper")


def test_class_count_mismatch(fixtures_dir):
    with pytest.raises(ValueError, match="predicts 3 classes, not the requested 80"):
        convert_checkpoint(fixtures_dir / "tiny_yolor_csp_main.pt", "yolor_csp", num_classes=80)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        read_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "optimizer": None}, other)
    with pytest.raises(ValueError, match=r"not a YOLOR checkpoint.*\['epoch', 'optimizer'\]"):
        read_checkpoint(other)


def test_missing_unexpected_and_misshaped_weights_are_listed(fixtures_dir, tmp_path):
    state = dict(read_checkpoint(fixtures_dir / "tiny_yolor_csp_main.pt").state_dict)
    removed = [f"module_list.{i}.Conv2d.weight" for i in (0, 1, 2, 3, 5, 6, 8, 9, 10, 12, 13, 15)]
    for key in removed:
        del state[key]
    state["module_list.999.Conv2d.weight"] = np.zeros((8, 8, 1, 1), "float32")
    state["module_list.17.Conv2d.weight"] = np.zeros((8, 3, 1, 1), "float32")
    path = tmp_path / "broken.pt"
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}}, path)
    out = tmp_path / "broken.keras"
    with pytest.raises(ValueError) as error:
        convert_checkpoint(path, "yolor_csp", out_path=out)
    message = str(error.value)
    assert "12 model weights missing" in message
    assert ", ".join(removed[:10]) in message and "and 2 more" in message
    assert removed[10] not in message
    assert "1 checkpoint" in message and "module_list.999.Conv2d.weight" in message
    assert "1 shape mismatches: module_list.17.Conv2d.weight" in message
    assert not out.exists()
    assert _leftovers(tmp_path) == ["broken.pt"]


def test_failed_save_leaves_nothing(fixtures_dir, tmp_path, monkeypatch):
    def broken_save(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    out = tmp_path / "model.keras"
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(fixtures_dir / "tiny_yolor_p6_paper.pt", "yolor_p6_paper", out_path=out)
    assert _leftovers(tmp_path) == []


def test_cli_converts_to_a_loadable_keras_file(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "tiny_csp.keras"
    status = yolor_main(
        [
            "convert",
            str(fixtures_dir / "tiny_yolor_csp_main.pt"),
            "--model",
            "yolor_csp",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert "833,400 parameters" in capsys.readouterr().out
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)  # not left private like a temp file
    restored = keras.saving.load_model(out)
    image = np.load(fixtures_dir / "tiny_input.npz")["x"].transpose(0, 2, 3, 1)
    reference = np.load(fixtures_dir / "tiny_yolor_csp_main_output.npz")["raw_0_f64"]
    got = keras.ops.convert_to_numpy(restored(image)[0])
    assert np.abs(got - reference.transpose(0, 2, 3, 1, 4)).max() <= 0.006


def test_cli_writes_a_preset_folder_that_from_preset_loads(fixtures_dir, tmp_path, capsys):
    from yolor_keras.models import YOLORBackbone
    from yolor_keras.tasks import YOLORObjectDetector

    preset = tmp_path / "tiny_p6_paper"
    status = yolor_main(
        [
            "convert",
            str(fixtures_dir / "tiny_yolor_p6_paper.pt"),
            "--model",
            "yolor_p6_paper",
            "--out",
            str(tmp_path / "tiny.keras"),
            "--preset",
            str(preset),
        ]
    )
    assert status == 0
    assert "Wrote the preset folder" in capsys.readouterr().out
    task = YOLORObjectDetector.from_preset(preset)
    image = np.load(fixtures_dir / "tiny_input.npz")["x"].transpose(0, 2, 3, 1)
    reference = np.load(fixtures_dir / "tiny_yolor_p6_paper_output.npz")
    for level, got in enumerate(task(image)):
        expected = reference[f"raw_{level}_f64"].transpose(0, 2, 3, 1, 4)
        assert np.abs(keras.ops.convert_to_numpy(got) - expected).max() <= 0.004
    backbone = YOLORBackbone.from_preset(preset)
    assert backbone.count_params() == task.backbone.count_params()


def test_cli_reports_errors_without_a_traceback(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "x.keras"
    status = yolor_main(
        [
            "convert",
            str(fixtures_dir / "tiny_yolor_p6_paper.pt"),
            "--model",
            "yolor_csp",
            "--out",
            str(out),
        ]
    )
    assert status == 2
    assert "yolor convert: error:" in capsys.readouterr().err
    assert not out.exists()
