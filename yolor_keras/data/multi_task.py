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

The batches come from `build_dataset` with these two as extra targets
(`class_presence` and `identities_from` are its producers): images are
letterboxed (aspect kept, grey padding); training batches may be flipped
horizontally, boxes with them. Mosaic is not used: it would mix the images
whose labels the classification and embedding targets describe.
"""

import dataclasses
import os

import numpy as np

from yolor_keras.data.coco_reader import load_coco_file
from yolor_keras.data.pipeline import DatasetInfo
from yolor_keras.data.pipeline import build_dataset

NO_IDENTITY = -1


class MultiTaskDatasetInfo(DatasetInfo):
    """A `DatasetInfo` whose targets hold the multi-task ones.

    ``targets["classification"]`` is the ``(num_samples, C)`` multi-hot of
    every sample and ``targets["embedding"]`` its identity, in file order.
    """

    @property
    def identities(self):
        """``(num_samples,)`` identity of every sample, in file order (-1: none)."""
        return self.targets["embedding"]

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
    coco = load_coco_file(annotation_file)
    best = {int(image["id"]): None for image in coco["images"]}
    for position, annotation in enumerate(coco["annotations"]):
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


def class_presence(source):
    """Extra-target producer: the multi-hot vector of the classes in each image.

    Args:
        source: a `DetectionSource` that lists its samples.

    Returns:
        ``(num_samples, num_classes)`` float32, in the source's order.
    """
    multi_hot = np.zeros((source.num_samples, source.num_classes), np.float32)
    for index, sample in enumerate(source.samples):
        multi_hot[index, np.asarray(sample.classes, np.int64)] = 1.0
    return multi_hot


def identities_from(annotation_file):
    """Extra-target producer of identities, read from a COCO JSON file.

    Args:
        annotation_file: the COCO JSON the source was read from, whose
            annotations carry ``instance_id``.

    Returns:
        A producer: source -> ``(num_samples,)`` int32 identities in the
        source's order (see `read_identities`).
    """

    def identities(source):
        identity_of_image = read_identities(annotation_file)
        return np.array([identity_of_image[sample.image_id] for sample in source.samples], np.int32)

    return identities


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
    """`build_dataset` with the classification and embedding targets.

    The same as ``build_dataset(annotation_file, augment=False,
    flip=training, extra_targets={"classification": class_presence,
    "embedding": identities_from(annotation_file)})``.

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
    dataset, info = build_dataset(
        annotation_file,
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        augment=False,
        flip=training if flip is None else flip,
        seed=seed,
        cache=cache,
        max_boxes=max_boxes,
        shuffle=shuffle,
        image_dir=image_dir,
        verify=verify,
        verbose=verbose,
        extra_targets={
            "classification": class_presence,
            "embedding": identities_from(annotation_file),
        },
    )
    fields = {field.name: getattr(info, field.name) for field in dataclasses.fields(info)}
    return dataset, MultiTaskDatasetInfo(**fields)
