"""`yolor detect`: run a detector on an image or a folder, draw and save the boxes.

Writes one annotated copy of each image into ``--out`` and a
``detections.json`` with every box (x1, y1, x2, y2 in image pixels), score
and class (and, for a model with those heads, each image's label
probabilities and embedding). Unreadable files are reported and skipped. An ``--out`` that holds
source images, or where an annotated copy would land on a source image, is
refused before anything is written.
"""

import argparse
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Formats Pillow writes without surprises; others are saved as PNG.
WRITABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
RESULTS_FILE = "detections.json"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "detect",
        help="Detect objects in images and save annotated copies.",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="A .keras model file (YOLORObjectDetector).")
    parser.add_argument("--source", required=True, help="An image file or a folder of images.")
    parser.add_argument(
        "--out", default="runs/detect", help="Output folder (default: runs/detect)."
    )
    # NMS settings left out are the model's own (its prediction decoder:
    # 0.25, 0.45, 300 and single-label unless it was saved with others).
    parser.add_argument(
        "--conf", type=float, default=None, help="Score threshold (default: the model's, 0.25)."
    )
    parser.add_argument(
        "--iou", type=float, default=None, help="NMS IoU threshold (default: the model's, 0.45)."
    )
    parser.add_argument(
        "--max-det",
        type=int,
        default=None,
        help="Detections kept per image (default: the model's, 300).",
    )
    parser.add_argument(
        "--multi-label",
        action="store_true",
        default=None,
        help="Keep every class above --conf for a box.",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Network input side, a multiple of the largest stride (default: the "
        "model's preprocessor or fixed input size, else 640).",
    )
    parser.add_argument("--names", default=None, help="Class names: a text file or data YAML.")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="Network compute precision (bf16: bfloat16 convolutions, fast on AMX/AVX512-BF16 "
        "CPUs; decode and NMS stay float32). Default fp32.",
    )
    return parser


def list_images(source):
    """The image files of `source` (a file, or a folder searched recursively)."""
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise FileNotFoundError(f"--source {source}: no such file or folder.")
    found = []
    for root, _, files in os.walk(source):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
    return sorted(found)


def draw_detections(image, result):
    """A PIL image with boxes and "name score" labels drawn on `image` (uint8 array)."""
    from PIL import Image
    from PIL import ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for box, score, class_index, name in zip(
        result.get("boxes", ()),
        result.get("scores", ()),
        result.get("classes", ()),
        result.get("class_names", ()),
    ):
        color = _class_color(int(class_index))
        x1, y1, x2, y2 = (float(value) for value in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        label = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        lift = bottom - top + 2
        draw.rectangle([x1, y1 - lift, x1 + right - left + 4, y1], fill=color)
        draw.text((x1 + 2, y1 - lift), label, fill=(255, 255, 255))
    return canvas


def _class_color(class_index):
    # A fixed, well-spread hue per class (golden-ratio steps).
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb((class_index * 0.618034) % 1.0, 0.85, 0.9)
    return int(red * 255), int(green * 255), int(blue * 255)


def _output_path(out_dir, source, image_path):
    relative = (
        os.path.relpath(image_path, source)
        if os.path.isdir(source)
        else os.path.basename(image_path)
    )
    stem, extension = os.path.splitext(relative)
    if extension.lower() not in WRITABLE_EXTENSIONS:
        extension = ".png"
    return os.path.join(out_dir, stem + extension)


def check_out_folder(out_dir, source, images):
    """Raises ValueError when writing into `out_dir` could overwrite a source image.

    Paths are compared after resolving symlinks, so a link to the source
    folder is refused like the folder itself.

    Args:
        out_dir: the ``--out`` folder.
        source: the ``--source`` file or folder.
        images: the source image files (`list_images`).
    """
    out_real = os.path.realpath(out_dir)
    source_folders = {os.path.realpath(os.path.dirname(path) or ".") for path in images}
    if os.path.isdir(source):
        source_folders.add(os.path.realpath(source))
    if out_real in source_folders:
        raise ValueError(
            f"--out {out_dir} is a folder of source images ({out_real}); the annotated "
            "copies would be written over or among them. Choose another --out folder."
        )
    sources = {os.path.realpath(path): path for path in images}
    for path in images:
        target = os.path.realpath(_output_path(out_dir, source, path))
        if target in sources:
            raise ValueError(
                f"--out {out_dir}: the annotated copy of {path} would overwrite the "
                f"source image {sources[target]}. Choose another --out folder."
            )


def run(args):
    try:
        return _detect(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"yolor detect: {error}", file=sys.stderr)
        return 2


def _detect(args):
    import json

    from tqdm import tqdm

    from yolor_keras.atomic import write_file_atomically
    from yolor_keras.inference.predictor import PER_IMAGE_OUTPUTS
    from yolor_keras.inference.predictor import Predictor
    from yolor_keras.inference.predictor import load_detector
    from yolor_keras.inference.predictor import read_class_names
    from yolor_keras.inference.predictor import read_image

    images = list_images(args.source)
    if not images:
        print(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {args.source}.", file=sys.stderr)
        return 1
    check_out_folder(args.out, args.source, images)
    model = load_detector(args.model)
    class_names = read_class_names(args.names) if args.names else None
    predictor = Predictor(
        model,
        class_names=class_names,
        image_size=args.image_size,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        multi_label=args.multi_label,
        batch_size=1,
        precision=args.precision,
    )

    os.makedirs(args.out, exist_ok=True)
    records, skipped = [], []
    for path in tqdm(images, desc="Detecting", unit="img", disable=len(images) == 1):
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:
            tqdm.write(f"Skipping {path}: {error}", file=sys.stderr)
            skipped.append({"file": path, "error": str(error)})
            continue
        [result] = predictor.predict([image])
        out_path = _output_path(args.out, args.source, path)
        # Through a rename: an existing file at `out_path` (even a hard link
        # to an image elsewhere) is replaced, never written through.
        write_file_atomically(out_path, draw_detections(image, result).save)
        record = {
            "file": path,
            "annotated": out_path,
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "detections": [
                {
                    "box": [round(float(value), 2) for value in box],
                    "score": round(float(score), 5),
                    "class": int(class_index),
                    "class_name": name,
                }
                for box, score, class_index, name in zip(
                    result.get("boxes", ()),
                    result.get("scores", ()),
                    result.get("classes", ()),
                    result.get("class_names", ()),
                )
            ],
        }
        # The other heads' outputs, one row per image.
        for name in PER_IMAGE_OUTPUTS:
            if name in result:
                record[name] = [round(float(value), 6) for value in result[name]]
        records.append(record)
    results_path = os.path.join(args.out, RESULTS_FILE)
    report = {
        "model": args.model,
        "image_size": predictor.image_size,
        "precision": predictor.precision,
        "images": records,
        "skipped": skipped,
    }

    def write_report(temporary):
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)

    write_file_atomically(results_path, write_report)
    total = sum(len(record["detections"]) for record in records)
    print(
        f"{total} detections in {len(records)} images written to {args.out} "
        f"({RESULTS_FILE}); {len(skipped)} skipped."
    )
    return 0
