"""`build_dataset`: the public entry from a dataset on disk to batches."""

import collections
import dataclasses
import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from yolor_keras.atomic import write_directory_atomically
from yolor_keras.data import augment
from yolor_keras.data import image_decoding
from yolor_keras.data import report as reasons
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
        targets: the extra targets, name -> array with one row per sample
            in the source's order (see `build_dataset`'s `extra_targets`),
            or None.
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
    targets: dict = None

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
            f"{source}: neither annotations/instances_{split}.json nor images/{split} exists."
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
    flip=False,
    extra_targets=None,
):
    """Builds the `tf.data` pipeline of a detection dataset.

    Training batches (augment on) follow the official YOLOR loader: each
    sample is a 4-image mosaic warped once by a random perspective, with
    optional mixup, HSV gains and flips, all drawn from `recipe`. An epoch
    has as many samples as the dataset has images, and each image appears
    in 4 mosaics per epoch (8 with mixup), as on average in the official
    loader (there: once first, three times as a random partner). Each
    image is read and decoded once per epoch and shared by its mosaics
    (`mosaic_groups`), where the official loader decodes it for each. The
    training pipeline is TF-native (parallel `map`s, no Python per sample).

    Evaluation batches (training=False) letterbox each image into S x S
    (grey 114/255 padding) in file order and carry per-image metadata.
    With augment=False, training batches are letterboxed the same way,
    optionally flipped (`flip`).

    Extra targets turn detection batches into multi-task batches. Each
    extra target is one array row per image (a class-presence vector, an
    identity, ...); the rows travel with their image through shuffling and
    caching, and the labels become ``{"detection": {"boxes", "classes",
    ...}, name: (B, ...) rows, ...}``, keyed like a multi-task model's
    outputs. Mosaic mixes four images, whose per-image targets could then
    not describe the sample, so extra targets need augment=False.

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
        cache: where decoded (and resized) images are kept after a first
            pass that decodes them all, so later epochs skip reading and
            decoding:
            - False (or None): no cache, every image decoded every time;
            - "memory" (or True): in RAM, at most S * S * 3 bytes per image
              (`cache_bytes`). Refused, before any decoding, with the bytes
              needed and available, when it would not fit in the available
              memory;
            - "disk:FOLDER": uint8 files in a sub-folder of FOLDER named by
              the dataset's fingerprint (files, sizes, boxes, S and the
              kind of batches), written atomically and reused by later
              runs; for datasets that do not fit in RAM.
        max_boxes: boxes per image are padded (or cut) to this many.
        shuffle: shuffle the samples; defaults to `training`.
        image_dir: the image folder of a COCO JSON file.
        class_names: class names of a YOLO txt dataset.
        verify: "decode" or "header" index-time checks, see `read_coco_json`.
            With "header" (and for tfds), an image that fails to decode in
            the pipeline is skipped and counted in `info.report`.
        verbose: print the indexing summary and cache progress.
        flip: with augment=False, flip each training image horizontally
            (boxes with it) with probability 0.5, drawn from `seed`.
        extra_targets: None, or a dict name -> producer, where a producer is
            an array with one row per sample in the source's order, or a
            callable taking the `DetectionSource` and returning one (see
            `yolor_keras.data.multi_task` for the class-presence and
            identity producers). The source must list its samples (COCO
            JSON or YOLO txt, not tfds).

    Returns:
        (dataset, info): `dataset` yields `(images, labels)` with images
        (B, S, S, 3) float32 in [0, 1] and labels a dict with "boxes"
        (B, max_boxes, 4) float32 xyxy in input pixels and "classes"
        (B, max_boxes) int32, padded with -1. Evaluation labels also hold
        "image_id" (B,) int64, "original_size" (B, 2) int32 (height,
        width), "scale" (B, 2) and "pad" (B, 2) float32 (x, y), with which
        `letterbox_to_original` maps boxes back. With `extra_targets`,
        those labels sit under "detection" and each extra target under its
        name. `info` is a `DatasetInfo`.
    """
    source = load_source(source, split, image_dir, class_names, verify, verbose)
    cache = parse_cache(cache, source.report.name)
    augment = training if augment is None else augment
    shuffle = training if shuffle is None else shuffle
    name = source.report.name
    if flip and augment:
        raise ValueError(
            f"{name}: flip= is for augment=False batches; augmented batches "
            "flip as the recipe's fliplr says."
        )
    if flip and not training:
        raise ValueError(
            f"{name}: flip=True needs training=True; evaluation boxes are mapped "
            "back to the unflipped image."
        )
    targets = extra_target_arrays(extra_targets, source)
    if targets and augment:
        raise ValueError(
            f"{name}: extra targets need augment=False; a mosaic mixes the images "
            "whose targets they are."
        )
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

    if cache.kind == "memory":
        check_memory_cache(source, image_size, resized=augment)
    if augment:
        dataset = _augmented(source, image_size, recipe, seed, cache, shuffle, max_boxes, verbose)
    else:
        dataset = _letterboxed(
            source,
            image_size,
            seed,
            cache,
            shuffle,
            max_boxes,
            verbose,
            training,
            flip,
            targets,
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
        num_batches=(num_samples // batch_size if training else -(-num_samples // batch_size)),
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        recipe=recipe if augment else None,
        source=source,
        targets=targets,
    )
    return dataset, info


def extra_target_arrays(extra_targets, source):
    """Evaluates the producers of `build_dataset`'s `extra_targets`.

    Returns:
        dict name -> NumPy array with one row per sample of `source`, in
        its order, or None when there are no extra targets.
    """
    if not extra_targets:
        return None
    name = source.report.name
    if not hasattr(source, "samples"):
        raise ValueError(
            f"{name}: extra targets need a source that lists its samples "
            "(a COCO JSON or YOLO txt dataset)."
        )
    if "detection" in extra_targets:
        raise ValueError(f"{name}: 'detection' is the name of the box labels; rename the target.")
    arrays = {}
    for target, producer in extra_targets.items():
        value = np.asarray(producer(source) if callable(producer) else producer)
        if value.ndim == 0 or len(value) != source.num_samples:
            raise ValueError(
                f"{name}: extra target {target!r} has shape {value.shape}; it needs one "
                f"row per sample ({source.num_samples}), in the source's order."
            )
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        elif value.dtype == np.int64:
            value = value.astype(np.int32)
        arrays[target] = value
    return arrays


def _augmented(source, image_size, recipe, seed, cache, shuffle, max_boxes, verbose):
    group = augment.group_size(recipe)

    # Pre-resize when caching (to hold less memory) or when the general warp
    # pastes tiles on a canvas; the axis-aligned mosaic resamples sources.
    resize = cache or not augment.is_axis_aligned(recipe)

    def decode_sample(element):
        return image_decoding.decode_for_training(element, image_size, resize=resize)

    if cache:
        encoded = source.encoded_dataset(shuffle=False)
        decoded = decode_skipping_failures(encoded, decode_sample, source)
        decoded = cached(decoded, cache, source, f"train{image_size}", verbose)
        if shuffle:
            decoded = decoded.shuffle(source.num_samples, seed=seed, reshuffle_each_iteration=True)
    else:
        encoded = source.encoded_dataset(shuffle=shuffle, seed=seed)
        decoded = decode_skipping_failures(encoded, decode_sample, source)
    groups = mosaic_groups(decoded, group, seed, shuffle)
    # One stateless seed per sample; re-drawn each epoch, reproducibly.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment_sample(group_element, sample_seed):
        image, labels = augment.augment_group(
            group_element, sample_seed, recipe, image_size, max_boxes
        )
        return image, labels

    return tf.data.Dataset.zip(groups, seeds).map(augment_sample, num_parallel_calls=AUTOTUNE)


# Images decoded together and shared by the groups made from them, per
# image of a group: large enough that partners vary, small enough that the
# decoded (unresized) pixels stay a few hundred MB at most.
CHUNK_PER_GROUP_IMAGE = 4


def mosaic_groups(decoded, group, seed, shuffle=True):
    """Groups decoded images for mosaics, each image decoded once per epoch.

    An epoch of N images gives N groups of `group` images and every image
    is in `group` of them, as in the official loader (where an image is on
    average once the first tile and three times a random partner). The
    official loader decodes all four tiles of every mosaic, so each image
    is read and decoded four times per epoch; here the images come in
    chunks of `CHUNK_PER_GROUP_IMAGE * group`, and a chunk's images are
    dealt into as many groups by `group` independent permutations of the
    chunk (group i takes the i-th `group`-slice of their concatenation):
    the same membership, a quarter of the decoding. Within a full chunk the
    images of a group are distinct.

    Args:
        decoded: dataset of `decode_for_training` dicts.
        group: images per group.
        seed: seed of the permutations, re-drawn each epoch.
        shuffle: draw the permutations; otherwise groups take consecutive
            images, `group` times over.

    Returns:
        Dataset of group dicts, each entry stacked to (group, ...) and
        zero padded (classes -1).
    """
    chunks = decoded.padded_batch(
        CHUNK_PER_GROUP_IMAGE * group,
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
    )
    # One stateless seed per chunk, folded away from the per-sample seeds.
    seeds = (
        tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        .batch(2)
        .map(lambda pair: tf.random.experimental.stateless_fold_in(pair, 1))
    )

    def deal(chunk, chunk_seed):
        count = tf.shape(chunk["classes"])[0]
        if shuffle:
            orders = [
                tf.argsort(
                    tf.random.stateless_uniform(
                        [count],
                        seed=tf.random.experimental.stateless_fold_in(chunk_seed, k),
                    )
                )
                for k in range(group)
            ]
        else:
            orders = [tf.range(count)] * group
        members = tf.reshape(tf.concat(orders, axis=0), [count, group])

        def gather(rows):
            return {key: tf.gather(value, rows) for key, value in chunk.items()}

        return tf.data.Dataset.from_tensor_slices(members).map(gather)

    return tf.data.Dataset.zip(chunks, seeds).flat_map(deal)


def _letterboxed(
    source, image_size, seed, cache, shuffle, max_boxes, verbose, training, flip, targets
):
    lookup_row = _row_lookup(source) if targets else None

    def decode_sample(element):
        sample = image_decoding.decode_for_evaluation(element, image_size)
        if targets:
            # The end-of-pass marker (id -1) finds no row; it is dropped later.
            row = tf.maximum(lookup_row(element["image_id"]), 0)
            sample["targets"] = {
                name: tf.gather(tf.constant(value), row) for name, value in targets.items()
            }
        return sample

    def to_batch_element(sample, sample_seed=None):
        image = tf.cast(sample["image"], tf.float32) / 255.0
        boxes = sample["boxes"]
        if flip:
            do_flip = tf.random.stateless_uniform([], seed=sample_seed) < 0.5
            image, boxes = flip_horizontally(image, boxes, do_flip)
        keep = tf.ones_like(sample["classes"], tf.bool)
        labels = augment.pad_boxes(boxes, sample["classes"], keep, max_boxes)
        if not training:
            for key in ("image_id", "original_size", "scale", "pad"):
                labels[key] = sample[key]
        if targets:
            labels = {"detection": labels, **sample["targets"]}
        return image, labels

    if cache:
        encoded = source.encoded_dataset(shuffle=False)
        decoded = decode_skipping_failures(encoded, decode_sample, source)
        key = f"letterbox{image_size}" + ("-" + "-".join(sorted(targets)) if targets else "")
        decoded = cached(decoded, cache, source, key, verbose)
        if shuffle:
            decoded = decoded.shuffle(source.num_samples, seed=seed, reshuffle_each_iteration=True)
    else:
        encoded = source.encoded_dataset(shuffle=shuffle, seed=seed)
        decoded = decode_skipping_failures(encoded, decode_sample, source)
    if flip:
        # One stateless seed per sample; re-drawn each epoch, reproducibly.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        decoded = tf.data.Dataset.zip(decoded, seeds)
    return decoded.map(to_batch_element, num_parallel_calls=AUTOTUNE)


def _row_lookup(source):
    """A graph function: image id -> the row of that sample in the source's order."""
    ids = np.asarray([sample.image_id for sample in source.samples], np.int64)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids), dtype=tf.int64)),
        default_value=-1,
    )
    return table.lookup


