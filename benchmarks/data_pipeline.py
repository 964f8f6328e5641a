"""Training-pipeline throughput against the official PyTorch loader, same files, same run.

Writes a synthetic YOLO-txt dataset of JPEGs, then times images/s of
`build_dataset(..., training=True, augment=True)` (4-image mosaic at 640 with
the official `hyp.scratch.1280` augmentation) decoding every image
(cache=False), with cache="memory" and with cache="disk:...", and the official
`LoadImagesAndLabels` (mosaic, same hyp) in a torch DataLoader with 2 worker
processes, and prints one table with the ratios (see
`yolor_keras.data.throughput`). Only ratios from one run compare; absolute
rates move with the machine and its load. On a shared machine use
`--rounds 3` or more: the loaders are then timed in turn, round after
round, and the medians of the per-round ratios are printed.

Usage:
    python benchmarks/data_pipeline.py [--images 300] [--size 640x480]
        [--batches 20] [--official DIR --opencv DIR --hyp hyp.scratch.1280.yaml]
        [--rounds 1] [--out runs/benchmarks/data.json]

DIR for --official holds the official `utils` package (e.g. from
`git archive` of WongKinYiu/yolor, outside this repository); --opencv is a
folder where `pip install --target DIR opencv-python-headless` put OpenCV.
Without --official only our rows are printed.
"""

import argparse
import json

from yolor_keras.atomic import write_file_atomically
from yolor_keras.data.throughput import DEFAULT_CACHES
from yolor_keras.data.throughput import data_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="source JPEGs (300)")
    parser.add_argument("--size", default="640x480", help="source WIDTHxHEIGHT (640x480)")
    parser.add_argument("--image-size", type=int, default=640, help="mosaic output side (640)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="timed batches (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (3)")
    parser.add_argument(
        "--cache",
        nargs="+",
        default=[str(c) for c in DEFAULT_CACHES],
        help="our cache choices to time: False memory disk",
    )
    parser.add_argument("--official", help="folder holding the official utils/ package")
    parser.add_argument("--opencv", help="folder with opencv-python-headless installed")
    parser.add_argument("--hyp", help="the official hyp.scratch.1280.yaml")
    parser.add_argument("--workers", type=int, default=2, help="official DataLoader workers (2)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every loader this many times in turn and report medians (1)",
    )
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480.")
    if args.official and not args.hyp:
        parser.error("--official needs --hyp (the official hyp.scratch.1280.yaml).")
    caches = [False if c in ("False", "false", "0", "none") else c for c in args.cache]
    rows = data_rows(
        images=args.images,
        width=width,
        height=height,
        image_size=args.image_size,
        batch_size=args.batch_size,
        batches=args.batches,
        warmup=args.warmup,
        caches=caches,
        official_dir=args.official,
        opencv_dir=args.opencv,
        hyp=args.hyp,
        workers=args.workers,
        rounds=args.rounds,
    )
    if args.out:
        text = json.dumps(rows, indent=2)

        def write(path):
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)

        write_file_atomically(args.out, write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
