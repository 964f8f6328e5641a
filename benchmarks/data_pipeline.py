"""Training-pipeline throughput: images/s of mosaic + affine + HSV + flip.

Writes a small COCO-format dataset of 1280x720 JPEGs (the source size the
official loader was measured with), builds the training pipeline at 640
with the official `hyp.scratch.1280.yaml` recipe and times whole batches,
with and without the in-memory image cache.

Usage:
    python benchmarks/data_pipeline.py [--images 64] [--batches 30]
        [--hyp hyp.yaml]   # another recipe, e.g. with rotation or mixup
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

from yolor_keras.data import AugmentationRecipe
from yolor_keras.data import build_dataset
from yolor_keras.data import synthetic


def write_sources(folder, count, width=1280, height=720, seed=0):
    """Writes `count` JPEGs with shapes on texture, plus a COCO JSON."""
    instances = synthetic.make_instances(seed)
    images, annotations = [], []
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        picture, objects = synthetic.render_image(rng, instances, width, 8, False)
        # Crop the square render to 16:9 and keep the objects inside it.
        top = (picture.height - height) // 2
        picture = picture.crop((0, top, width, top + height))
        name = f"{index:06d}.jpg"
        picture.save(os.path.join(folder, "images", name), quality=90)
        images.append(
            {"id": index + 1, "file_name": name, "width": width, "height": height}
        )
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            y1, y2 = max(y1 - top, 0), min(y2 - top, height)
            if y2 - y1 > 2:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index + 1,
                        "category_id": obj["category_id"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "iscrowd": 0,
                    }
                )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(synthetic.CLASS_NAMES)]
    path = os.path.join(folder, "instances.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(
            {"images": images, "annotations": annotations, "categories": categories},
            file,
        )
    return path


def measure(dataset, batches, batch_size, warmup=3):
    """Times `batches` batches after `warmup` batches.

    Returns:
        (images per wall-clock second, CPU seconds of this process per
        image). On a shared machine the second is the steadier figure:
        `cores / cpu_per_image` is what the pipeline sustains with the
        cores to itself.
    """
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - wall), (time.process_time() - cpu) / images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="source images")
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--hyp", help="a hyp YAML (default: hyp.scratch.1280)")
    args = parser.parse_args()

    # hyp.scratch.1280 by default: mosaic, affine (scale + translate), HSV, flip.
    recipe = (
        AugmentationRecipe.from_yaml(args.hyp) if args.hyp else AugmentationRecipe()
    )
    recipe_name = args.hyp or "hyp.scratch.1280 (mosaic+affine+HSV+flip)"
    print(recipe)
    with tempfile.TemporaryDirectory() as folder:
        annotations = write_sources(folder, args.images)
        size_mb = (
            sum(
                os.path.getsize(os.path.join(folder, "images", name))
                for name in os.listdir(os.path.join(folder, "images"))
            )
            / 2**20
        )
        kilobytes = size_mb / args.images * 1024
        print(f"{args.images} source JPEGs 1280x720, {kilobytes:.0f} KB each")
        for cache in (False, True):
            dataset, _ = build_dataset(
                annotations,
                image_dir=os.path.join(folder, "images"),
                image_size=args.image_size,
                batch_size=args.batch_size,
                recipe=recipe,
                cache=cache,
                verbose=False,
            )
            rate, cpu_per_image = measure(dataset, args.batches, args.batch_size)
            label = "cached decoded images" if cache else "decoding every image"
            cores = os.cpu_count()
            print(
                f"training pipeline @ {args.image_size}, {recipe_name}, "
                f"{label}: {rate:.1f} img/s wall-clock on {cores} cores "
                f"(load average {os.getloadavg()[0]:.1f}); "
                f"{cpu_per_image * 1000:.1f} CPU-ms per image = "
                f"{cores / cpu_per_image:.1f} img/s with the {cores} cores to itself"
            )


if __name__ == "__main__":
    main()
