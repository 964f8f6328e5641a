"""A deterministic synthetic detection dataset: coloured shapes on clutter.

`generate_dataset` writes COCO-format train/val splits with JPEG images.
Objects are drawn from a fixed set of *instances* (a shape, a colour and a
pattern); an instance recurs across images and keeps its `instance_id`, so
the data also serves identity (re-identification) and multi-label
(`labels` on each image: the categories present) experiments.

The shapes are saturated and distinct while the background is textured but
desaturated, so a tiny detector learns it within minutes on a CPU.
"""

import json
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter
from tqdm.auto import tqdm

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross")
PATTERNS = ("solid", "stripes", "dots", "two-tone")
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)
INSTANCES_PER_CLASS = 4
MIN_VISIBLE = 0.5  # an object is at least half visible


def generate_dataset(
    out_dir,
    num_train=200,
    num_val=50,
    image_size=256,
    seed=0,
    max_objects=6,
    vary_aspect=True,
    jpeg_quality=90,
):
    """Writes the synthetic dataset in the COCO layout.

    Layout: `out_dir/train/*.jpg`, `out_dir/val/*.jpg` and
    `out_dir/annotations/instances_{train,val}.json`, so that
    `build_dataset(out_dir, split="train")` reads it directly.

    Besides the usual COCO fields, each annotation has an `instance_id`,
    each image a `labels` list (sorted category ids present), and the JSON a
    top-level `instances` list describing every instance (`id`,
    `category_id`, `color`, `pattern`).

    Args:
        out_dir: the folder to write into (created if needed).
        num_train: number of training images.
        num_val: number of validation images.
        image_size: the long side of every image in pixels.
        seed: the dataset is a pure function of the arguments and this seed.
        max_objects: at most this many objects per image (at least 1).
        vary_aspect: make some images 4:3 or 3:4 instead of square.
        jpeg_quality: JPEG quality of the written images.

    Returns:
        dict: split name -> path of its annotation JSON.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}.")
    instances = make_instances(seed)
    categories = [
        {"id": index + 1, "name": name, "supercategory": "shape"}
        for index, name in enumerate(CLASS_NAMES)
    ]
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    outputs = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        image_dir = os.path.join(out_dir, split)
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for index in tqdm(range(count), desc=f"Writing {split}", leave=False):
            rng = np.random.default_rng([seed, split_index, index])
            picture, objects = render_image(rng, instances, image_size, max_objects, vary_aspect)
            file_name = f"{index:06d}.jpg"
            picture.save(os.path.join(image_dir, file_name), quality=jpeg_quality)
            image_id = index + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": picture.width,
                    "height": picture.height,
                    "labels": sorted({obj["category_id"] for obj in objects}),
                }
            )
            for obj in objects:
                x1, y1, x2, y2 = obj["box"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": obj["category_id"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": obj["area"],
                        "iscrowd": 0,
                        "instance_id": obj["instance_id"],
                    }
                )
        path = os.path.join(out_dir, "annotations", f"instances_{split}.json")
        with open(path, "w", encoding="utf-8") as file:
            json.dump(
                {
                    "info": {
                        "description": "yolor_keras synthetic shapes",
                        "seed": seed,
                    },
                    "images": images,
                    "annotations": annotations,
                    "categories": categories,
                    "instances": instances,
                },
                file,
            )
        outputs[split] = path
    return outputs


def make_instances(seed):
    """The fixed instance table: INSTANCES_PER_CLASS per class, all distinct.

    Args:
        seed: the dataset seed.

    Returns:
        list of dicts with "id", "category_id", "color" and "pattern".
    """
    rng = np.random.default_rng([seed, 1_000_003])
    instances = []
    for class_index in range(len(CLASS_NAMES)):
        combos = [(c, p) for c in range(len(PALETTE)) for p in range(len(PATTERNS))]
        chosen = rng.choice(len(combos), INSTANCES_PER_CLASS, replace=False)
        for combo in sorted(chosen):
            color, pattern = combos[combo]
            instances.append(
                {
                    "id": len(instances) + 1,
                    "category_id": class_index + 1,
                    "color": list(PALETTE[color]),
                    "pattern": PATTERNS[pattern],
                }
            )
    return instances


def render_image(rng, instances, image_size, max_objects, vary_aspect):
    """Draws one image and returns it with its visible objects.

    Args:
        rng: a NumPy Generator (the image is a function of its state).
        instances: the instance table from `make_instances`.
        image_size: the long side in pixels.
        max_objects: at most this many objects.
        vary_aspect: allow 4:3 and 3:4 images.

    Returns:
        (PIL RGB image, list of dicts with "box" (x1, y1, x2, y2 pixels of
        the visible part), "area" (visible pixels), "category_id" and
        "instance_id").
    """
    width = height = image_size
    if vary_aspect:
        shape = rng.integers(3)
        if shape == 1:
            height = image_size * 3 // 4
        elif shape == 2:
            width = image_size * 3 // 4
    canvas = _background(rng, width, height)
    owner = np.full((height, width), -1, np.int32)  # which object owns a pixel
    placed = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        instance = instances[int(rng.integers(len(instances)))]
        side = int(rng.uniform(0.12, 0.4) * min(width, height))
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        mask = _shape_mask(CLASS_NAMES[instance["category_id"] - 1], side)
        full = np.zeros((height, width), bool)
        full[y0 : y0 + side, x0 : x0 + side] = mask
        # Keep every earlier object at least MIN_VISIBLE visible.
        trial = owner.copy()
        trial[full] = len(placed)
        if any((trial == k).sum() < MIN_VISIBLE * obj["pixels"] for k, obj in enumerate(placed)):
            continue
        owner = trial
        _paint(canvas, full, instance, rng)
        placed.append({"instance": instance, "pixels": int(full.sum())})
    _add_occluding_clutter(canvas, owner, placed, rng)

    objects = []
    for k, obj in enumerate(placed):
        visible = owner == k
        rows, cols = np.nonzero(visible)
        if len(rows) == 0:
            continue
        objects.append(
            {
                "box": [
                    int(cols.min()),
                    int(rows.min()),
                    int(cols.max()) + 1,
                    int(rows.max()) + 1,
                ],
                "area": int(visible.sum()),
                "category_id": obj["instance"]["category_id"],
                "instance_id": obj["instance"]["id"],
            }
        )
    return Image.fromarray(canvas), objects


def _background(rng, width, height):
    """Desaturated texture: a tinted low-frequency field, noise and strokes."""
    base = rng.uniform(60, 190)
    tint = rng.uniform(-20, 20, 3)
    coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32)), np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    field = (np.asarray(smooth, np.float32)[..., None] / 255 - 0.5) * 80
    noise = rng.normal(0, 8, (height, width, 1))
    image = np.clip(base + tint + field + noise, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(4, 12))):
        grey = int(rng.uniform(40, 220))
        color = tuple(int(np.clip(grey + rng.uniform(-15, 15), 0, 255)) for _ in range(3))
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(3)]
        if rng.random() < 0.5:
            draw.line(points, fill=color, width=int(rng.integers(1, 4)))
        else:
            x, y = points[0]
            r = float(rng.uniform(3, 0.08 * width))
            draw.ellipse(
                [x - r, y - r, x + r, y + r * rng.uniform(0.3, 1.0)],
                outline=color,
                width=2,
            )
    picture = picture.filter(ImageFilter.GaussianBlur(0.6))
    return np.array(picture)


def _shape_mask(name, side):
    """A (side, side) boolean mask of a shape filling most of the square."""
    supersample = 4  # anti-aliased edges, then thresholded
    size = side * supersample
    picture = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(picture)
    margin = size * 0.04
    low, high = margin, size - margin
    middle = size / 2
    if name == "circle":
        draw.ellipse([low, low, high, high], fill=255)
    elif name == "square":
        draw.rectangle([low, low, high, high], fill=255)
    elif name == "triangle":
        draw.polygon([(middle, low), (high, high), (low, high)], fill=255)
    elif name == "star":
        angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 11)[:10]
        radii = np.where(np.arange(10) % 2 == 0, (high - low) / 2, (high - low) / 4.5)
        draw.polygon(
            [(middle + r * np.cos(a), middle + r * np.sin(a)) for a, r in zip(angles, radii)],
            fill=255,
        )
    elif name == "cross":
        third = (high - low) / 3
        draw.rectangle([low + third, low, high - third, high], fill=255)
        draw.rectangle([low, low + third, high, high - third], fill=255)
    else:
        raise ValueError(f"Unknown shape: {name}")
    mask = np.asarray(picture.resize((side, side), Image.BILINEAR)) >= 128
    return mask


def _paint(canvas, mask, instance, rng):
    """Fills `mask` on the canvas with the instance's colour and pattern."""
    color = np.array(instance["color"], np.float32)
    rows, cols = np.nonzero(mask)
    pattern = instance["pattern"]
    pixels = np.tile(color, (len(rows), 1))
    if pattern == "stripes":
        dark = ((rows + cols) // 4) % 2 == 0
        pixels[dark] = color * 0.45
    elif pattern == "dots":
        dots = (rows % 6 < 3) & (cols % 6 < 3)
        pixels[dots] = 255 - (255 - color) * 0.3
    elif pattern == "two-tone":
        top = rows < (rows.min() + rows.max()) / 2
        pixels[top] = color * 0.55
    shade = rng.uniform(0.85, 1.1)
    canvas[rows, cols] = np.clip(pixels * shade + rng.normal(0, 4, pixels.shape), 0, 255).astype(
        np.uint8
    )


def _add_occluding_clutter(canvas, owner, placed, rng):
    """Grey bars across the scene; they hide parts of objects (occlusion)."""
    height, width = owner.shape
    for _ in range(int(rng.integers(0, 3))):
        thickness = int(rng.integers(2, max(3, min(width, height) // 20)))
        bar = np.zeros_like(owner, bool)
        if rng.random() < 0.5:
            y = int(rng.integers(0, height - thickness))
            bar[y : y + thickness] = True
        else:
            x = int(rng.integers(0, width - thickness))
            bar[:, x : x + thickness] = True
        trial = np.where(bar, -1, owner)
        if any((trial == k).sum() < MIN_VISIBLE * obj["pixels"] for k, obj in enumerate(placed)):
            continue
        owner[...] = trial
        grey = rng.uniform(70, 180)
        canvas[bar] = np.clip(grey + rng.normal(0, 5, (int(bar.sum()), 3)), 0, 255).astype(np.uint8)
