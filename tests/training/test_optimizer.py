"""YOLORSGD against PyTorch's SGD (the official optimizer), hand-computed schedules
and the official training loop's gradient accumulation."""

import math

import keras
import numpy as np
import pytest

from yolor_keras.training import YOLORSGD
from yolor_keras.training import YOLORLearningRate
from yolor_keras.training import YOLORMomentum
from yolor_keras.training import build_optimizer

# The optimizer values of the official hyp.scratch recipes.
SCRATCH_OPTIMIZER = dict(
    lr0=0.01,
    lrf=0.2,
    momentum=0.937,
    weight_decay=5e-4,
    warmup_epochs=3.0,
    warmup_momentum=0.8,
    warmup_bias_lr=0.1,
)


def _variables(rng):
    return [
        keras.Variable(rng.normal(size=(3, 3, 2, 4)).astype("float32"), name="kernel"),
        keras.Variable(rng.normal(size=(4,)).astype("float32"), name="bias"),
        keras.Variable(rng.normal(size=(4,)).astype("float32"), name="gamma"),
        keras.Variable(rng.normal(size=(4,)).astype("float32"), name="beta"),
        keras.Variable(rng.normal(size=(4,)).astype("float32"), name="implicit"),
    ]


def test_updates_match_torch_nesterov_sgd_with_parameter_groups():
    # Only this test needs torch (the `convert` extra) as its reference.
    torch = pytest.importorskip("torch", reason="torch (the `convert` extra) is the reference")
    rng = np.random.default_rng(0)
    variables = _variables(rng)
    lr, bias_lr, momentum, decay = 0.01, 0.05, 0.9, 5e-4
    optimizer = YOLORSGD(
        learning_rate=lr,
        bias_learning_rate=bias_lr,
        momentum=momentum,
        kernel_weight_decay=decay,
        ema_decay=None,
    )
    params = [torch.tensor(np.array(v), requires_grad=True) for v in variables]
    reference = torch.optim.SGD(
        [
            {"params": [params[0]], "weight_decay": decay},
            {"params": [params[1], params[3]], "lr": bias_lr},
            {"params": [params[2], params[4]]},
        ],
        lr=lr,
        momentum=momentum,
        nesterov=True,
    )
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply(grads, variables)
        for param, grad in zip(params, grads):
            param.grad = torch.tensor(grad)
        reference.step()
    for variable, param in zip(variables, params):
        np.testing.assert_allclose(np.array(variable), param.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_weight_decay_can_exclude_a_kernel():
    rng = np.random.default_rng(1)
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    optimizer = YOLORSGD(learning_rate=0.1, momentum=0.0, kernel_weight_decay=0.5, ema_decay=None)
    optimizer.exclude_from_weight_decay(var_list=[kernel])
    optimizer.apply([np.zeros((2, 2), "float32")], [kernel])
    np.testing.assert_array_equal(np.array(kernel), np.ones((2, 2)))
    decayed = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    optimizer = YOLORSGD(learning_rate=0.1, momentum=0.0, kernel_weight_decay=0.5, ema_decay=None)
    optimizer.apply([np.zeros((2, 2), "float32")], [decayed])
    # w - lr * wd * w = 1 - 0.1 * 0.5
    np.testing.assert_allclose(np.array(decayed), np.full((2, 2), 0.95), rtol=1e-6)
    del rng


def test_ema_follows_the_official_ramp():
    weight = keras.Variable(np.zeros((3,), "float32"), name="gamma")
    optimizer = YOLORSGD(learning_rate=1.0, momentum=0.0, kernel_weight_decay=0.0)
    expected_average = np.zeros(3)
    expected_weight = np.zeros(3)
    for update in range(1, 4):
        optimizer.apply([-np.ones(3, "float32")], [weight])
        expected_weight = expected_weight + 1.0
        decay = 0.9999 * (1 - math.exp(-update / 2000))
        expected_average = decay * expected_average + (1 - decay) * expected_weight
    np.testing.assert_allclose(np.array(weight), expected_weight)
    np.testing.assert_allclose(
        np.array(optimizer.ema_values([weight])[0]), expected_average, rtol=1e-5
    )


def test_ema_updates_once_per_accumulated_update():
    weight = keras.Variable(np.zeros((2,), "float32"), name="gamma")
    optimizer = YOLORSGD(
        learning_rate=1.0, momentum=0.0, kernel_weight_decay=0.0, gradient_accumulation_steps=2
    )
    optimizer.apply([-np.ones(2, "float32")], [weight])
    np.testing.assert_array_equal(np.array(weight), [0.0, 0.0])  # accumulating
    optimizer.apply([-3 * np.ones(2, "float32")], [weight])
    np.testing.assert_allclose(np.array(weight), [2.0, 2.0])  # mean gradient -2
    decay = 0.9999 * (1 - math.exp(-1 / 2000))
    np.testing.assert_allclose(
        np.array(optimizer.ema_values([weight])[0]), (1 - decay) * 2.0, rtol=1e-5
    )


def test_learning_rate_schedule_by_hand():
    # 20 epochs of 100 steps, warmup 1000 steps, lr0 0.01, lrf 0.2.
    weights = YOLORLearningRate(0.01, 0.2, epochs=20, steps_per_epoch=100, warmup_steps=1000)
    biases = YOLORLearningRate(0.01, 0.2, 20, 100, 1000, warmup_start=0.1)

    def value(schedule, step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert value(weights, 0) == pytest.approx(0.0)
    assert value(biases, 0) == pytest.approx(0.1)
    # Step 500 is half-way through warmup, in epoch 5 of 20, where the cosine
    # factor is ((1 - cos(pi / 4)) / 2) * (0.2 - 1) + 1 = 0.8828427.
    target = 0.01 * 0.8828427
    assert value(weights, 500) == pytest.approx(0.5 * target, rel=1e-5)
    assert value(biases, 500) == pytest.approx(0.1 + 0.5 * (target - 0.1), rel=1e-5)
    # After warmup the rate is constant within an epoch: epoch 19 at steps 1900-1999.
    factor = ((1 - math.cos(19 * math.pi / 20)) / 2) * -0.8 + 1
    assert value(weights, 1900) == pytest.approx(0.01 * factor, rel=1e-5)
    assert value(weights, 1999) == pytest.approx(0.01 * factor, rel=1e-5)
    # Once warm, biases and weights share the rate.
    assert value(biases, 1000) == pytest.approx(value(weights, 1000), rel=1e-6)
    momentum = YOLORMomentum(0.937, 0.8, 1000)
    assert value(momentum, 0) == pytest.approx(0.8)
    assert value(momentum, 500) == pytest.approx(0.8685)
    assert value(momentum, 5000) == pytest.approx(0.937)


def test_build_optimizer_accumulates_to_the_nominal_batch():
    recipe = dict(SCRATCH_OPTIMIZER)
    optimizer = build_optimizer(recipe, steps_per_epoch=50, epochs=10, batch_size=16)
    assert optimizer.gradient_accumulation_steps == 4
    assert optimizer.kernel_weight_decay == pytest.approx(5e-4)
    # warmup = max(3 * 50, 1000)
    assert optimizer._learning_rate.warmup_steps == 1000
    optimizer = build_optimizer(recipe, steps_per_epoch=50, epochs=10, batch_size=64)
    assert optimizer.gradient_accumulation_steps is None


def test_config_round_trip():
    recipe = dict(SCRATCH_OPTIMIZER)
    optimizer = build_optimizer(recipe, steps_per_epoch=50, epochs=10, batch_size=8)
    restored = YOLORSGD.from_config(optimizer.get_config())
    assert restored.get_config() == optimizer.get_config()


def official_accumulation(ni, nw, nbs, bs):
    """The official train.py: max(1, np.interp(ni, [0, nw], [1, nbs / bs]).round())."""
    return max(1, np.interp(min(ni, nw), [0, nw], [1, nbs / bs]).round())


def test_accumulation_ramp_by_hand():
    # nbs 64, batch 16, warmup 6: interp gives 1, 1.5, 2, 2.5, 3, 3.5, 4 and
    # NumPy rounds halves to even: 1, 2, 2, 2, 3, 4, 4; then 4 holds.
    optimizer = YOLORSGD(
        gradient_accumulation_steps=4, accumulation_warmup_steps=6, accumulation_ratio=4.0
    )
    values = [int(optimizer.accumulation_at(ni)) for ni in range(10)]
    assert values == [1, 2, 2, 2, 3, 4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    "nbs, bs, nw", [(64, 16, 1000), (64, 24, 37), (64, 5, 250), (64, 48, 20), (64, 2, 999)]
)
def test_accumulation_ramp_matches_the_official_formula(nbs, bs, nw):
    accumulate = max(round(nbs / bs), 1)
    optimizer = YOLORSGD(
        gradient_accumulation_steps=accumulate if accumulate > 1 else None,
        accumulation_warmup_steps=nw,
        accumulation_ratio=nbs / bs,
    )
    steps = np.arange(nw + 50)
    expected = np.array([official_accumulation(ni, nw, nbs, bs) for ni in steps])
    if accumulate == 1:
        assert not optimizer.official_accumulation and set(expected) == {1}
        return
    got = keras.ops.convert_to_numpy(optimizer.accumulation_at(steps))
    np.testing.assert_array_equal(got, expected)
    # The update count is the number of batches ni < n with ni % accumulate == 0.
    taken = np.cumsum([ni % a == 0 for ni, a in zip(steps, expected)])
    counted = keras.ops.convert_to_numpy(optimizer.updates_before(steps + 1))
    np.testing.assert_array_equal(counted, taken)


def test_accumulated_updates_follow_the_official_loop():
    """Weights, update count and EMA against a NumPy run of the official loop.

    The official loop: zero_grad at each epoch start; every batch adds its
    gradient; when ni % accumulate == 0 it steps (here plain SGD, lr 0.5)
    and updates the EMA. Keras' loss is scaled for the nominal 4 batches,
    so its gradients are 4 times the official per-batch ones.
    """
    nw, steps_per_epoch, nominal = 6, 7, 4
    rng = np.random.default_rng(3)
    gradients = rng.normal(size=(30, 3)).astype("float32")
    weight = keras.Variable(np.zeros(3, "float32"), name="gamma")
    optimizer = YOLORSGD(
        learning_rate=0.5,
        momentum=0.0,
        kernel_weight_decay=0.0,
        ema_ramp=3.0,
        gradient_accumulation_steps=nominal,
        accumulation_warmup_steps=nw,
        accumulation_ratio=4.0,
        steps_per_epoch=steps_per_epoch,
    )
    w = np.zeros(3)
    ema = np.zeros(3)
    gathered = np.zeros(3)
    updates = 0
    for ni, gradient in enumerate(gradients):
        if ni % steps_per_epoch == 0:
            gathered[:] = 0.0  # optimizer.zero_grad() before each epoch
        gathered += gradient / nominal
        if ni % official_accumulation(ni, nw, 64, 16) == 0:
            w = w - 0.5 * gathered
            gathered[:] = 0.0
            updates += 1
            decay = 0.9999 * (1 - math.exp(-updates / 3.0))
            ema = decay * ema + (1 - decay) * w
        optimizer.apply([gradient], [weight])
        np.testing.assert_allclose(np.array(weight), w, rtol=1e-5, atol=1e-6, err_msg=f"batch {ni}")
        assert int(optimizer.iterations) == updates
    np.testing.assert_allclose(
        np.array(optimizer.ema_values([weight])[0]), ema, rtol=1e-5, atol=1e-6
    )
    # The ramp takes more steps than a fixed accumulation of 4 would (30 // 4).
    assert updates > 30 // nominal


def test_build_optimizer_reads_ema_decay_and_ramps_accumulation():
    recipe = dict(SCRATCH_OPTIMIZER, warmup_min_steps=10, ema_decay=0.99)
    optimizer = build_optimizer(recipe, steps_per_epoch=50, epochs=10, batch_size=24)
    assert optimizer.ema_decay == pytest.approx(0.99)
    assert optimizer.gradient_accumulation_steps == 3  # round(64 / 24)
    assert optimizer.accumulation_warmup_steps == 150  # max(3 * 50, 10)
    assert optimizer.accumulation_ratio == pytest.approx(64 / 24)
    assert optimizer.steps_per_epoch == 50
    restored = YOLORSGD.from_config(optimizer.get_config())
    assert restored.get_config() == optimizer.get_config()
    assert int(restored.accumulation_at(75)) == official_accumulation(75, 150, 64, 24)


def test_bad_accumulation_arguments_are_named():
    with pytest.raises(ValueError, match="accumulation_ratio"):
        YOLORSGD(
            gradient_accumulation_steps=4, accumulation_warmup_steps=10, accumulation_ratio=2.0
        )
    with pytest.raises(ValueError, match="accumulation_warmup_steps"):
        YOLORSGD(gradient_accumulation_steps=2, accumulation_warmup_steps=-1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        YOLORSGD(steps_per_epoch=0)
