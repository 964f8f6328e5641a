"""Serving throughput of `yolor serve`: images/s and latency, with and without batching.

Starts the real server in a subprocess for each setting (no batching, then
``--enable-batching --max-batch-size 8`` and ``16``), sends single-JPEG
REST requests as a TF Serving client would, at concurrency 1, 4 and 16, and
prints images/s with the median and 95th-percentile latency per row (see
`yolor_keras.serving.throughput`). The model is the one `make demo` trains
(YOLOR-P6, width 0.25, depth 0.33, at 256); ``--p6-640`` serves the full
YOLOR-P6 at 640 instead.

Usage: ``python benchmarks/serving_throughput.py [--p6-640] [--requests 64]
[--concurrency 1 4 16] [--batch-sizes 0 8 16] [--batch-timeout-micros 0]
[--out runs/benchmarks/serving.json]`` (a batch size of 0 means no batching).
"""

import argparse
import json
import os
import sys

from yolor_keras.atomic import write_file_atomically
from yolor_keras.serving.throughput import DEFAULT_BATCH_SIZES
from yolor_keras.serving.throughput import DEFAULT_CONCURRENCIES
from yolor_keras.serving.throughput import DEMO_SETTINGS
from yolor_keras.serving.throughput import P6_640_SETTINGS
from yolor_keras.serving.throughput import markdown_table
from yolor_keras.serving.throughput import serving_rows

__all__ = ["serving_rows", "main"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p6-640", action="store_true", help="Serve YOLOR-P6 at 640 (80 classes).")
    parser.add_argument("--requests", type=int, default=64, help="Requests per row (64).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCIES))
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[size or 0 for size in DEFAULT_BATCH_SIZES],
        help="--max-batch-size of each server; 0 for no batching (0 8 16).",
    )
    parser.add_argument("--batch-timeout-micros", type=int, default=0)
    parser.add_argument("--out", default=None, help="Also write the rows here as JSON.")
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.concurrency) < 1 or min(args.batch_sizes) < 0:
        parser.error("--requests and --concurrency must be positive, --batch-sizes >= 0.")
    settings = P6_640_SETTINGS if args.p6_640 else DEMO_SETTINGS
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"yolor serve, {settings}, {os.cpu_count()} CPUs, load average at start {load}", flush=True
    )
    rows = serving_rows(
        settings=settings,
        concurrencies=args.concurrency,
        batch_sizes=[size or None for size in args.batch_sizes],
        requests_per_row=args.requests,
        batch_timeout_micros=args.batch_timeout_micros,
    )
    print()
    print(markdown_table(rows))
    if args.out:
        result = {"settings": settings, "load_average_at_start": load, "rows": rows}
        text = json.dumps(result, indent=2)

        def write(path):
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)

        write_file_atomically(args.out, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
