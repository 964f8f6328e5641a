"""`YOLORObjectDetector` with several heads: implicit knowledge, weights, saving and training."""

import collections

import keras
import numpy as np
import pytest

from yolor_keras.data import build_multi_task_dataset
from yolor_keras.data.synthetic import generate_dataset
from yolor_keras.layers import ImplicitAdd
from yolor_keras.layers import ImplicitKnowledge
from yolor_keras.layers import ImplicitMultiply
from yolor_keras.losses import MultiLabelBinaryCrossentropy
from yolor_keras.losses import SupervisedContrastiveLoss
from yolor_keras.losses import YOLORLoss
from yolor_keras.models import ClassificationHead
from yolor_keras.models import DetectionHead
from yolor_keras.models import EmbeddingHead
from yolor_keras.models import make_plan
from yolor_keras.tasks import YOLORObjectDetector

TINY = {"width_multiplier": 0.125, "depth_multiplier": 0.33}
NUM_CLASSES = 3
SYNTHETIC_CLASSES = 5  # the classes of yolor_keras.data.synthetic
NUM_LABELS = 4
EMBEDDING_DIM = 16
HEAD_WIDTH = 32
ALL_HEADS = ("detection", "classification", "embedding")


def tiny_model(
    preset="yolor_p6",
    heads=ALL_HEADS,
    implicit="vector",
    num_classes=NUM_CLASSES,
    num_labels=NUM_LABELS,
    embedding_dim=EMBEDDING_DIM,
    class_names=None,
):
    """A tiny task with the given heads; ``implicit`` is one setting for every
    head or ``{head: setting}`` (heads left out get the vector)."""
    forms = implicit if isinstance(implicit, dict) else {head: implicit for head in heads}
    make = {
        "detection": lambda form: DetectionHead(num_classes, implicit=form),
        "classification": lambda form: ClassificationHead(
            num_classes if num_labels is None else num_labels, HEAD_WIDTH, implicit=form
        ),
        "embedding": lambda form: EmbeddingHead(embedding_dim, HEAD_WIDTH, implicit=form),
    }
    return YOLORObjectDetector.from_preset(
        preset,
        heads=[make[head](forms.get(head, "vector")) for head in heads],
        class_names=class_names,
        **TINY,
    )


def neck_channels(model):
    return sum(model.backbone.output_channels.values())


def pooled_head_parameters(model, units, implicit_parameters):
    """Parameters of a classification/embedding head, counted by hand."""
    pooled = 2 * neck_channels(model)  # average- and max-pooled levels
    return (pooled * HEAD_WIDTH + HEAD_WIDTH) + (HEAD_WIDTH * units + units) + implicit_parameters


def well_conditioned(model, gamma=0.2):
    """Scales every BatchNorm down so that the random network is smooth.

    At unit scale a deep random network with batch statistics over a few
    small images is chaotic: its loss changes more between two tiny steps
    than along the gradient. With small activations (SiLU near its linear
    part) the gradient predicts the change, and a few steps must reduce
    the loss.
    """
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(np.full(layer.gamma.shape, gamma, "float32"))
    return model