def flip_horizontally(image, boxes, flip):
    """Mirrors an (H, W, 3) image and its xyxy pixel boxes when `flip` is true."""
    size = tf.cast(tf.shape(image)[1], tf.float32)
    flipped_boxes = tf.stack(
        [size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=-1
    )
    return (
        tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image),
        tf.cond(flip, lambda: flipped_boxes, lambda: boxes),
    )


@dataclasses.dataclass(frozen=True)
class CacheChoice:
    """A parsed `build_dataset` cache argument.

    Args:
        kind: None (no cache), "memory" or "disk".
        folder: the disk cache's folder, for "disk".
    """

    kind: str = None
    folder: str = None

    def __bool__(self):
        return self.kind is not None


def parse_cache(cache, name="dataset"):
    """Reads `build_dataset`'s `cache`: False/None, True/"memory" or "disk:FOLDER".

    Raises:
        ValueError: any other value; the message names the dataset.
    """
    if isinstance(cache, CacheChoice):
        return cache
    if cache is None or cache is False:
        return CacheChoice()
    if cache is True or cache == "memory":
        return CacheChoice("memory")
    if isinstance(cache, str) and cache.startswith("disk:") and cache[len("disk:") :]:
        return CacheChoice("disk", os.path.abspath(os.path.expanduser(cache[len("disk:") :])))
    raise ValueError(
        f'{name}: cache={cache!r} is not a cache choice; use False, "memory" (or True) '
        'or "disk:FOLDER".'
    )


