"""Multi-task batches: detection boxes, multi-label targets and identities per image.

Built for COCO JSON files that carry instance identities, such as those of
`yolor_keras.data.synthetic.generate_dataset`. Each image yields three
targets, keyed like the outputs of `yolor_keras.tasks.YOLORMultiTask`:

- ``"detection"``: ``{"boxes", "classes"}``, the detection contract (xyxy
  boxes in input pixels, class indices, -1 padded);
- ``"classification"``: the C-hot vector of the classes present in the
  image (those of its detection boxes);
- ``"embedding"``: the image's **identity**: the ``instance_id`` of its
  largest object (largest annotated ``area``, i.e. visible pixels; ties go
  to the larger box, then the smaller instance id), or -1 for an image
  without objects. Instances recur across images, so identities repeat,
  and the same instance keeps its id in every split.

Images are letterboxed (aspect kept, grey padding); training batches may be
flipped horizontally, boxes with them. Mosaic is not used: it would mix the
images whose labels the classification and embedding targets describe.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from yolor_keras.data import augment
from yolor_keras.data import decode
from yolor_keras.data.coco_reader import read_coco_json
from yolor_keras.data.pipeline import _fill_cache

AUTOTUNE = tf.data.AUTOTUNE
NO_IDENTITY = -1


@dataclasses.dataclass
class MultiTaskDatasetInfo:
    """What a multi-task model, its losses and its evaluation need of a dataset.

    Args:
        class_names: name of each contiguous class index.
        category_ids: original category id of each class index.
        identities: ``(num_samples,)`` int identity of every sample, in
            file order (-1: none).
        num_samples: samples per epoch.
        num_batches: batches per epoch.
        image_size: S; images are S x S.
        batch_size: the batch size.
        training: whether the batches are training batches.
        source: the `RecordSet` read (``source.to_coco_dict()`` is the
            detection ground truth in original pixels).
    """

    class_names: tuple
    category_ids: tuple
    identities: np.ndarray
    num_samples: int
    num_batches: int
    image_size: int
    batch_size: int
    training: bool
    source: object

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def num_identities(self):
        """Distinct identities among the samples (-1 not counted)."""
        return len(set(self.identities.tolist()) - {NO_IDENTITY})


def _annotation_file(source, split):
    source = os.fspath(source)
    if source.endswith(".json"):
        return source
    if split is None:
        raise ValueError(f"{source}: pass split= (e.g. 'train') to pick a COCO annotation file.")
    path = os.path.join(source, "annotations", f"instances_{split}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{source}: no annotations/instances_{split}.json.")
    return path


def read_identities(annotation_file):
    """The identity of every image of a COCO JSON file (see the module docstring).

    Args:
        annotation_file: a COCO JSON whose annotations carry ``instance_id``.

    Returns:
        dict: image id -> identity (the largest object's ``instance_id``, or
        -1 for an image without annotations).
    """
    try:
        with open(annotation_file, encoding="utf-8") as file:
            coco = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{annotation_file}: not valid JSON ({error}).") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{annotation_file}: expected a COCO object with an 'images' list.")
    best = {int(image["id"]): None for image in coco["images"]}
    for position, annotation in enumerate(coco.get("annotations", [])):
        if annotation.get("iscrowd", 0):
            continue
        if "instance_id" not in annotation:
            raise ValueError(
                f"{annotation_file}: annotations[{position}] (id {annotation.get('id')}) has no "
                "'instance_id'; the embedding task needs instance identities "
                "(see yolor_keras.data.synthetic)."
            )
        image_id = int(annotation["image_id"])
        if image_id not in best:
            continue
        bbox = annotation.get("bbox") or [0, 0, 0, 0]
        area = float(annotation.get("area", bbox[2] * bbox[3]))
        # Larger visible area first, then the larger box, then the smaller id.
        key = (area, float(bbox[2] * bbox[3]), -int(annotation["instance_id"]))
        if best[image_id] is None or key > best[image_id]:
            best[image_id] = key
    return {image_id: NO_IDENTITY if key is None else -key[2] for image_id, key in best.items()}


def _targets_dataset(source, identities):
    """Per sample, in file order: the multi-hot classes and the identity."""
    multi_hot = np.zeros((source.num_samples, source.num_classes), np.float32)
    for index, sample in enumerate(source.samples):
        multi_hot[index, np.asarray(sample.classes, np.int64)] = 1.0
    return tf.data.Dataset.from_tensor_slices(
        {"labels": multi_hot, "identity": identities.astype(np.int32)}
    )


def _flip(image, boxes, flip):
    """Mirrors an (S, S, 3) image and its xyxy pixel boxes when `flip` is true."""
    size = tf.cast(tf.shape(image)[1], tf.float32)
    flipped_boxes = tf.stack(
        [size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=-1
    )
    return (
        tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image),
        tf.cond(flip, lambda: flipped_boxes, lambda: boxes),
    )


def build_multi_task_dataset(
    source,
    split=None,
    image_size=256,
    batch_size=16,
    training=True,
    flip=None,
    seed=0,
    cache=True,
    max_boxes=100,
    shuffle=None,
    image_dir=None,
    verify="decode",
    verbose=True,
):
    """Builds the `tf.data` pipeline of a multi-task dataset.

    Args:
        source: a COCO JSON file with ``instance_id`` annotations, or a
            folder in the COCO layout (``annotations/instances_{split}.json``
            and an image folder ``{split}``), e.g. from
            `yolor_keras.data.synthetic.generate_dataset`.
        split: the split to read from a folder.
        image_size: S; images are letterboxed to S x S.
        batch_size: images per batch (the global batch under tf.distribute).
        training: training batches (shuffled, fixed-size) or evaluation
            batches (file order, last batch may be smaller, with metadata).
        flip: random horizontal flips (probability 0.5); defaults to
            `training`.
        seed: seed of the shuffling and flips.
        cache: keep the letterboxed images in memory after the first pass
            (S * S * 3 bytes per image).
        max_boxes: boxes per image are padded (or cut) to this many.
        shuffle: shuffle the samples; defaults to `training`.
        image_dir: the image folder of a COCO JSON file.
        verify: "decode" or "header" index-time checks, see `read_coco_json`.
        verbose: print the indexing summary and cache progress.

    Returns:
        (dataset, info): `dataset` yields ``(images, targets)``: images
        (B, S, S, 3) float32 in [0, 1]; targets a dict with ``"detection"``
        (``"boxes"`` (B, max_boxes, 4) float32, ``"classes"`` (B, max_boxes)
        int32, and for evaluation batches ``"image_id"``,
        ``"original_size"``, ``"scale"`` and ``"pad"`` as in
        `build_dataset`), ``"classification"`` (B, C) float32 multi-hot and
        ``"embedding"`` (B,) int32 identities. `info` is a
        `MultiTaskDatasetInfo`.
    """
    annotation_file = _annotation_file(source, split)
    records = read_coco_json(annotation_file, image_dir=image_dir, verify=verify, verbose=verbose)
    identity_of_image = read_identities(annotation_file)
    identities = np.array(
        [identity_of_image[sample.image_id] for sample in records.samples], np.int64
    )
    flip = training if flip is None else flip
    shuffle = training if shuffle is None else shuffle
    if training and records.num_samples < batch_size:
        raise ValueError(
            f"{annotation_file}: {records.num_samples} usable images, fewer than "
            f"batch_size={batch_size}."
        )

    elements = tf.data.Dataset.zip(
        records.encoded_dataset(shuffle=False), _targets_dataset(records, identities)
    )

    def letterboxed(element, targets):
        sample = decode.decode_for_evaluation(element, image_size)
        sample.update(targets)
        return sample

    decoded = elements.map(letterboxed, num_parallel_calls=AUTOTUNE)
    if not records.fully_verified:
        decoded = decoded.ignore_errors(log_warning=True)
    if cache:
        decoded = decoded.cache()
        _fill_cache(decoded, records.num_samples, verbose)
    if shuffle:
        decoded = decoded.shuffle(records.num_samples, seed=seed, reshuffle_each_iteration=True)
    # One stateless seed per sample; re-drawn each epoch, reproducibly.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def to_batch_element(sample, sample_seed):
        image = tf.cast(sample["image"], tf.float32) / 255.0
        boxes = sample["boxes"]
        if flip:
            do_flip = tf.random.stateless_uniform([], seed=sample_seed) < 0.5
            image, boxes = _flip(image, boxes, do_flip)
        keep = tf.ones_like(sample["classes"], tf.bool)
        detection = augment.pad_boxes(boxes, sample["classes"], keep, max_boxes)
        if not training:
            for key in ("image_id", "original_size", "scale", "pad"):
                detection[key] = sample[key]
        targets = {
            "detection": detection,
            "classification": sample["labels"],
            "embedding": sample["identity"],
        }
        return image, targets

    dataset = tf.data.Dataset.zip(decoded, seeds).map(to_batch_element, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    dataset = dataset.with_options(options)

    num_samples = records.num_samples
    info = MultiTaskDatasetInfo(
        class_names=records.class_names,
        category_ids=records.category_ids,
        identities=identities,
        num_samples=num_samples,
        num_batches=num_samples // batch_size if training else -(-num_samples // batch_size),
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        source=records,
    )
    return dataset, info