def perturb_implicit(model, seed=0):
    """Moves every implicit parameter off its initial value, so folds and copies show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, ImplicitKnowledge):
            for weight in layer.weights:
                weight.assign(weight.numpy() + rng.normal(0, 0.2, weight.shape).astype("float32"))


def test_every_head_has_the_documented_shapes_and_dtypes():
    model = tiny_model()
    images = np.random.default_rng(0).random((2, 128, 128, 3), dtype="float32")
    outputs = model(images)
    assert sorted(outputs) == ["classification", "detection", "embedding"]
    # Detection: the detector contract, stride ascending.
    assert model.strides == [8, 16, 32, 64]
    assert [tuple(raw.shape) for raw in outputs["detection"]] == [
        (2, 128 // s, 128 // s, 3, 5 + NUM_CLASSES) for s in model.strides
    ]
    assert tuple(outputs["classification"].shape) == (2, NUM_LABELS)
    assert tuple(outputs["embedding"].shape) == (2, EMBEDDING_DIM)
    for tensor in keras.tree.flatten(outputs):
        assert keras.backend.standardize_dtype(tensor.dtype) == "float32"
    np.testing.assert_allclose(np.linalg.norm(outputs["embedding"], axis=1), 1.0, rtol=1e-5)
    # The same in the symbolic graph.
    assert model.output["classification"].shape == (None, NUM_LABELS)
    assert model.decode(outputs["detection"]).shape == (2, 3 * (256 + 64 + 16 + 4), 8)


def test_mixed_precision_computes_in_float16_and_keeps_float32_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_model(heads=["classification", "embedding"])
    outputs = model(np.zeros((1, 64, 64, 3), "float32"))
    assert keras.backend.standardize_dtype(outputs["classification"].dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.weights)


def test_turning_a_head_off_removes_exactly_its_weights():
    full = tiny_model()
    plan = make_plan(full.architecture, NUM_CLASSES, **TINY)
    outputs_per_level = 3 * (5 + NUM_CLASSES)
    detection = 0
    for level in plan.head_levels:
        cin = plan.channels[level.input_id]
        mid = level.conv["filters"]
        detection += 9 * cin * mid + 4 * mid  # 3x3 conv and BatchNorm (4 vectors)
        detection += mid  # ImplicitAdd
        detection += mid * outputs_per_level + outputs_per_level  # 1x1 conv with bias
        detection += outputs_per_level  # ImplicitMultiply
    pooled = 2 * neck_channels(full)
    classification = pooled_head_parameters(full, NUM_LABELS, pooled + NUM_LABELS)
    embedding = pooled_head_parameters(full, EMBEDDING_DIM, pooled + EMBEDDING_DIM)

    expected = {"detection": detection, "classification": classification, "embedding": embedding}
    for head, parameters in expected.items():
        others = [name for name in expected if name != head]
        reduced = tiny_model(heads=others)
        assert full.count_params() - reduced.count_params() == parameters, head
        assert head not in reduced(np.zeros((1, 64, 64, 3), "float32"))
        assert reduced.head_layers(head) == []
        assert full.head_layers(head)
    # No weight of a classification-less model belongs to that head.
    reduced = tiny_model(heads=["detection", "embedding"])
    assert not any("classification" in weight.path for weight in reduced.weights)


@pytest.mark.parametrize(
    "form, parameters_per_vector",
    [
        (None, lambda size: 0),
        ("vector", lambda size: size),
        ("network", lambda size: 64 + 64 * size),  # prior z0 (64) and W (64 x C)
        ("factorization", lambda size: 8 + 8 * size),  # coefficients (8) and basis (8 x C)
    ],
)
def test_implicit_forms_set_the_implicit_parameters_of_a_head(form, parameters_per_vector):
    model = tiny_model(heads=["classification"], implicit=form)
    pooled = 2 * neck_channels(model)
    implicit = parameters_per_vector(pooled) + parameters_per_vector(NUM_LABELS)
    # The backbone holds the neck too.
    assert model.count_params() == (
        model.backbone.count_params() + pooled_head_parameters(model, NUM_LABELS, implicit)
    )
    layers = model.head_layers("classification")
    implicit_layers = [layer for layer in layers if isinstance(layer, ImplicitKnowledge)]
    if form is None:
        assert implicit_layers == []
    else:
        assert {type(layer) for layer in implicit_layers} == {ImplicitAdd, ImplicitMultiply}
        assert {layer.form for layer in implicit_layers} == {form}


def test_forms_are_chosen_per_head_and_per_use():
    model = tiny_model(
        implicit={
            "detection": {"add": "network", "multiply": None},
            "classification": "factorization",
            "embedding": None,
        }
    )
    detection = [
        layer for layer in model.head_layers("detection") if isinstance(layer, ImplicitKnowledge)
    ]
    assert len(detection) == 4 and all(
        isinstance(layer, ImplicitAdd) and layer.form == "network" for layer in detection
    )
    assert {
        layer.form
        for layer in model.head_layers("classification")
        if isinstance(layer, ImplicitKnowledge)
    } == {"factorization"}
    assert not any(isinstance(layer, ImplicitKnowledge) for layer in model.head_layers("embedding"))


def test_keras_file_round_trip(tmp_path):
    model = tiny_model(
        preset="yolor_csp",
        implicit={
            "detection": "network",
            "classification": {"add": "factorization", "multiply": None},
        },
        class_names=["a", "b", "c"],
    )
    model.compile(optimizer="sgd", loss_weights={"embedding": 0.25})
    perturb_implicit(model)
    path = tmp_path / "multi_task.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, YOLORObjectDetector)
    assert restored.get_config() == model.get_config()
    assert restored.loss_settings["loss_weights"] == {
        "detection": 1.0,
        "classification": 1.0,
        "embedding": 0.25,
    }
    images = np.random.default_rng(1).random((2, 64, 64, 3), dtype="float32")
    for got, want in zip(keras.tree.flatten(restored(images)), keras.tree.flatten(model(images))):
        np.testing.assert_array_equal(got, want)


# Vectors are copied where the head keeps them and folded into the 1x1 conv
# where it has none.
@pytest.mark.parametrize("forms", [{"add": None, "multiply": "vector"}, None])
def test_detection_head_reproduces_a_detector_with_its_weights(forms):
    keras.utils.set_random_seed(3)
    detector = YOLORObjectDetector.from_preset("yolor_p6", num_classes=NUM_CLASSES, **TINY)
    perturb_implicit(detector)
    model = tiny_model(heads=["detection", "classification"], implicit={"detection": forms})
    model.load_detector_weights(detector)
    images = np.random.default_rng(2).random((2, 128, 128, 3), dtype="float32")
    expected = detector(images)
    got = model(images)["detection"]
    for have, want in zip(got, expected):
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(have, want, atol=1e-5 * scale)


def test_detector_weights_do_not_fit_another_form_or_size():
    detector = YOLORObjectDetector.from_preset("yolor_p6", num_classes=NUM_CLASSES, **TINY)
    with pytest.raises(ValueError, match="'network' form"):
        tiny_model(implicit="network").load_detector_weights(detector)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_model(num_classes=4).load_detector_weights(detector)


@pytest.fixture(scope="module")
def fixed_batch(tmp_path_factory):
    """Eight synthetic 64 px images with all three kinds of targets: four
    identities twice each, so that every sample has a positive."""
    folder = tmp_path_factory.mktemp("synthetic")
    generate_dataset(folder, num_train=32, num_val=1, image_size=96, seed=4)
    dataset, _ = build_multi_task_dataset(
        folder,
        split="train",
        image_size=64,
        batch_size=32,
        flip=False,
        shuffle=False,
        verbose=False,
    )
    images, targets = next(iter(dataset))
    samples_of = collections.defaultdict(list)
    for index, identity in enumerate(targets["embedding"].numpy()):
        samples_of[int(identity)].append(index)
    pairs = [samples[:2] for samples in samples_of.values() if len(samples) >= 2][:4]
    assert len(pairs) == 4
    chosen = np.concatenate(pairs)
    take = lambda tensor: np.take(np.asarray(tensor), chosen, axis=0)  # noqa: E731
    return take(images), keras.tree.map_structure(take, targets)


def head_losses(model, images, targets, temperature=0.1):
    """The loss terms of the model's heads, computed by separately built loss
    objects on a training-mode forward pass (batch statistics, as in `fit`)."""
    outputs = model(images, training=True)
    losses = {}
    if "detection" in outputs:
        detection = YOLORLoss.from_detector(model).compute_components(
            targets["detection"], outputs["detection"]
        )
        losses.update({name: float(np.mean(detection[name])) for name in ("box", "cls")})
        # The trained objectness target is the CIoU of the current boxes, so
        # its loss moves with the boxes; against a fixed target (1 at every
        # assigned cell, iou_ratio=0) it must fall.
        fixed = YOLORLoss.from_detector(model, iou_ratio=0.0).compute_components(
            targets["detection"], outputs["detection"]
        )
        losses["obj"] = float(np.mean(fixed["obj"]))
    if "classification" in outputs:
        losses["labels"] = float(
            MultiLabelBinaryCrossentropy()(targets["classification"], outputs["classification"])
        )
    if "embedding" in outputs:
        losses["contrastive"] = float(
            SupervisedContrastiveLoss(temperature)(targets["embedding"], outputs["embedding"])
        )
    return losses


def test_compute_loss_weights_each_head_and_scales_the_mean(fixed_batch):
    images, targets = fixed_batch
    weights = {"detection": 2.0, "classification": 0.5, "embedding": 0.25}
    model = tiny_model(num_classes=SYNTHETIC_CLASSES, num_labels=None)
    model.compile(optimizer="sgd", loss_weights=weights, loss_scale=8.0)
    outputs = model(images, training=False)
    detection = YOLORLoss.from_detector(model).compute_components(
        targets["detection"], outputs["detection"]
    )
    labels = MultiLabelBinaryCrossentropy()(targets["classification"], outputs["classification"])
    contrastive = SupervisedContrastiveLoss()(targets["embedding"], outputs["embedding"])
    expected = 8.0 * (
        2.0 * float(np.mean(detection["loss"])) + 0.5 * float(labels) + 0.25 * float(contrastive)
    )
    got = float(model.compute_loss(images, targets, outputs))
    assert got == pytest.approx(expected, rel=1e-5)


def test_missing_targets_are_named(fixed_batch):
    images, targets = fixed_batch
    model = tiny_model(num_classes=SYNTHETIC_CLASSES, num_labels=None)
    model.compile(optimizer="sgd")
    outputs = model(images)
    incomplete = {key: value for key, value in targets.items() if key != "embedding"}
    with pytest.raises(ValueError, match="'embedding' entry"):
        model.compute_loss(images, incomplete, outputs)


def test_every_loss_decreases_in_a_few_fit_steps_on_a_fixed_batch(fixed_batch):
    images, targets = fixed_batch
    keras.utils.set_random_seed(0)
    model = tiny_model(num_classes=SYNTHETIC_CLASSES, num_labels=None)
    well_conditioned(model)
    before = head_losses(model, images, targets, temperature=0.5)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        run_eagerly=True,
        temperature=0.5,
        # With the official gain (0.5 * 5/80 classes) the class term is so
        # light that, over five steps, the objectness gradient on the shared
        # features outweighs it; weighted up, it must fall too.
        cls_gain=10.0,
        loss_scale=1.0,
    )
    history = model.fit(images, targets, batch_size=8, epochs=5, shuffle=False, verbose=0)
    after = head_losses(model, images, targets, temperature=0.5)
    for name in before:
        assert after[name] < before[name], (name, before[name], after[name])
    # The progress bar shows the heads' terms.
    assert set(before) - {"obj"} <= set(history.history)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"implicit": "matrix"}, "implicit form"),
        ({"embedding_dim": 0}, "embedding units"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)


def test_bad_loss_weights_are_named():
    model = tiny_model(heads=("classification", "embedding"))
    with pytest.raises(ValueError, match=r"loss_weights\['embedding'\] must be a non-negative"):
        model.compile(optimizer="sgd", loss_weights={"embedding": -1.0})
    with pytest.raises(ValueError, match=r"loss_weights: no head \['detection'\]"):
        model.compile(optimizer="sgd", loss_weights={"detection": 1.0})