def cache_bytes(source, image_size, resized=True):
    """Bytes the decoded images of `source` take in the in-memory cache.

    Training images (`resized`) keep their aspect with the long side S, so
    an image takes S * round(S * short / long) * 3 bytes; letterboxed ones
    take S * S * 3. A source that does not list its image sizes (tfds) is
    counted at S * S * 3 per image, the most an image can take.
    """
    full = image_size * image_size * 3
    samples = getattr(source, "samples", None)
    if not resized or samples is None:
        return full * source.num_samples
    total = 0
    for sample in samples:
        long_side = max(sample.width, sample.height, 1)
        short_side = min(sample.width, sample.height)
        total += image_size * max(1, round(image_size * short_side / long_side)) * 3
    return total


def available_memory_bytes():
    """Memory the system can still give this process, or None where unknown.

    Linux's `MemAvailable` (free memory plus reclaimable caches); elsewhere
    the free physical pages.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory_cache(source, image_size, resized=True):
    """Refuses an in-memory cache that would not fit in the available memory.

    Raises:
        MemoryError: the decoded images need more bytes than are available;
            the message names the dataset, both byte counts and the other
            choices.
    """
    needed = cache_bytes(source, image_size, resized)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise MemoryError(
            f'{source.report.name}: cache="memory" needs {needed:,} bytes '
            f"({needed / 2**30:.1f} GiB) for {source.num_samples} decoded images at "
            f"{image_size}, but only {available:,} bytes ({available / 2**30:.1f} GiB) "
            'are available. Use cache="disk:FOLDER" (decoded images on disk) or '
            "cache=False (decode every image every epoch)."
        )
    return needed


def dataset_fingerprint(source, key):
    """A hex digest of what a cached pass depends on: the samples and `key`.

    Listed sources hash each sample's image (path with file size and
    modification time, or its bytes), boxes, classes and id; others (tfds)
    their name and size, as a tfds version never changes.
    """
    digest = hashlib.sha256(f"yolor-keras cache v1|{key}|".encode())
    samples = getattr(source, "samples", None)
    if samples is None:
        digest.update(f"{source.report.name}|{source.num_samples}".encode())
        return digest.hexdigest()[:20]
    for sample in samples:
        image = sample.image
        if isinstance(image, (bytes, bytearray)):
            digest.update(hashlib.sha256(image).digest())
        else:
            path = os.fspath(image)
            try:
                status = os.stat(path)
                digest.update(f"{path}|{status.st_size}|{status.st_mtime_ns}".encode())
            except OSError:
                digest.update(path.encode())
        digest.update(np.asarray(sample.boxes, np.float32).tobytes())
        digest.update(np.asarray(sample.classes, np.int32).tobytes())
        digest.update(str(int(sample.image_id)).encode())
    return digest.hexdigest()[:20]


# Filled in-memory caches by pass and dataset fingerprint, the most recently
# used last; a training run uses two (the training and validation passes).
MEMORY_CACHES = collections.OrderedDict()
MEMORY_CACHES_KEPT = 2


def cached(decoded, cache, source, key, verbose):
    """`decoded` with its elements cached as `cache` says, the cache filled.

    "memory": `Dataset.cache()` in RAM, filled now. "disk": the elements go
    to `FOLDER/KEY-FINGERPRINT/` through `write_directory_atomically` (a
    run stopped half-way leaves no folder that a later run could take for
    complete), and the dataset reads that folder back; a folder already
    there is reused without decoding anything.
    """
    if cache.kind == "memory":
        # The trainer builds a new pipeline every epoch (each epoch's data
        # follows from its seed, so a resumed run sees the same batches);
        # reusing the filled dataset keeps the decoded images across those
        # builds instead of decoding them all again before every epoch.
        name = f"{key}-{dataset_fingerprint(source, key)}"
        if name in MEMORY_CACHES:
            MEMORY_CACHES.move_to_end(name)
            return MEMORY_CACHES[name]
        decoded = decoded.cache()
        fill_cache(decoded, source.num_samples, verbose)
        MEMORY_CACHES[name] = decoded
        while len(MEMORY_CACHES) > MEMORY_CACHES_KEPT:
            MEMORY_CACHES.popitem(last=False)
        return decoded
    entry = os.path.join(cache.folder, f"{key}-{dataset_fingerprint(source, key)}")
    prefix = "images"
    if not os.path.isfile(os.path.join(entry, prefix + ".index")):
        if verbose:
            print(f"{source.report.name}: caching decoded images in {entry}")

        def write(folder):
            fill_cache(decoded.cache(os.path.join(folder, prefix)), source.num_samples, verbose)

        write_directory_atomically(entry, write)
    elif verbose:
        print(f"{source.report.name}: reading decoded images from {entry}")
    return decoded.cache(os.path.join(entry, prefix))


def fill_cache(dataset, num_samples, verbose):
    """Decodes every image once so that the in-memory cache is complete.

    Downstream iterators of a cached dataset share its cache, so later
    epochs (and the shuffle buffer, which holds references, not copies)
    read decoded pixels from memory.
    """
    progress = keras.utils.Progbar(num_samples, verbose=1 if verbose else 0, unit_name="image")
    for count, _ in enumerate(dataset.prefetch(AUTOTUNE), start=1):
        if count % 64 == 0 or count == num_samples:
            progress.update(count)


# A valid 1 x 1 PNG: the image of the end-of-pass marker element.
_STAND_IN_IMAGE = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
    b"\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe"
    b"\x02\xfe\r\xefF\xb8\x00\x00\x00\x00IEND\xaeB`\x82"
)
_END_OF_PASS = -1  # the image id of the marker element


class DecodeFailures:
    """Counts, in the source's report, the images the pipeline could not decode.

    tf.data can only drop an element whose map fails (`ignore_errors`), and
    says nothing about which. So each element's position in the stream is
    noted before decoding and again after it; as the order is kept, a
    position that never came out before a later one did is a failed decode.
    A marker element closes each pass, so a failure at the very end is
    found too. Each failing image is counted once (training repeats images),
    as a skipped image under `report.UNDECODABLE_IN_PIPELINE`, and the
    report's usable count goes down by one, so the summary says how many
    images the epochs and evaluations really ran on.

    Args:
        source: the `DetectionSource` whose report is updated.
    """

    def __init__(self, source):
        import threading

        self.report = source.report
        self._names = {}
        for sample in getattr(source, "samples", ()):
            self._names[int(sample.image_id)] = sample.name
        self._pending = {}  # position -> image id, decoding or failed
        self._failed = set()
        self._lock = threading.Lock()

    @property
    def failed_image_ids(self):
        """The ids of the images that failed to decode so far."""
        return frozenset(self._failed)

    def started(self, position, image_id):
        with self._lock:
            self._pending[int(position)] = int(image_id)
        return position

    def finished(self, position):
        position = int(position)
        with self._lock:
            self._pending.pop(position, None)
            earlier = [p for p in self._pending if p < position]
            failed = [self._pending.pop(p) for p in earlier]
        for image_id in failed:
            self._record(image_id)
        return True

    def _record(self, image_id):
        with self._lock:
            if image_id in self._failed:
                return
            self._failed.add(image_id)
            name = self._names.get(image_id, f"image id {image_id}")
            self.report.skip(reasons.UNDECODABLE_IN_PIPELINE, name)
            self.report.num_usable = max(0, self.report.num_usable - 1)
        tf.get_logger().warning(f"{self.report.name}: skipped {name}: it failed to decode.")


def decode_skipping_failures(encoded, decode_sample, source):
    """Maps `decode_sample` over encoded elements; undecodable ones are counted.

    Sources decoded once at index time (`fully_verified`) cannot fail here
    and get a plain parallel map. For the others (`verify="header"`, tfds),
    an element whose decode fails is dropped (`ignore_errors`) and counted
    in `source.report` (see `DecodeFailures`). Order is kept.

    Args:
        encoded: a dataset of encoded elements (see `DetectionSource`).
        decode_sample: element -> decoded structure (graph ops).
        source: the `DetectionSource` the elements come from.

    Returns:
        The dataset of decoded structures, without the images that failed.
    """
    if source.fully_verified:
        return encoded.map(decode_sample, num_parallel_calls=AUTOTUNE)
    failures = getattr(source, "decode_failures", None)
    if failures is None:
        failures = DecodeFailures(source)
        source.decode_failures = failures

    def end_marker(element):
        return dict(
            element,
            image=tf.constant(_STAND_IN_IMAGE),
            is_path=tf.constant(False),
            image_id=tf.constant(_END_OF_PASS, tf.int64),
        )

    # The marker copies the first record's structure (boxes and all).
    marker = source.encoded_dataset(shuffle=False).take(1).map(end_marker)

    def started(position, element):
        position = tf.py_function(failures.started, [position, element["image_id"]], tf.int64)
        return position, element

    def decode_one(position, element):
        return position, element["image_id"], decode_sample(element)

    def finished(position, image_id, decoded):
        return tf.py_function(failures.finished, [position], tf.bool) & (image_id != _END_OF_PASS)

    # Through a map, both streams have the same element spec (a map turns
    # rank-0 ragged components into plain tensors).
    stream = encoded.map(dict).concatenate(marker).enumerate().map(started)
    decoded = stream.map(decode_one, num_parallel_calls=AUTOTUNE).ignore_errors()
    return decoded.filter(finished).map(lambda position, image_id, sample: sample)
