"""Training-pipeline throughput: ours against the official PyTorch loader, same files, same run.

`data_rows` writes a synthetic YOLO-txt dataset of JPEGs, times
`build_dataset(..., training=True, augment=True)` (the official recipe:
4-image mosaic at S, scale/translate warp, HSV, left-right flip) for each
`cache` choice, and, when the official code is given, the official
`LoadImagesAndLabels` in a torch `DataLoader` with 2 worker processes on
the same files. Timed batches exclude warm-up batches, so pipeline start
and worker start-up are left out of the rates (they are reported apart).

The official loader runs in a fresh Python process, as its workers are
forked and must not inherit TensorFlow's threads. It needs OpenCV, which
this project does not depend on: pass a folder where `opencv-python-headless`
is installed (`pip install --target DIR opencv-python-headless`). Its
`utils` package imports matplotlib and torchvision at module level for
plotting and model helpers the loader never calls; where those are not
installed, empty stand-ins are registered for them.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from yolor_keras.data import synthetic

# The cache choices timed by default: decode every image, then the two caches.
DEFAULT_CACHES = (False, "memory", "disk")


def write_yolo_sources(folder, count, width=640, height=480, seed=0, quality=90):
    """Writes `count` JPEGs of width x height and their YOLO txt labels.

    The layout is the official one, `folder/images/*.jpg` and
    `folder/labels/*.txt` (lines `class cx cy w h`, normalised), which both
    loaders read unchanged.

    Returns:
        (the images folder, mean JPEG size in bytes).
    """
    instances = synthetic.make_instances(seed)
    image_dir = os.path.join(folder, "images")
    label_dir = os.path.join(folder, "labels")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    side = max(width, height)
    total = 0
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        picture, objects = synthetic.render_image(rng, instances, side, 8, False)
        # Crop the square render to the wanted shape; keep objects inside it.
        left, top = (side - width) // 2, (side - height) // 2
        picture = picture.crop((left, top, left + width, top + height))
        path = os.path.join(image_dir, f"{index:06d}.jpg")
        picture.save(path, quality=quality)
        total += os.path.getsize(path)
        lines = []
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            x1, x2 = max(x1 - left, 0), min(x2 - left, width)
            y1, y2 = max(y1 - top, 0), min(y2 - top, height)
            if x2 - x1 > 2 and y2 - y1 > 2:
                lines.append(
                    f"{obj['category_id'] - 1} {(x1 + x2) / 2 / width:.6f} "
                    f"{(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                    f"{(y2 - y1) / height:.6f}"
                )
        with open(os.path.join(label_dir, f"{index:06d}.txt"), "w") as file:
            # An image without objects gets an empty file: the official
            # loader reads a lone newline as a row with no columns.
            file.write("".join(line + "\n" for line in lines))
    return image_dir, total / max(count, 1)


def time_batches(iterator, batches, batch_size, warmup):
    """Images/s of `batches` batches drawn from `iterator` after `warmup` ones.

    Returns:
        (images per second, seconds to the first batch, CPU seconds of this
        process per timed image).
    """
    start = time.perf_counter()
    next(iterator)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return (
        images / (time.perf_counter() - wall),
        first,
        (time.process_time() - cpu) / images,
    )


def ours(image_dir, cache, image_size=640, batch_size=16, batches=20, warmup=3, work_dir=None):
    """Times `build_dataset`'s augmented training batches with one `cache` choice.

    Args:
        cache: a `build_dataset` cache value; "disk" means a disk cache in a
            fresh folder under `work_dir`.

    Returns:
        dict with "rate" (img/s), "first_batch_s", "cpu_ms_per_image" and
        "build_s" (the `build_dataset` call, including filling a cache).
    """
    from yolor_keras.data import build_dataset

    if cache == "disk":
        cache = "disk:" + tempfile.mkdtemp(prefix="cache-", dir=work_dir)
    start = time.perf_counter()
    dataset, _ = build_dataset(
        image_dir,
        image_size=image_size,
        batch_size=batch_size,
        training=True,
        augment=True,
        cache=cache,
        verbose=False,
    )
    build = time.perf_counter() - start
    rate, first, cpu = time_batches(iter(dataset.repeat()), batches, batch_size, warmup)
    return {
        "rate": rate,
        "first_batch_s": first,
        "cpu_ms_per_image": cpu * 1000,
        "build_s": build,
    }


# Run by `official` in a fresh interpreter: argv = settings JSON.
_OFFICIAL_WORKER = r"""
import json, sys, time, types
settings = json.loads(sys.argv[1])
sys.path[:0] = [p for p in (settings["official"], settings["opencv"]) if p]
import numpy as np
if not hasattr(np, "int"):
    np.int = int  # the official code predates NumPy 1.24
