"""`train_multi_task` end to end on a tiny synthetic dataset (slow: traces `fit`)."""

import math

import pytest

from yolor_keras.tasks import YOLORMultiTask
from yolor_keras.tasks.multi_task_recipe import multi_task_recipe_from_dict
from yolor_keras.tasks.multi_task_training import ensure_synthetic_dataset
from yolor_keras.tasks.multi_task_training import train_multi_task


@pytest.mark.slow
def test_recipe_to_scores_on_every_head(tmp_path):
    recipe = multi_task_recipe_from_dict(
        {
            "model": {"image_size": 64, "head_width": 16, "embedding_dim": 8},
            "heads": {
                "detection": "vector",
                "classification": "network",
                "embedding": "factorization",
            },
            "train": {"epochs": 2, "batch_size": 8, "nominal_batch_size": 8},
            "optimizer": {"warmup_min_steps": 2},
            "data": {"num_train": 16, "num_val": 8, "image_size": 96},
        }
    )
    data_dir = ensure_synthetic_dataset(tmp_path / "shapes", recipe.data, verbose=False)
    # Written once: a second call finds it.
    assert ensure_synthetic_dataset(data_dir, recipe.data, verbose=False) == data_dir
    result = train_multi_task(recipe, data_dir, verbose=0)
    assert isinstance(result.model, YOLORMultiTask)
    assert result.model.loss_scale == 8.0  # batch x accumulation, as for the detector
    losses = result.history.history["loss"]
    assert len(losses) == 2 and all(math.isfinite(value) for value in losses)
    assert set(result.metrics) == {"mAP50", "mAP", "label_mAP", "label_F1", "recall@1"}
    for name, value in result.metrics.items():
        assert 0.0 <= value <= 1.0, name
