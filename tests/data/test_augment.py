"""Training augmentation: boxes follow the pixels, seeds reproduce samples.

The box checks are detectron2's: draw filled rectangles, augment, find
each rectangle's pixels in the output, and compare their extent with the
box the pipeline computed.
"""

import numpy as np
import pytest
import tensorflow as tf

from yolor_keras.data import AugmentationRecipe
from yolor_keras.data import augment
from yolor_keras.data import image_decoding

S = 256
COLORS = np.array([[250, 30, 30], [30, 250, 30], [30, 30, 250], [250, 250, 30]], np.float32)
BACKGROUND = 90
NO_COLOUR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def make_group(encode, plain_image, shapes, resize, with_boxes=True, image_format="PNG"):
    """Decodes images with one coloured rectangle each into a padded group."""
    decoded = []
    for index, (height, width) in enumerate(shapes):
        color = COLORS[index % 4].astype(np.uint8)
        x1, y1, x2, y2 = width // 4, height // 5, width * 3 // 4, height * 4 // 5
        array = plain_image(height, width, (BACKGROUND,) * 3, [(x1, y1, x2, y2, tuple(color))])
        boxes = np.array([[x1 / width, y1 / height, x2 / width, y2 / height]], np.float32)
        classes = np.array([index % 4], np.int32)
        if not with_boxes:
            boxes, classes = boxes[:0], classes[:0]
        element = {
            "image": tf.constant(encode(array, image_format)),
            "is_path": tf.constant(False),
            "boxes": tf.constant(boxes.reshape(-1, 4)),
            "classes": tf.constant(classes),
        }
        decoded.append(image_decoding.decode_for_training(element, S, resize=resize))
    height = max(int(d["image"].shape[0]) for d in decoded)
    width = max(int(d["image"].shape[1]) for d in decoded)
    count = max(int(d["classes"].shape[0]) for d in decoded)

    def pad(d):
        image = d["image"]
        image = tf.pad(image, [[0, height - image.shape[0]], [0, width - image.shape[1]], [0, 0]])
        missing = count - int(d["classes"].shape[0])
        return {
            "image": image,
            "source_size": d["source_size"],
            "size": d["size"],
            "boxes": tf.pad(d["boxes"], [[0, missing], [0, 0]]),
            "classes": tf.pad(d["classes"], [[0, missing]], constant_values=-1),
        }

    padded = [pad(d) for d in decoded]
    return {key: tf.stack([p[key] for p in padded]) for key in padded[0]}


def drawn_extent(image, class_index):
    """Extent (x1, y1, x2, y2) of the pixels closer to the class colour."""
    pixels = image * 255.0
    color = COLORS[class_index]
    # Nearer the rectangle colour than halfway to the background or grey.
    distance = np.abs(pixels - color).max(axis=-1)
    ys, xs = np.nonzero(distance < (color.max() - BACKGROUND) / 2)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def check_boxes_follow_pixels(group, recipe, seeds):
    compared = 0
    for seed in seeds:
        image, labels = augment.augment_group(
            group, tf.constant([seed, 11], tf.int64), recipe, S, max_boxes=16
        )
        image = image.numpy()
        assert image.shape == (S, S, 3) and 0.0 <= image.min() and image.max() <= 1.0
        for box, label in zip(labels["boxes"].numpy(), labels["classes"].numpy()):
            if label < 0:
                continue
            found = drawn_extent(image, label)
            assert found is not None, f"seed {seed}: box of class {label} has no pixels"
            if min(box[2] - box[0], box[3] - box[1]) < 24:
                continue  # a pixel of edge blur would dominate the IoU
            inside = box.min() > 0 and box.max() < S
            if not inside and not augment.is_axis_aligned(recipe):
                # As official, a rotated box cut by the border is the clipped
                # bounding box of all 4 corners: larger than what is visible.
                continue
            assert iou(found, box) >= 0.95, (seed, label, found, box)
            compared += 1
    return compared


SHAPES = [(200, 300), (300, 240), (256, 256), (180, 320)]  # not pre-resized


