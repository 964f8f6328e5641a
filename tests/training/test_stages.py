"""The paper's three-stage schedule: 300 epochs from scratch, `tune.py` to 450, a fine-tune to 450.

The reference rates are computed here from the official formulas and the
official loop's mechanics (``train.py``/``tune.py`` on the `paper` branch):

- ``lf(x) = ((1 + cos(x * pi / epochs)) / 2) * (1 - lrf) + lrf`` (LambdaLR);
- warmup while ``ni <= nw``, ``nw = max(round(warmup_epochs * nb), 1000)``,
  ``ni = i + nb * epoch``: every group's rate is ``interp(ni, [0, nw],
  [start, lr0 * lf(epoch)])`` with start ``warmup_bias_lr`` for biases and 0
  otherwise, and momentum ``interp(ni, [0, nw], [warmup_momentum, momentum])``;
- after warmup the rate is whatever the scheduler set: LambdaLR sets
  ``lr0 * lf(last_epoch)`` at each ``scheduler.step()`` (once per epoch,
  ``last_epoch`` 0 at construction), and a run started from a checkpoint
  with optimizer state loads the checkpoint's rates and momentum and sets
  ``last_epoch = start_epoch - 1`` before its first epoch.

The schedules under test are those `train` builds: `build_optimizer` for the
new total, re-based by `continued_schedules` onto the previous stage's
optimizer.
"""

import math

import keras
import numpy as np
import pytest

from yolor_keras.training.optimizer import build_optimizer
from yolor_keras.training.schedules import continued_schedules

NB = 1833  # COCO train2017 at batch 64: ceil(117266 / 64) batches per epoch
SCRATCH = dict(
    lr0=0.01,
    lrf=0.2,
    momentum=0.937,
    weight_decay=5e-4,
    warmup_epochs=3.0,
    warmup_momentum=0.8,
    warmup_bias_lr=0.1,
)
FINETUNE = dict(SCRATCH)  # hyp.finetune.1280 has the same optimizer values


class OfficialRun:
    """The official loop's group rates and momentum, stepped as it runs.

    Args:
        hyp: the stage's hyperparameters.
        epochs: the stage's ``--epochs``.
        nb: batches per epoch.
        start_epoch: ``ckpt['epoch'] + 1`` for a checkpoint with optimizer
            state, else 0.
        loaded: (weights rate, bias rate, momentum) of the checkpoint's
            optimizer groups, or None for a run from scratch.
    """

    def __init__(self, hyp, epochs, nb=None, start_epoch=0, loaded=None):
        self.hyp, self.epochs, self.start_epoch, self.loaded = hyp, epochs, start_epoch, loaded
        self.nb = NB if nb is None else nb
        self.nw = max(round(hyp["warmup_epochs"] * self.nb), 1000)

    def lf(self, x):
        return ((1 + math.cos(x * math.pi / self.epochs)) / 2) * (1 - self.hyp["lrf"]) + self.hyp[
            "lrf"
        ]

    def run(self, until_epoch, wanted=()):
        """Runs epochs ``start_epoch .. until_epoch``.

        Returns:
            ({(epoch, i): (weights lr, bias lr, momentum)} for ``wanted``,
            the groups after the last epoch's scheduler step, as saved).
        """
        hyp, lr0 = self.hyp, self.hyp["lr0"]
        if self.loaded is None:
            # LambdaLR's constructor steps once: last_epoch 0, rate lr0 * lf(0).
            last_epoch = 0
            groups = [lr0 * self.lf(0), lr0 * self.lf(0), hyp["momentum"]]
        else:
            # optimizer.load_state_dict(...); scheduler.last_epoch = start_epoch - 1
            last_epoch = self.start_epoch - 1
            groups = list(self.loaded)
        wanted = set(wanted)
        seen = {}
        for epoch in range(self.start_epoch, until_epoch + 1):
            if self.nb * epoch <= self.nw:  # some batches of this epoch warm up
                for i in range(self.nb):
                    ni = i + self.nb * epoch
                    if ni <= self.nw:
                        target = lr0 * self.lf(epoch)
                        groups = [
                            float(np.interp(ni, [0, self.nw], [0.0, target])),
                            float(np.interp(ni, [0, self.nw], [hyp["warmup_bias_lr"], target])),
                            float(
                                np.interp(
                                    ni, [0, self.nw], [hyp["warmup_momentum"], hyp["momentum"]]
                                )
                            ),
                        ]
                    if (epoch, i) in wanted:
                        seen[(epoch, i)] = tuple(groups)
            else:
                for key in wanted:
                    if key[0] == epoch:
                        seen[key] = tuple(groups)
            # scheduler.step(): every group's rate; momentum is left alone.
            last_epoch += 1
            groups[0] = groups[1] = lr0 * self.lf(last_epoch)
        return seen, tuple(groups)


