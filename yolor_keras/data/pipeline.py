"""`build_dataset`: the public entry from a dataset on disk to batches."""

import dataclasses
import os

import keras
import tensorflow as tf

from yolor_keras.data import augment
from yolor_keras.data import decode
from yolor_keras.data.coco_reader import read_coco_json
from yolor_keras.data.recipe import AugmentationRecipe
from yolor_keras.data.records import DetectionSource
from yolor_keras.data.tfds_reader import TFDSSource
from yolor_keras.data.yolo_reader import read_yolo_data_yaml
from yolor_keras.data.yolo_reader import read_yolo_txt

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class DatasetInfo:
    """What the model, the loss and the evaluator need to know of a dataset.

    Args:
        class_names: name of each contiguous class index.
        category_ids: original (e.g. COCO) category id of each class index,
            or None when the class indices are the ids.
        num_samples: samples per epoch.
        num_batches: batches per epoch.
        image_size: S; images are S x S.
        batch_size: the batch size.
        training: whether the batches are training batches.
        recipe: the `AugmentationRecipe` applied, or None.
        source: the `DetectionSource` read (`source.to_coco_dict()` gives
            the ground truth in original pixels).
    """

    class_names: tuple
    category_ids: tuple
    num_samples: int
    num_batches: int
    image_size: int
    batch_size: int
    training: bool
    recipe: AugmentationRecipe
    source: DetectionSource

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def report(self):
        """The `DataReport` of the skipped and repaired data."""
        return self.source.report


def load_source(
    source,
    split=None,
    image_dir=None,
    class_names=None,
    verify="decode",
    verbose=True,
):
    """Opens a dataset given in any supported form.

    Args:
        source: one of
            - a `DetectionSource` (e.g. from `read_coco_json`), used as is;
            - "tfds:NAME", e.g. "tfds:coco/2017" (`split` names the split);
            - a COCO `instances_*.json` file (images in `image_dir`);
            - a folder with `annotations/instances_{split}.json` and an
              image folder `{split}` (the COCO layout);
            - a YOLO data YAML (`split` picks its `train:`/`val:` entry);
            - a YOLO folder with `images/{split}` and `labels/{split}`, or
              a folder of images with the official `labels` mirror, or a
              `.txt` list of image paths.
        split: the split to read where the source holds several.
        image_dir: the image folder of a COCO JSON file.
        class_names: class names of a YOLO txt dataset.
        verify: "decode" or "header", see `read_coco_json`.
        verbose: print the indexing summary.

    Returns:
        A `DetectionSource`.
    """
    if isinstance(source, DetectionSource):
        return source
    source = os.fspath(source)
    if source.startswith("tfds:"):
        if split is None:
            raise ValueError(f"{source}: pass split=, e.g. 'train'.")
        tfds_source = TFDSSource(source[len("tfds:") :], split)
        if verbose:
            print(f"{tfds_source.report.name}: {tfds_source.num_samples} images.")
        return tfds_source
    options = {"verify": verify, "verbose": verbose}
    if source.endswith(".json"):
        return read_coco_json(source, image_dir=image_dir, **options)
    if source.endswith((".yaml", ".yml")):
        if split is None:
            raise ValueError(f"{source}: pass split=, e.g. 'train' or 'val'.")
        return read_yolo_data_yaml(source, split, **options)
    if os.path.isdir(source) and split is not None:
        coco_json = os.path.join(source, "annotations", f"instances_{split}.json")
        if os.path.isfile(coco_json):
            return read_coco_json(coco_json, image_dir=image_dir, **options)
        yolo_images = os.path.join(source, "images", split)
        if os.path.isdir(yolo_images):
            return read_yolo_txt(yolo_images, class_names=class_names, **options)
        raise FileNotFoundError(
            f"{source}: neither annotations/instances_{split}.json nor "
            f"images/{split} exists."
        )
    if os.path.isdir(source) or source.endswith(".txt"):
        return read_yolo_txt(source, class_names=class_names, **options)
    raise FileNotFoundError(f"Unrecognised dataset source: {source}")


