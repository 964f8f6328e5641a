"""Latency of every deployment format, batch 1, on this machine's CPU.

For each model (default: yolor_p6 and yolor_csp at 640, randomly
initialised, 80 classes) it exports the folded model to each format and
times one letterboxed image through network + decoding + NMS:

- Keras: `Predictor.detect_letterboxed`, one compiled `tf.function`
  (training form, and the folded deploy form);
- SavedModel: the ``predict_images`` signature (uint8 pixels in) and the
  ``serving_default`` signature (a JPEG in, decoded in the graph);
- TFLite float32 / float16 / int8 with the LiteRT runtime;
- ONNX Runtime (the file with NMS inside).

It prints a Markdown table of the median and best wall time, the CPU time,
and each format's ratio to the folded Keras graph (the fastest TensorFlow
graph, which the exports are held to), and writes the numbers as JSON. Each
model runs in its own process. ``--compare-defaults`` adds ONNX Runtime's
default session and LiteRT's single default thread, the settings the
predictors replace.

Usage: ``python benchmarks/deployment.py [--models yolor_p6 yolor_csp]
[--image-size 640] [--repeats 10] [--threads N] [--compare-defaults]
[--out runs/benchmarks]``
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CALIBRATION_IMAGES = 8


def interleaved_seconds(functions, repeats, warmup=2):
    """Times every callable of `functions` in turns: one call of each per round.

    On a machine that other processes share, the load drifts over minutes;
    timing one format after another would charge that drift to whichever
    format ran at the busy moment. Taking turns within each round spreads it
    over all of them, so their ratios hold.

    Args:
        functions: dict of label -> callable.
        repeats: timed rounds.
        warmup: untimed rounds first.

    Returns:
        dict of label -> `(median wall, best wall, median CPU)` seconds per
        call. The CPU time (all threads of this process) is the least
        disturbed by other processes; on an idle machine with T busy
        threads, wall time is about CPU time / T.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    walls = {label: [] for label in functions}
    cpus = {label: [] for label in functions}
    for _ in range(repeats):
        for label, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            cpus[label].append(time.process_time() - cpu)
            walls[label].append(time.perf_counter() - wall)
    return {
        label: (statistics.median(walls[label]), min(walls[label]), statistics.median(cpus[label]))
        for label in functions
    }


