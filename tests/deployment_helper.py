"""Shared pieces of the inference, export and serving tests.

A randomly initialised detector is a poor test subject for deployment: its
objectness prior keeps every score near zero, and unnormalised activations
saturate the sigmoids so that many scores tie exactly. `tiny_detector`
therefore sets the BatchNorm statistics from real images and removes the
objectness prior, giving a tiny model with spread-out scores and a few
dozen distinct detections per image; with ``image_dependent=True`` those
detections also change from image to image, like a trained model's.
"""

import functools
import io
import struct
import zlib

import keras
import numpy as np
from PIL import Image
from PIL import ImageDraw

from yolor_keras.layers import YOLORImageConverter
from yolor_keras.tasks import YOLORObjectDetector


def scene(height, width, seed=0):
    """A uint8 RGB image with a gradient background and a few filled shapes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack(
        [
            40 + 120 * xs / max(width - 1, 1),
            60 + 100 * ys / max(height - 1, 1),
            np.full((height, width), 90.0),
        ],
        axis=-1,
    )
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x1, y1 = rng.integers(0, width - 8), rng.integers(0, height - 8)
        x2 = min(width - 1, x1 + rng.integers(8, max(9, width // 2)))
        y2 = min(height - 1, y1 + rng.integers(8, max(9, height // 2)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x1, y1, x2, y2], fill=color)
        else:
            draw.ellipse([x1, y1, x2, y2], fill=color)
    return np.asarray(image)


def encode(image, image_format="PNG", **options):
    """Encodes a uint8 RGB array (PNG by default; JPEG, BMP, GIF, WEBP too)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, image_format, **options)
    return buffer.getvalue()


def png_header_only(width, height):
    """A PNG whose IHDR announces width x height, with almost no pixel data."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# Settings of `tiny_detector`, chosen by measuring how many detections a
# score threshold of 0.25 keeps, how much of the raw outputs' variance
# depends on the image, and how far a small input change moves them.
OBJECTNESS_BIAS = -2.0  # sigmoid 0.12 before the class score
VARIANCE_FLOOR = 0.01  # BatchNorm variance floor, against near-constant channels
# BatchNorm output scale. At 0.2 (the default) the network is smooth, so
# bf16 and float rounding barely move its outputs, but it forgets its input:
# the image explains 4e-6 of the stride-8 outputs' variance and 3e-11 of
# the stride-64 ones, and every image gets the same near-tied boxes. Tests
# that compare detections across runtimes (fp16, int8) use
# `IMAGE_DEPENDENT_GAMMA` instead: there the image explains 26%, 8%, 2% and
# 1% (strides 8 to 64) while an input change of 1e-5 moves the outputs by at
# most 0.1% of their spread (at 1.0 that grows to 2.7%).
BATCHNORM_GAMMA = 0.2
IMAGE_DEPENDENT_GAMMA = 0.4
IMAGE_DEPENDENT_OBJECTNESS_BIAS = -2.5  # 5 to 60 detections per 128 px image
CALIBRATION_IMAGES = 32  # letterboxed scenes the BatchNorm statistics come from


def _walk(layer):
    for child in getattr(layer, "layers", []):
        yield child
        yield from _walk(child)


def tiny_detector(preset="yolor_p6", num_classes=3, seed=0, image_size=128, image_dependent=False):
    """A fresh copy of `calibrated_detector`: no test can change another's model."""
    original = calibrated_detector(preset, num_classes, seed, image_size, image_dependent)
    copy = YOLORObjectDetector.from_config(original.get_config())
    copy.set_weights(original.get_weights())
    return copy