def _value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _ours(optimizer, step):
    return (
        _value(optimizer._learning_rate, step),
        _value(optimizer.bias_learning_rate, step),
        _value(optimizer.momentum, step),
    )


def _continue(hyp, epochs, previous, previous_step, start_epoch):
    """The stage's optimizer as `train(continue_from=...)` builds it."""
    optimizer = build_optimizer(hyp, steps_per_epoch=NB, epochs=epochs, batch_size=64)
    weights, bias, momentum = continued_schedules(
        optimizer, previous, previous_step, start_epoch, NB
    )
    optimizer.learning_rate = weights
    optimizer.bias_learning_rate = bias
    optimizer.momentum = momentum
    return optimizer


def test_three_stages_follow_the_official_rates_and_momentum():
    # Stage 1: train.py, 300 epochs from scratch.
    scratch = build_optimizer(SCRATCH, steps_per_epoch=NB, epochs=300, batch_size=64)
    official_scratch = OfficialRun(SCRATCH, 300)
    scratch_points = [
        (0, 0),
        (0, 1),
        (1, 917),
        (2, 1832),
        (3, 0),
        (3, 1),
        (4, 0),
        (150, 7),
        (297, 1832),
        (298, 0),
        (298, 1832),
    ]
    expected_scratch, last_298 = official_scratch.run(298, scratch_points)
    # Stage 2: tune.py --weights last_298.pt --epochs 450 (last_298 is saved
    # after epoch 298, so the tune run starts at epoch 299).
    tune = _continue(FINETUNE, 450, scratch, previous_step=299 * NB, start_epoch=299)
    official_tune = OfficialRun(FINETUNE, 450, start_epoch=299, loaded=last_298)
    tune_points = [(299, 0), (299, 1832), (300, 0), (301, 5), (424, 1832)]
    expected_tune, epoch_424 = official_tune.run(424, tune_points)
    # Stage 3: train.py --weights epoch_424.pt --epochs 450 (from the tune run).
    fine = _continue(FINETUNE, 450, tune, previous_step=425 * NB, start_epoch=425)
    official_fine = OfficialRun(FINETUNE, 450, start_epoch=425, loaded=epoch_424)
    fine_points = [(425, 0), (425, 1832), (426, 0), (449, 1832)]
    expected_fine, _ = official_fine.run(449, fine_points)

    checked = 0
    for ours, expected in [
        (scratch, expected_scratch),
        (tune, expected_tune),
        (fine, expected_fine),
    ]:
        assert expected
        for (epoch, i), official in sorted(expected.items()):
            # The batch counter continues across stages (same nb): it is ni.
            np.testing.assert_allclose(
                _ours(ours, epoch * NB + i),
                official,
                rtol=2e-6,
                atol=1e-9,
                err_msg=f"epoch {epoch}, batch {i} (weights lr, bias lr, momentum)",
            )
            checked += 1
    assert checked == 20

    # The boundaries in numbers: the tune stage starts at the rate the
    # 300-epoch cosine had reached, then jumps onto the 450-epoch cosine.
    def lf300(x):
        return ((1 + math.cos(x * math.pi / 300)) / 2) * 0.8 + 0.2

    def lf450(x):
        return ((1 + math.cos(x * math.pi / 450)) / 2) * 0.8 + 0.2

    assert _ours(tune, 299 * NB)[0] == pytest.approx(0.01 * lf300(299), rel=1e-6)  # 0.0020002
    assert _ours(tune, 300 * NB)[0] == pytest.approx(0.01 * lf450(299), rel=1e-6)  # 0.0040242
    assert _ours(fine, 425 * NB)[0] == pytest.approx(0.01 * lf450(424), rel=1e-6)
    assert _ours(fine, 449 * NB + 1832)[0] == pytest.approx(0.01 * lf450(448), rel=1e-6)
    # No warmup restarts in a continued stage: momentum stays 0.937, the
    # bias rate equals the weights' rate.
    assert _ours(tune, 299 * NB)[1:] == pytest.approx((0.01 * lf300(299), 0.937))