def build_dataset(
    source,
    split=None,
    image_size=640,
    batch_size=16,
    training=True,
    recipe=None,
    augment=None,
    seed=0,
    cache=False,
    max_boxes=300,
    shuffle=None,
    image_dir=None,
    class_names=None,
    verify="decode",
    verbose=True,
):
    """Builds the `tf.data` pipeline of a detection dataset.

    Training batches (augment on) follow the official YOLOR loader: each
    sample is a 4-image mosaic warped once by a random perspective, with
    optional mixup, HSV gains and flips, all drawn from `recipe`. An epoch
    has as many samples as the dataset has images, and each image appears
    in 4 mosaics per epoch (8 with mixup), as on average in the official
    loader (there: once first, three times as a random partner). The
    training pipeline is TF-native (parallel `map`s, no Python per sample).

    Evaluation batches (training=False) letterbox each image into S x S
    (grey 114/255 padding) in file order and carry per-image metadata.

    Args:
        source: the dataset, in any form `load_source` accepts.
        split: the split to read where the source holds several.
        image_size: S; images come out S x S.
        batch_size: images per batch (the global batch under tf.distribute).
        training: training batches (shuffled, fixed-size) or evaluation
            batches (in order, the last one may be smaller).
        recipe: an `AugmentationRecipe` or a hyp dict; the official
            `hyp.scratch.1280.yaml` values by default.
        augment: apply the recipe; defaults to `training`.
        seed: seed of the shuffling and augmentation; the same seed gives
            the same batches, epoch after epoch.
        cache: keep decoded (and resized) images in memory after the first
            pass. Much faster, at about S * S * 3 bytes per image.
        max_boxes: boxes per image are padded (or cut) to this many.
        shuffle: shuffle the samples; defaults to `training`.
        image_dir: the image folder of a COCO JSON file.
        class_names: class names of a YOLO txt dataset.
        verify: "decode" or "header" index-time checks, see `read_coco_json`.
        verbose: print the indexing summary and cache progress.

    Returns:
        (dataset, info): `dataset` yields `(images, labels)` with images
        (B, S, S, 3) float32 in [0, 1] and labels a dict with "boxes"
        (B, max_boxes, 4) float32 xyxy in input pixels and "classes"
        (B, max_boxes) int32, padded with -1. Evaluation labels also hold
        "image_id" (B,) int64, "original_size" (B, 2) int32 (height,
        width), "scale" (B, 2) and "pad" (B, 2) float32 (x, y), with which
        `letterbox_to_original` maps boxes back. `info` is a `DatasetInfo`.
    """
    source = load_source(source, split, image_dir, class_names, verify, verbose)
    augment = training if augment is None else augment
    shuffle = training if shuffle is None else shuffle
    if recipe is None:
        recipe = AugmentationRecipe()
    elif isinstance(recipe, dict):
        recipe = AugmentationRecipe.from_dict(recipe)
    num_samples = source.num_samples
    if training and num_samples < batch_size:
        raise ValueError(
            f"{source.report.name}: {num_samples} usable images, fewer than "
            f"batch_size={batch_size}."
        )

    if augment:
        dataset = _augmented(
            source, image_size, recipe, seed, cache, shuffle, max_boxes, verbose
        )
    else:
        dataset = _letterboxed(
            source, image_size, seed, cache, shuffle, max_boxes, verbose, training
        )
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)

    info = DatasetInfo(
        class_names=source.class_names,
        category_ids=source.category_ids,
        num_samples=num_samples,
        num_batches=(
            num_samples // batch_size if training else -(-num_samples // batch_size)
        ),
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        recipe=recipe if augment else None,
        source=source,
    )
    return dataset, info