@pytest.mark.parametrize("resize", [False, True])
def test_mosaic_affine_flip_boxes_follow_pixels(encode, plain_image, resize):
    recipe = AugmentationRecipe(**NO_COLOUR, flipud=0.5, fliplr=0.5)
    group = make_group(encode, plain_image, SHAPES, resize=resize)
    assert check_boxes_follow_pixels(group, recipe, range(12)) >= 12


def test_large_jpeg_sources_decoded_at_a_reduced_scale(encode, plain_image):
    # 2-4x larger than their tiles: libjpeg decodes them at 1/2 or 1/4 scale.
    shapes = [(600, 900), (1100, 560), (700, 700), (520, 1000)]
    group = make_group(encode, plain_image, shapes, resize=False, image_format="JPEG")
    source = group["source_size"].numpy()
    assert (source.max(axis=1) >= S).all() and (source.max(axis=1) < 2 * S).all()
    recipe = AugmentationRecipe(**NO_COLOUR, fliplr=0.5)
    assert check_boxes_follow_pixels(group, recipe, range(8)) >= 8


def test_rotation_shear_perspective_boxes_follow_pixels(encode, plain_image):
    # A milder zoom and shift keep more boxes whole (see the border rule).
    recipe = AugmentationRecipe(
        **NO_COLOUR,
        degrees=20.0,
        shear=8.0,
        perspective=0.0005,
        flipud=0.5,
        scale=0.3,
        translate=0.2,
    )
    group = make_group(encode, plain_image, SHAPES, resize=True)
    assert check_boxes_follow_pixels(group, recipe, range(16)) >= 8


def test_letterbox_without_mosaic_boxes_follow_pixels(encode, plain_image):
    recipe = AugmentationRecipe(**NO_COLOUR, mosaic=0.0, scale=0.3, translate=0.1)
    group = make_group(encode, plain_image, SHAPES, resize=False)
    compared = check_boxes_follow_pixels(group, recipe, range(6))
    assert compared >= 5
    # Only the first image is used: every box is class 0.
    _, labels = augment.augment_group(group, tf.constant([0, 1], tf.int64), recipe, S, 16)
    assert set(labels["classes"].numpy()) <= {0, -1}


def test_axis_aligned_rendering_matches_the_general_warp(encode, plain_image):
    # Two independent renderers of the same mosaic: tile-by-tile resampling
    # and canvas + projective warp.
    recipe = AugmentationRecipe(**NO_COLOUR, fliplr=0.0)
    group = make_group(encode, plain_image, SHAPES, resize=True)
    for seed in range(4):
        geometry = augment.sample_geometry(tf.constant([seed, 3], tf.int64), recipe, S)
        layout = augment._layout(group, geometry, True, S)
        matrix = augment.transforms.perspective_matrix(
            geometry, layout["canvas_size"], layout["canvas_size"], S
        )
        fast = augment._render_axis_aligned(group, layout, geometry, S).numpy()
        general = augment._render_warped(group, layout, matrix, S).numpy()
        difference = np.abs(fast - general)
        assert difference.mean() < 1.0  # 0-255 scale; edges may differ a little
        assert (difference > 8).mean() < 0.01


def test_images_without_boxes_survive_every_step(encode, plain_image):
    recipes = [
        AugmentationRecipe(),
        AugmentationRecipe(mosaic=0.0, degrees=10.0),
        AugmentationRecipe(mixup=1.0, flipud=1.0),
    ]
    for recipe in recipes:
        shapes = SHAPES * (2 if recipe.mixup else 1)
        group = make_group(encode, plain_image, shapes, resize=False, with_boxes=False)
        image, labels = augment.augment_group(group, tf.constant([5, 5], tf.int64), recipe, S, 8)
        assert image.shape == (S, S, 3)
        assert np.isfinite(image.numpy()).all()
        np.testing.assert_array_equal(labels["classes"].numpy(), [-1] * 8)
        np.testing.assert_array_equal(labels["boxes"].numpy(), np.zeros((8, 4)))