@pytest.mark.parametrize("first_epochs", [2, 10, 12])
def test_a_continued_stage_near_warmup_follows_the_official_loop(first_epochs):
    # Short epochs (100 batches, warmup 1000): the second stage starts inside
    # warmup (after 2 epochs), in the epoch where warmup ends (after 10),
    # where the official loop mixes warmup values and the loaded rates, or
    # after it (12). Its momentum differs from the first stage's, to tell
    # the loaded momentum from the new recipe's.
    nb = 100
    tuned = dict(FINETUNE, momentum=0.95)
    first = build_optimizer(SCRATCH, steps_per_epoch=nb, epochs=first_epochs + 1, batch_size=64)
    _, saved = OfficialRun(SCRATCH, first_epochs + 1, nb=nb).run(first_epochs - 1)
    second = build_optimizer(tuned, steps_per_epoch=nb, epochs=30, batch_size=64)
    schedules = continued_schedules(second, first, first_epochs * nb, first_epochs, nb)
    second.learning_rate, second.bias_learning_rate, second.momentum = schedules
    official = OfficialRun(tuned, 30, nb=nb, start_epoch=first_epochs, loaded=saved)
    points = [(e, i) for e in range(first_epochs, 15) for i in (0, 1, 50, 99)] + [(29, 99)]
    expected, _ = official.run(29, points)
    for (epoch, i), values in sorted(expected.items()):
        np.testing.assert_allclose(
            _ours(second, epoch * nb + i),
            values,
            rtol=2e-6,
            atol=1e-9,
            err_msg=f"epoch {epoch}, batch {i}",
        )
    # Past warmup the momentum is the new recipe's if this stage warmed up,
    # else the checkpoint's.
    assert expected[(14, 99)][2] == (0.95 if first_epochs * nb <= 1000 else 0.937)


def test_continue_from_carries_epoch_optimizer_and_ema_update_count_over_a_boundary(
    tmp_path, compiled_tiny_task
):
    """One boundary, fast: a checkpoint after 2 epochs of 3 batches, continued as a 9-mosaic tune stage to 8 epochs."""
    from yolor_keras.training.callbacks import optimizer_counters
    from yolor_keras.training.callbacks import save_checkpoint
    from yolor_keras.training.recipe import OptimizerConfig
    from yolor_keras.training.recipe import Recipe
    from yolor_keras.training.trainer import continue_task
    from yolor_keras.training.trainer import stage_recipe

    # Compiled as a 4-epoch run of 3 batches of 4.
    previous = compiled_tiny_task(seed=0)
    variables = previous.trainable_variables
    rng = np.random.default_rng(0)
    for _ in range(6):  # two epochs of three batches
        previous.optimizer.apply(
            [rng.normal(scale=0.1, size=v.shape).astype("float32") for v in variables], variables
        )
    assert optimizer_counters(previous.optimizer) == (6, 6)
    folder = save_checkpoint(
        previous, {"epoch": 2, "step": 6, "updates": 6, "logs": {}}, str(tmp_path / "first")
    )

    recipe = Recipe(optimizer=OptimizerConfig(**compiled_tiny_task.hyp)).override(
        epochs=8, batch_size=4, nominal_batch_size=4
    )
    recipe = stage_recipe(recipe, "tune")
    assert recipe.augment.mosaic_tiles == 9
    task, state = continue_task(folder, recipe, steps=3, continue_weights="ema")
    assert task.class_names == ["a", "b"]
    # Compiled with the new recipe's loss settings (batch 4 = nominal 4).
    assert task.loss_settings["loss_scale"] == 4.0 and task.loss_settings["box_gain"] == 0.05
    optimizer = task.optimizer
    assert state["epoch"] == 2
    assert optimizer_counters(optimizer) == (6, 6)
    for new, old in zip(optimizer.momentums, previous.optimizer.momentums):
        np.testing.assert_array_equal(np.array(new), np.array(old))
    old_ema = [np.array(v) for v in previous.optimizer.ema_values(variables)]
    for new, old in zip(optimizer.ema_values(task.trainable_variables), old_ema):
        np.testing.assert_array_equal(np.array(new), old)
    # The official checkpoint's model is the EMA, so the weights start there.
    for weight, old in zip(task.trainable_variables, old_ema):
        np.testing.assert_array_equal(np.array(weight), old)
    assert not all(np.array_equal(np.array(v), e) for v, e in zip(variables, old_ema))

    # The first continued epoch holds the checkpoint's rate; the next runs at
    # the 8-epoch cosine of the previous epoch (warmup ended at batch 3).
    def lf8(x):
        return ((1 + math.cos(x * math.pi / 8)) / 2) * 0.8 + 0.2

    def lf4(x):
        return ((1 + math.cos(x * math.pi / 4)) / 2) * 0.8 + 0.2

    assert _ours(optimizer, 6)[0] == pytest.approx(0.01 * lf4(2), rel=1e-6)
    assert _ours(optimizer, 9)[0] == pytest.approx(0.01 * lf8(2), rel=1e-6)

    # The next update is the EMA's 7th: decay 0.9999 * (1 - exp(-7 / 2000)).
    ema_before = np.array(optimizer.ema_values(task.trainable_variables)[0])
    weights = task.trainable_variables
    optimizer.apply(
        [rng.normal(scale=0.1, size=v.shape).astype("float32") for v in weights], weights
    )
    decay = 0.9999 * (1 - math.exp(-7 / 2000))
    np.testing.assert_allclose(
        np.array(optimizer.ema_values(weights)[0]),
        decay * ema_before + (1 - decay) * np.array(weights[0]),
        rtol=1e-5,
        atol=1e-7,
    )
    assert optimizer_counters(optimizer) == (7, 7)