for name in ("matplotlib", "matplotlib.pyplot", "torchvision", "torchvision.utils"):
    try:
        __import__(name)
    except ImportError:
        class StandIn(types.ModuleType):  # any attribute: a do-nothing call
            def __getattr__(self, attribute):
                if attribute.startswith("__"):
                    raise AttributeError(attribute)
                return lambda *args, **kwargs: None
        sys.modules[name] = StandIn(name)
import torch
import yaml
from utils.datasets import InfiniteDataLoader, LoadImagesAndLabels
with open(settings["hyp"]) as file:
    hyp = yaml.safe_load(file)
# A label cache left by an earlier run cannot be read back by torch >= 2.6
# (weights_only); the loader rescans the 300 label files in well under a second.
import os
cache = os.path.join(os.path.dirname(settings["images"]), "labels.cache3")
if os.path.exists(cache):
    os.remove(cache)
dataset = LoadImagesAndLabels(
    settings["images"], settings["image_size"], settings["batch_size"],
    augment=True, hyp=hyp, rect=False, stride=64)
loader = InfiniteDataLoader(
    dataset, batch_size=settings["batch_size"], num_workers=settings["workers"],
    collate_fn=LoadImagesAndLabels.collate_fn)
def cpu_seconds(pids):  # user + system time of processes, from /proc
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
def forever():  # one pass per __iter__; its workers live on between passes
    while True:
        yield from loader
iterator = forever()
start = time.perf_counter()
next(iterator)
first = time.perf_counter() - start
for _ in range(settings["warmup"] - 1):
    next(iterator)
pids = [os.getpid()] + [worker.pid for worker in loader.iterator._workers]
wall, cpu = time.perf_counter(), cpu_seconds(pids)
for _ in range(settings["batches"]):
    next(iterator)