def _augmented(source, image_size, recipe, seed, cache, shuffle, max_boxes, verbose):
    group = augment.group_size(recipe)

    # Pre-resize when caching (to hold less memory) or when the general warp
    # pastes tiles on a canvas; the axis-aligned mosaic resamples sources.
    resize = cache or not augment.is_axis_aligned(recipe)

    def decode_sample(element):
        return decode.decode_for_training(element, image_size, resize=resize)

    if cache:
        decoded = source.encoded_dataset(shuffle=False)
        decoded = decoded.map(decode_sample, num_parallel_calls=AUTOTUNE)
        decoded = _skip_undecodable(decoded, source).cache()
        _fill_cache(decoded, source.num_samples, verbose)
        if shuffle:
            decoded = decoded.shuffle(
                source.num_samples, seed=seed, reshuffle_each_iteration=True
            )
        # Each repetition is a fresh permutation, so every image is in
        # `group` different groups per epoch.
        decoded = decoded.repeat(group)
    else:
        encoded = source.encoded_dataset(shuffle=shuffle, seed=seed).repeat(group)
        decoded = _skip_undecodable(
            encoded.map(decode_sample, num_parallel_calls=AUTOTUNE), source
        )

    groups = decoded.padded_batch(
        group,
        padded_shapes={
            "image": [None, None, 3],
            "source_size": [2],
            "size": [2],
            "boxes": [None, 4],
            "classes": [None],
        },
        padding_values={
            "image": tf.constant(0, tf.uint8),
            "source_size": 0,
            "size": 0,
            "boxes": 0.0,
            "classes": -1,
        },
        drop_remainder=True,
    )
    # One stateless seed per sample; re-drawn each epoch, reproducibly.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment_sample(group_element, sample_seed):
        image, labels = augment.augment_group(
            group_element, sample_seed, recipe, image_size, max_boxes
        )
        return image, labels

    return tf.data.Dataset.zip(groups, seeds).map(
        augment_sample, num_parallel_calls=AUTOTUNE
    )


def _letterboxed(
    source, image_size, seed, cache, shuffle, max_boxes, verbose, training
):
    def decode_sample(element):
        return decode.decode_for_evaluation(element, image_size)

    def to_batch_element(sample):
        image = tf.cast(sample["image"], tf.float32) / 255.0
        keep = tf.ones_like(sample["classes"], tf.bool)
        labels = augment.pad_boxes(sample["boxes"], sample["classes"], keep, max_boxes)
        if not training:
            for key in ("image_id", "original_size", "scale", "pad"):
                labels[key] = sample[key]
        return image, labels

    if cache:
        decoded = source.encoded_dataset(shuffle=False)
        decoded = decoded.map(decode_sample, num_parallel_calls=AUTOTUNE)
        decoded = _skip_undecodable(decoded, source).cache()
        _fill_cache(decoded, source.num_samples, verbose)
        if shuffle:
            decoded = decoded.shuffle(
                source.num_samples, seed=seed, reshuffle_each_iteration=True
            )
    else:
        encoded = source.encoded_dataset(shuffle=shuffle, seed=seed)
        decoded = _skip_undecodable(
            encoded.map(decode_sample, num_parallel_calls=AUTOTUNE), source
        )
    return decoded.map(to_batch_element, num_parallel_calls=AUTOTUNE)


def _fill_cache(dataset, num_samples, verbose):
    """Decodes every image once so that the in-memory cache is complete.

    Downstream iterators of a cached dataset share its cache, so later
    epochs (and the shuffle buffer, which holds references, not copies)
    read decoded pixels from memory.
    """
    progress = keras.utils.Progbar(
        num_samples, verbose=1 if verbose else 0, unit_name="image"
    )
    for count, _ in enumerate(dataset.prefetch(AUTOTUNE), start=1):
        if count % 64 == 0 or count == num_samples:
            progress.update(count)


def _skip_undecodable(dataset, source):
    """Drops (with a logged warning) images that fail to decode.

    Only for sources not decoded at index time: there a corrupt file would
    otherwise stop training mid-epoch.
    """
    if source.fully_verified:
        return dataset
    return dataset.ignore_errors(log_warning=True)