@pytest.mark.slow
def test_three_stages_end_to_end_carry_over_at_each_boundary(tmp_path):
    """The paper schedule in miniature: 3 epochs, tune to 5 from epoch 1, fine-tune to 5 from epoch 3."""
    import json

    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.training.recipe import recipe_from_dict
    from yolor_keras.training.trainer import train

    generate_dataset(str(tmp_path / "data"), num_train=12, num_val=4, image_size=128, seed=1)
    recipe = recipe_from_dict(
        {
            "train": {
                "model": "yolor_p6",
                "image_size": 64,
                "batch_size": 4,
                "nominal_batch_size": 4,
                "eval_interval": 100,
            },
            "optimizer": {"warmup_epochs": 1.0, "warmup_min_steps": 2},
        }
    )
    common = dict(
        recipe=recipe,
        width_multiplier=0.125,
        depth_multiplier=0.33,
        steps_per_epoch=2,
        val_data=False,
        verbose=0,
    )

    def state(run, epoch):
        return json.loads(
            (tmp_path / run / "checkpoints" / f"epoch_{epoch:03d}" / "state.json").read_text()
        )

    first = train(
        str(tmp_path / "data"), str(tmp_path / "scratch"), epochs=3, save_epochs=[1], **common
    )
    assert sorted((tmp_path / "scratch" / "checkpoints").iterdir())[0].name == "epoch_001"
    assert state("scratch", 1) | {"logs": None} == {
        "epoch": 2,
        "step": 4,
        "updates": 4,
        "keep_epochs": [1],
        "seed": 0,
        "stage": "train",
        "epochs": 3,
        "logs": None,
    }
    assert len(first.history.epoch) == 3

    tune = train(
        str(tmp_path / "data"),
        str(tmp_path / "tune"),
        epochs=5,
        stage="tune",
        save_epochs=[3],
        continue_from=str(tmp_path / "scratch" / "checkpoints" / "epoch_001"),
        **common,
    )
    assert tune.history.epoch == [2, 3, 4]  # the epoch counter carried over
    # Optimizer step and update count (the EMA's) continue from the checkpoint's 4.
    assert [(state("tune", e)["step"], state("tune", e)["updates"]) for e in (3, 4)] == [
        (8, 8),
        (10, 10),
    ]
    assert state("tune", 4)["stage"] == "tune"

    fine = train(
        str(tmp_path / "data"),
        str(tmp_path / "fine"),
        epochs=5,
        continue_from=str(tmp_path / "tune" / "checkpoints" / "epoch_003"),
        **common,
    )
    assert fine.history.epoch == [4]
    assert (state("fine", 4)["epoch"], state("fine", 4)["step"], state("fine", 4)["updates"]) == (
        5,
        10,
        10,
    )
    inner = fine.task.optimizer
    assert int(keras.ops.convert_to_numpy(inner.iterations)) == 10

    # The fine stage's rate in its one epoch is the tune run's rate after epoch 3.
    def lf5(x):
        return ((1 + math.cos(x * math.pi / 5)) / 2) * 0.8 + 0.2

    assert _value(inner._learning_rate, 8) == pytest.approx(0.01 * lf5(3), rel=1e-6)
    assert (tmp_path / "fine" / "model.keras").exists()