def test_mixup_blends_two_mosaics_and_keeps_both_box_sets(encode, plain_image):
    recipe = AugmentationRecipe(**NO_COLOUR, mixup=1.0, fliplr=0.0)
    group = make_group(encode, plain_image, SHAPES + SHAPES[::-1], resize=False)
    seed = tf.constant([2, 9], tf.int64)
    image, labels = augment.augment_group(group, seed, recipe, S, 32)
    # Rebuild both mosaics with the same parameters and blend them here.
    params = augment.sample_parameters(seed, recipe, S)
    ratio = float(params["photometric"]["mixup_ratio"])
    assert 0.0 < ratio < 1.0
    first = {key: value[:4] for key, value in group.items()}
    second = {key: value[4:] for key, value in group.items()}
    image1, boxes1, _, keep1 = augment._compose(first, params["geometry"], recipe, S)
    image2, boxes2, _, keep2 = augment._compose(second, params["mixup_geometry"], recipe, S)
    expected = (image1 * ratio + image2 * (1 - ratio)) / 255.0
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-5)
    expected_boxes = np.concatenate([boxes1.numpy()[keep1.numpy()], boxes2.numpy()[keep2.numpy()]])
    assert len(expected_boxes) > 0 and keep2.numpy().any()
    kept = labels["classes"].numpy() >= 0
    np.testing.assert_allclose(labels["boxes"].numpy()[kept], expected_boxes)


def test_same_seed_same_sample_and_different_seed_differs(encode, plain_image):
    recipe = AugmentationRecipe(mixup=0.5, degrees=5.0)
    group = make_group(encode, plain_image, SHAPES * 2, resize=True)
    run = tf.function(lambda seed: augment.augment_group(group, seed, recipe, S, 16))
    image_a, labels_a = run(tf.constant([4, 2], tf.int64))
    image_b, labels_b = run(tf.constant([4, 2], tf.int64))
    image_c, _ = run(tf.constant([5, 2], tf.int64))
    np.testing.assert_array_equal(image_a.numpy(), image_b.numpy())
    np.testing.assert_array_equal(labels_a["boxes"].numpy(), labels_b["boxes"].numpy())
    assert np.abs(image_a.numpy() - image_c.numpy()).mean() > 0.01


def test_sampled_parameters_stay_in_the_recipe_ranges():
    recipe = AugmentationRecipe(degrees=10.0, shear=3.0, perspective=0.001, mixup=0.3)
    angles, scales, translates, gains, mosaic_center = [], [], [], [], []
    sample = tf.function(lambda seed: augment.sample_parameters(seed, recipe, 640))
    for seed in range(200):
        params = sample(tf.constant([seed, 0], tf.int64))
        geometry = params["geometry"]
        angles.append(float(geometry["angle"]))
        scales.append(float(geometry["scale"]))
        translates.append(float(geometry["translate_x"]))
        gains.append(params["photometric"]["hsv_gains"].numpy())
        mosaic_center.append(geometry["center"].numpy())
    assert -10 <= min(angles) < -8 and 8 < max(angles) <= 10
    assert 0.5 <= min(scales) < 0.55 and 1.45 < max(scales) <= 1.5
    assert 0.0 <= min(translates) < 0.05 and 0.95 < max(translates) <= 1.0
    gains = np.array(gains)
    spread = np.abs(gains - 1).max(axis=0)
    assert (spread <= [0.015, 0.7, 0.4]).all() and (spread > [0.014, 0.65, 0.37]).all()
    centers = np.array(mosaic_center)
    assert centers.min() >= 320 and centers.max() < 960


def test_max_boxes_caps_the_padded_labels():
    boxes = tf.constant(np.tile([[1.0, 2.0, 30.0, 40.0]], (10, 1)), tf.float32)
    classes = tf.range(10, dtype=tf.int32)
    keep = tf.constant([True, False] * 5)
    out = augment.pad_boxes(boxes, classes, keep, 3)
    np.testing.assert_array_equal(out["classes"].numpy(), [0, 2, 4])
    out = augment.pad_boxes(boxes, classes, keep, 7)
    np.testing.assert_array_equal(out["classes"].numpy(), [0, 2, 4, 6, 8, -1, -1])
    np.testing.assert_array_equal(out["boxes"].numpy()[5:], np.zeros((2, 4)))