@functools.lru_cache(maxsize=4)
def calibrated_detector(
    preset="yolor_p6", num_classes=3, seed=0, image_size=128, image_dependent=False
):
    """A width-0.125 training-form detector with realistic output statistics.

    Built once per test process for each argument set; tests get copies
    (`tiny_detector`).

    Args:
        preset: model preset name.
        num_classes: number of classes.
        seed: weight initialisation seed.
        image_size: side of the images its BatchNorm statistics come from.
        image_dependent: a model whose detections change from image to
            image (see `IMAGE_DEPENDENT_GAMMA`), for tests that compare
            detections across runtimes.
    """
    gamma = IMAGE_DEPENDENT_GAMMA if image_dependent else BATCHNORM_GAMMA
    objectness_bias = IMAGE_DEPENDENT_OBJECTNESS_BIAS if image_dependent else OBJECTNESS_BIAS
    keras.utils.set_random_seed(seed)
    detector = YOLORObjectDetector.from_preset(
        preset, num_classes=num_classes, width_multiplier=0.125, depth_multiplier=0.33
    )
    # Letterboxed scenes of assorted shapes, grey padding included, as the
    # model sees them at inference.
    rng = np.random.default_rng(seed)
    converter = YOLORImageConverter(image_size)
    images = []
    for index in range(CALIBRATION_IMAGES):
        height, width = (int(side) for side in rng.integers(image_size // 2, 2 * image_size, 2))
        images.append(converter(scene(height, width, seed=seed * 100 + index))[0])
    images = np.stack(images)
    # One training-mode pass with momentum 0 sets every BatchNorm's moving
    # statistics to that pass's batch statistics, layer after layer.
    batchnorms = [
        layer for layer in _walk(detector) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in batchnorms:
        layer.momentum = 0.0
        # Small activations (see BATCHNORM_GAMMA): at unit scale a random
        # network is chaotic (tiny input changes flip its outputs), while
        # near zero it carries little of its input to the deeper levels.
        layer.gamma.assign(np.full(layer.gamma.shape, gamma, "float32"))
    detector(images, training=True)
    for layer in batchnorms:
        layer.momentum = 0.97
        # Near-constant channels would amplify anything new 100-fold.
        layer.moving_variance.assign(np.maximum(layer.moving_variance.numpy(), VARIANCE_FLOOR))
    # Each level's prediction conv is rescaled to unit-variance logits, and
    # its bias set so that a few percent of the boxes score above 0.25.
    # The prediction convs are the head's convs with anchors x (5 + classes)
    # filters, in stride order.
    num_anchors = detector.anchors.shape[1]
    convs = [
        layer
        for layer in detector.head_layers("detection")
        if isinstance(layer, keras.layers.Conv2D)
        and layer.filters == num_anchors * (5 + num_classes)
    ]
    assert len(convs) == len(detector.strides), [layer.name for layer in convs]
    for conv in convs:
        conv.bias.assign(np.zeros(conv.bias.shape, "float32"))
    raw = detector(images, training=False)
    for conv, level_raw in zip(convs, raw):
        # The median over images: a random network amplifies a few unusual
        # images far more than the rest, and those must not set the scale.
        per_image_std = np.std(np.reshape(level_raw, (len(images), -1)), axis=1)
        conv.kernel.assign(conv.kernel.numpy() / float(np.median(per_image_std)))
        bias = np.zeros((num_anchors, 5 + num_classes), "float32")
        bias[:, 4] = objectness_bias
        conv.bias.assign(bias.reshape(-1))
    return detector


def match_rate(reference, candidate, iou_threshold=0.5):
    """Fraction of `reference` detections that `candidate` has too.

    A detection matches when the other result has one of the same class with
    IoU >= `iou_threshold` (greedy, one-to-one, in reference score order).
    Both arguments are result dicts of `Predictor.predict`.
    """
    ref_boxes, cand_boxes = reference["boxes"], candidate["boxes"]
    if len(ref_boxes) == 0:
        return 1.0 if len(cand_boxes) == 0 else 0.0
    used = np.zeros(len(cand_boxes), bool)
    matched = 0
    for box, cls in zip(ref_boxes, reference["classes"]):
        if len(cand_boxes) == 0:
            break
        x1 = np.maximum(box[0], cand_boxes[:, 0])
        y1 = np.maximum(box[1], cand_boxes[:, 1])
        x2 = np.minimum(box[2], cand_boxes[:, 2])
        y2 = np.minimum(box[3], cand_boxes[:, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (box[2] - box[0]) * (box[3] - box[1])
        areas = (cand_boxes[:, 2] - cand_boxes[:, 0]) * (cand_boxes[:, 3] - cand_boxes[:, 1])
        iou = inter / np.maximum(area + areas - inter, 1e-9)
        # Boxes clipped to the image border can have zero area; equal ones match.
        same = np.all(np.abs(cand_boxes - box) < 1e-3, axis=1)
        iou[same] = 1.0
        iou[(candidate["classes"] != cls) | used] = -1.0
        best = int(np.argmax(iou))
        if iou[best] >= iou_threshold:
            used[best] = True
            matched += 1
    return matched / len(ref_boxes)


def reference_results(task, images, image_size, prediction_decoder=None, preprocessor=None):
    """What an export must answer for `images`, computed without any export code.

    Each image is letterboxed on its own (the task's `preprocessor`, else a
    `YOLORImageConverter(image_size)`), run through the training-form
    ``task.detect``, and its boxes are mapped back by hand: ``(box - pad) /
    scale`` per axis, clipped to the image, as the official ``scale_coords``.

    Returns:
        One dict per image, in `Predictor.predict`'s form (``boxes`` x1y1x2y2
        in the image's pixels, ``scores``, ``classes``, each cut to the
        count) plus ``letterboxed`` (the network input), ``letterboxed_boxes``
        and, for the other heads, ``label_probabilities`` / ``embedding``.
    """
    converter = preprocessor or task.preprocessor or YOLORImageConverter(image_size)
    results = []
    for image in images:
        letterboxed, scale, pad = (np.asarray(value)[0] for value in converter(image[None]))
        outputs = {
            name: np.asarray(value)[0]
            for name, value in task.detect(
                letterboxed[None], prediction_decoder=prediction_decoder
            ).items()
        }
        result = {"letterboxed": letterboxed}
        if "num_detections" in outputs:
            count = int(outputs["num_detections"])
            boxes = outputs["boxes"][:count]
            height, width = image.shape[:2]
            original = (boxes - np.tile(pad, 2)) / np.tile(scale, 2)
            original = np.clip(original, 0.0, [width, height, width, height])
            result.update(
                boxes=original.astype(np.float32),
                scores=outputs["scores"][:count],
                classes=outputs["classes"][:count],
                letterboxed_boxes=boxes,
            )
        for name in ("label_probabilities", "embedding"):
            if name in outputs:
                result[name] = outputs[name]
        results.append(result)
    return results


def assert_same_detections(got, expected, rtol=1e-4, box_atol=1e-3):
    """Same detections, one to one: class, score within `rtol`, box within `box_atol` px.

    Detections whose scores tie exactly may come in either order (runtimes
    break ties differently), so rows are matched, not zipped. Both
    arguments hold ``boxes``, ``scores`` and ``classes`` cut to the count.
    """
    assert len(got["scores"]) == len(expected["scores"])
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=rtol, atol=1e-5)
    unused = list(range(len(got["scores"])))
    for box, score, cls in zip(expected["boxes"], expected["scores"], expected["classes"]):
        match = next(
            (
                index
                for index in unused
                if got["classes"][index] == cls
                and abs(got["scores"][index] - score) <= rtol * score + 1e-5
                and np.allclose(got["boxes"][index], box, rtol=rtol, atol=box_atol)
            ),
            None,
        )
        assert match is not None, f"no match for class {cls} score {score} box {box}"
        unused.remove(match)