def synthetic_images(count, size, seed=0):
    """Coloured shapes on a gradient, as uint8 arrays (calibration and input)."""
    from PIL import Image
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = (int(side) for side in rng.integers(size // 2, size + size // 2, 2))
        ys, xs = np.mgrid[0:height, 0:width]
        background = np.stack([xs * 200 / width, ys * 200 / height, np.full_like(xs, 90)], -1)
        image = Image.fromarray(background.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x1, y1 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            x2, y2 = x1 + int(rng.integers(20, width // 3)), y1 + int(rng.integers(20, height // 3))
            draw.rectangle([x1, y1, x2, y2], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        images.append(np.asarray(image))
    return images


def benchmark_model(name, image_size, repeats, out_dir, threads, compare_defaults=False):
    import tensorflow as tf

    from yolor_keras.export import LiteRTPredictor
    from yolor_keras.export import ONNXPredictor
    from yolor_keras.export import export_onnx
    from yolor_keras.export import export_saved_model
    from yolor_keras.export import export_tflite
    from yolor_keras.export import fold
    from yolor_keras.inference import Predictor
    from yolor_keras.layers import NonMaxSuppression
    from yolor_keras.tasks import YOLORObjectDetector

    print(f"\n== {name} @ {image_size} ==", flush=True)
    # Every format takes the task's NMS settings: one decoder for all rows.
    detector = YOLORObjectDetector.from_preset(
        name, num_classes=80, prediction_decoder=NonMaxSuppression(max_detections=100)
    )
    folded = fold(detector)
    # Exports take the folded model (a training-form one would be folded
    # again for each). ONNX goes first: tf2onnx needs the most memory
    # (about 14 GB for yolor_csp), and TensorFlow never gives back what the
    # other formats took.
    onnx_path = os.path.join(out_dir, f"{name}_nms.onnx")
    started = time.perf_counter()
    export_onnx(folded, onnx_path, image_size=image_size, nms=True)
    print(f"(ONNX export {time.perf_counter() - started:.0f} s)", flush=True)
    image = synthetic_images(1, image_size, seed=123)[0]
    keras_predictor = Predictor(detector, image_size=image_size)
    letterboxed = keras_predictor.letterbox(image)[0][None]
    pixels = tf.constant(
        np.asarray(tf.image.resize(image, [image_size, image_size]), np.uint8)[None]
    )
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    jpeg = tf.constant([buffer.getvalue()])

    # Every format is loaded first and then timed in turns (see
    # `interleaved_seconds`).
    runners = {}
    batch = tf.constant(letterboxed)
    runners["Keras tf.function"] = lambda: keras_predictor.detect_letterboxed(batch)
    folded_predictor = Predictor(folded, image_size=image_size)
    runners["Keras tf.function, folded"] = lambda: folded_predictor.detect_letterboxed(batch)

    export_dir = os.path.join(out_dir, "saved_models", name, "1")
    started = time.perf_counter()
    export_saved_model(folded, export_dir, image_size=image_size, overwrite=True)
    print(f"(SavedModel export {time.perf_counter() - started:.0f} s)", flush=True)
    loaded = tf.saved_model.load(export_dir)
    predict_images = loaded.signatures["predict_images"]
    serving_default = loaded.signatures["serving_default"]
    runners["SavedModel predict_images"] = lambda: predict_images(images=pixels)
    runners["SavedModel serving_default (JPEG)"] = lambda: serving_default(images=jpeg)

    calibration = synthetic_images(CALIBRATION_IMAGES, image_size, seed=7)
    labels = {"none": "TFLite float32", "fp16": "TFLite float16", "int8": "TFLite int8"}
    for quantize in ("none", "fp16", "int8"):
        path = os.path.join(out_dir, f"{name}_{quantize}.tflite")
        started = time.perf_counter()
        export_tflite(
            folded,
            path,
            image_size=image_size,
            quantize=quantize,
            representative_images=calibration if quantize == "int8" else None,
        )
        print(
            f"(TFLite {quantize} export {time.perf_counter() - started:.0f} s, "
            f"{os.path.getsize(path) / 1e6:.1f} MB)",
            flush=True,
        )
        runner = LiteRTPredictor(path, num_threads=threads)
        runners[labels[quantize]] = lambda runner=runner: runner.detect_letterboxed_batch(
            letterboxed
        )

    onnx_predictor = ONNXPredictor(onnx_path)
    runners["ONNX Runtime"] = lambda: onnx_predictor.detect_letterboxed_batch(letterboxed)
    if compare_defaults:
        # The runtimes' own defaults, for comparison with the settings the
        # predictors choose: ONNX Runtime's session with spinning threads,
        # LiteRT's single thread.
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: letterboxed.astype(np.float32)}
        runners["ONNX Runtime, default session"] = lambda: session.run(None, feed)
        single = LiteRTPredictor(os.path.join(out_dir, f"{name}_none.tflite"), num_threads=1)
        runners["TFLite float32, 1 thread"] = lambda: single.detect_letterboxed_batch(letterboxed)

    rows = interleaved_seconds(runners, repeats)
    for label, timing in rows.items():
        median, best, cpu = (seconds * 1000 for seconds in timing)
        print(f"{label:<34} {median:8.1f} ms (best {best:.1f} ms, CPU {cpu:.1f} ms)", flush=True)
    return rows


def markdown_table(results, image_size):
    lines = []
    for name, rows in results.items():
        # The fastest TensorFlow graph, the deploy form, is what every
        # exported format is held to.
        base_median, base_best, base_cpu = rows["Keras tf.function, folded"]
        lines.append(f"\n**{name} @ {image_size}, batch 1** (per image)\n")
        lines.append(
            "| format | median wall | best wall | CPU time | vs folded Keras (wall) | vs folded Keras (CPU) |"
        )
        lines.append("|---|---|---|---|---|---|")
        for label, (median, best, cpu) in rows.items():
            lines.append(
                f"| {label} | {median * 1000:.0f} ms | {best * 1000:.0f} ms | {cpu * 1000:.0f} ms "
                f"| {median / base_median:.2f}x | {cpu / base_cpu:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolor_p6", "yolor_csp"])
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="LiteRT threads (default: every usable core)."
    )
    parser.add_argument(
        "--compare-defaults",
        action="store_true",
        help="Also time ONNX Runtime's default session and LiteRT's single thread.",
    )
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    if len(args.models) > 1:
        # One process per model: a full-size model, its exports and their
        # converters hold many GB, which only a process exit gives back.
        for name in args.models:
            command = [sys.executable, os.path.abspath(__file__), "--models", name]
            command += ["--image-size", str(args.image_size), "--repeats", str(args.repeats)]
            command += ["--out", args.out]
            command += ["--threads", str(args.threads)] if args.threads else []
            command += ["--compare-defaults"] if args.compare_defaults else []
            subprocess.run(command, check=True)
        results = {}
        for name in args.models:
            with open(_result_path(args.out, name, args.image_size)) as file:
                results[name] = json.load(file)
    else:
        import tensorflow as tf

        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores", flush=True)
        [name] = args.models
        rows = benchmark_model(
            name, args.image_size, args.repeats, args.out, args.threads, args.compare_defaults
        )
        with open(_result_path(args.out, name, args.image_size), "w") as file:
            json.dump(rows, file, indent=2)
        results = {name: rows}
    table = markdown_table(results, args.image_size)
    print(table)
    with open(os.path.join(args.out, "deployment_latency.md"), "w") as file:
        file.write(table + "\n")
    return 0


def _result_path(out_dir, name, image_size):
    return os.path.join(out_dir, f"latency_{name}_{image_size}.json")


if __name__ == "__main__":
    sys.exit(main())