images = settings["batches"] * settings["batch_size"]
rate = images / (time.perf_counter() - wall)
cpu_ms = (cpu_seconds(pids) - cpu) / images * 1000
print("RESULT " + json.dumps({"rate": rate, "first_batch_s": first, "cpu_ms_per_image": cpu_ms}))
"""


def official(
    image_dir,
    official_dir,
    hyp,
    opencv_dir=None,
    image_size=640,
    batch_size=16,
    batches=20,
    warmup=3,
    workers=2,
    timeout=1800,
):
    """Times the official loader (mosaic, `hyp`'s augmentation) in a fresh process.

    Args:
        image_dir: the `images` folder written by `write_yolo_sources`. The
            official loader writes its label cache beside `labels`.
        official_dir: a folder holding the official `utils` package.
        hyp: the official hyp YAML, e.g. `hyp.scratch.1280.yaml`.
        opencv_dir: a folder with OpenCV installed, put on the path first.
        workers: the DataLoader's worker processes.

    Returns:
        dict with "rate" (img/s), "first_batch_s" and "cpu_ms_per_image"
        (CPU time of the main and worker processes, from /proc, per timed
        image).

    Raises:
        RuntimeError: the official loader failed; the message ends with its
            output.
    """
    settings = {
        "official": os.path.abspath(official_dir),
        "opencv": os.path.abspath(opencv_dir) if opencv_dir else None,
        "hyp": os.path.abspath(hyp),
        "images": os.path.abspath(image_dir),
        "image_size": image_size,
        "batch_size": batch_size,
        "batches": batches,
        "warmup": warmup,
        "workers": workers,
    }
    if not os.path.isfile(os.path.join(settings["official"], "utils", "datasets.py")):
        raise FileNotFoundError(f"{official_dir}: no utils/datasets.py (the official code).")
    done = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_WORKER, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"The official loader in {official_dir} failed (exit {done.returncode}):\n"
        + (done.stdout + done.stderr)[-3000:]
    )


def cache_label(cache):
    if not cache:
        return "ours, decoding every image (cache=False)"
    return f'ours, cache="{cache}"'


def data_rows(
    images=300,
    width=640,
    height=480,
    image_size=640,
    batch_size=16,
    batches=20,
    warmup=3,
    caches=DEFAULT_CACHES,
    official_dir=None,
    opencv_dir=None,
    hyp=None,
    workers=2,
    verbose=True,
    rounds=1,
):
    """Measures ours (each cache choice) and the official loader on the same files.

    Args:
        images: source JPEGs written.
        width, height: their size.
        image_size: S, the mosaic output side.
        batch_size, batches, warmup: timed batches, after warm-up ones.
        caches: the `cache` choices of ours to time ("disk" is a fresh
            disk cache).
        official_dir: the official code (its `utils` package), or None to
            skip the official row.
        opencv_dir: where OpenCV is installed, for the official loader.
        hyp: the official hyp YAML (needed with `official_dir`).
        workers: the official DataLoader's worker processes.
        verbose: print the table.
        rounds: times every loader is measured, in turn (official, then
            each of ours, then again). On a shared machine the load moves
            within seconds, so each round's ratios compare loaders timed
            next to each other, and the medians over rounds are reported
            (see `combine_rounds`).

    Returns:
        One dict per row: "loader", "rate" (img/s), "first_batch_s",
        "ratio" (rate over the official rate, None without it),
        "cpu_ms_per_image", "cpu_ratio" (the official CPU time per image
        over this row's) and, for ours, "build_s"; with several rounds,
        medians, plus "rounds" (each round's values) and "load" (the
        1-minute load average after each round).
    """
    if official_dir and not hyp:
        raise ValueError("data_rows: the official loader needs hyp= (hyp.scratch.1280.yaml).")
    if rounds < 1:
        raise ValueError(f"data_rows: rounds={rounds}; at least 1.")
    folder = tempfile.mkdtemp(prefix="yolor-data-bench-")
    try:
        image_dir, mean_bytes = write_yolo_sources(folder, images, width, height)
        if verbose:
            print(
                f"{images} JPEGs {width}x{height} ({mean_bytes / 1024:.0f} KB each), "
                f"mosaic at {image_size}, batch {batch_size}, {batches} batches timed "
                f"after {warmup}; {os.cpu_count()} CPUs; {rounds} round(s), "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        measured = []
        for _ in range(rounds):
            rows = []
            if official_dir:
                result = official(
                    image_dir,
                    official_dir,
                    hyp,
                    opencv_dir,
                    image_size,
                    batch_size,
                    batches,
                    warmup,
                    workers,
                )
                rows.append({"loader": f"official, {workers} workers", **result})
            for cache in caches:
                result = ours(image_dir, cache, image_size, batch_size, batches, warmup, folder)
                rows.append({"loader": cache_label(cache), **result})
            add_ratios(rows, bool(official_dir))
            measured.append((rows, os.getloadavg()[0]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = combine_rounds(measured) if rounds > 1 else measured[0][0]
    if verbose:
        print(markdown_table(rows))
        if rounds > 1:
            loads = ", ".join(f"{load:.1f}" for _, load in measured)
            print(f"Medians of {rounds} rounds; load average after each: {loads}")
    return rows


def add_ratios(rows, has_official):
    """Sets each row's "ratio" and "cpu_ratio" to the first (official) row's."""
    reference = rows[0]["rate"] if has_official else None
    reference_cpu = rows[0]["cpu_ms_per_image"] if has_official else None
    for row in rows:
        row["ratio"] = row["rate"] / reference if reference else None
        # On a shared machine CPU time per image is the steadier measure:
        # cores / CPU time is the rate with the cores to itself.
        row["cpu_ratio"] = reference_cpu / row["cpu_ms_per_image"] if reference_cpu else None
    return rows


def combine_rounds(measured):
    """Medians over rounds of each loader's values and ratios.

    Args:
        measured: list of (rows, load) per round, the rows of every round
            naming the same loaders in the same order, with ratios set
            within the round (`add_ratios`).

    Returns:
        One row per loader: the median of each numeric value over the
        rounds (the ratio is the median of the per-round ratios, each from
        loaders timed next to each other, not a ratio of medians), with
        "rounds" holding the rounds' rows and "load" their load averages.
    """
    combined = []
    for index, first in enumerate(measured[0][0]):
        per_round = [rows[index] for rows, _ in measured]
        row = {"loader": first["loader"]}
        for key, value in first.items():
            if key == "loader":
                continue
            values = [r[key] for r in per_round]
            row[key] = None if value is None else float(np.median(values))
        row["rounds"] = per_round
        row["load"] = [load for _, load in measured]
        combined.append(row)
    return combined


def markdown_table(rows):
    cores = os.cpu_count()
    lines = [
        f"| loader | img/s | vs official | CPU ms/img | img/s on {cores} free cores "
        "| vs official (CPU) | first batch (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") else "-"
        cpu_ratio = f"{row['cpu_ratio']:.2f}x" if row.get("cpu_ratio") else "-"
        cpu = row["cpu_ms_per_image"]
        lines.append(
            f"| {row['loader']} | {row['rate']:.1f} | {ratio} | {cpu:.1f} | "
            f"{cores * 1000 / cpu:.0f} | {cpu_ratio} | {row['first_batch_s']:.1f} |"
        )
    return "\n".join(lines)
