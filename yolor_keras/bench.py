"""Benchmarks: ``python -m yolor_keras.bench`` (the full table) and ``... models``.

``python -m yolor_keras.bench`` prints, from one process:

1. before each model, the machine's own matmul peak, float32 and bfloat16
   (a square ``--matmul-size`` matmul through TensorFlow, median of
   several runs);
2. for each model, the batch-1 latency of every inference path, its
   GFLOP/s (FLOP = 2 x multiply-accumulate of the network, as the official
   figures) and its share of the matching peak (fp32 paths of the fp32 peak,
   bf16 paths of the bf16 peak):

   - ``keras fp32``: the training-form detector (BatchNorm, implicit layers)
     through a `tf.function`;
   - ``folded fp32`` / ``folded fp32+XLA``: the deploy form
     (`yolor_keras.export.folding`), without and with ``jit_compile``;
   - ``folded bf16`` / ``folded bf16+XLA``: the deploy form rebuilt under
     ``mixed_bfloat16`` (`with_precision`);
   - ``saved_model fp32`` / ``saved_model bf16``: the ``predict_images``
     signature of `export_saved_model`, loaded back with
     `tf.saved_model.load`; it includes letterboxing, decoding and NMS.

All figures of one run come from the same process, so their ratios are
meaningful on a noisy machine; the load average is printed at the start and
the end.

``python -m yolor_keras.bench models`` prints the shorter table of parameter
counts, GFLOPs and fp32 latencies (unfolded, folded, folded+XLA).

Other benchmarks: ``benchmarks/data_pipeline.py`` (training pipeline
images/s) and ``benchmarks/deployment.py`` (every export format).
"""

import argparse
import os
import platform
import tempfile
import time

import numpy as np

DEFAULT_MODELS = ("yolor_p6", "yolor_csp")
# (label, precision, kind): kind is "keras" (training form), "folded",
# "folded_xla" or "saved_model".
PATHS = (
    ("keras fp32", "fp32", "keras"),
    ("folded fp32", "fp32", "folded"),
    ("folded fp32+XLA", "fp32", "folded_xla"),
    ("folded bf16", "bf16", "folded"),
    ("folded bf16+XLA", "bf16", "folded_xla"),
    ("saved_model fp32", "fp32", "saved_model"),
    ("saved_model bf16", "bf16", "saved_model"),
)


def graph_gflops(model, image_size):
    """FLOPs (2 x multiply-accumulate) of one batch-1 forward pass, in G.

    Counted by TensorFlow's graph profiler on the traced function, where
    every shape is static; convolutions are almost all of it.
    """
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer
    from tensorflow.python.profiler import option_builder

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec((1, image_size, image_size, 3), tf.float32)
    )
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = model_analyzer.profile(concrete.graph, options=options)
    return profile.total_float_ops / 1e9


def official_parameter_count(model):
    """Parameters as PyTorch counts them: trainable weights only."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _materialise(outputs):
    """Forces every output to exist on the host (a tiny read of each)."""
    import tensorflow as tf

    for tensor in tf.nest.flatten(outputs):
        np.asarray(tf.reshape(tensor, [-1])[:1])


def median_seconds(call, warmup=2, repeats=10):
    """Median wall seconds of ``call()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        _materialise(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _materialise(call())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def median_latency(function, inputs, warmup=2, repeats=10):
    """Median seconds of ``function(inputs)`` after ``warmup`` calls."""
    return median_seconds(lambda: function(inputs), warmup, repeats)


def matmul_peak(precision, size=4096, repeats=5):
    """GFLOP/s of a ``size`` x ``size`` matmul in this process.

    bf16 multiplies bfloat16 tensors with `tf.linalg.matmul` (oneDNN runs
    it on AMX or AVX512-BF16 where the CPU has them); the time includes
    nothing but the matmul (the result is reduced to one element inside
    the function, so no copy is timed).
    """
    import tensorflow as tf

    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    rng = np.random.default_rng(0)
    left = tf.cast(tf.constant(rng.standard_normal((size, size), np.float32)), dtype)
    right = tf.cast(tf.constant(rng.standard_normal((size, size), np.float32)), dtype)
    matmul = tf.function(lambda a, b: tf.linalg.matmul(a, b)[0, 0])
    seconds = median_seconds(lambda: matmul(left, right), warmup=2, repeats=repeats)
    return 2 * size**3 / seconds / 1e9


def measure_peaks(size=4096, repeats=5):
    """``{"fp32": GFLOP/s, "bf16": GFLOP/s}`` of this machine's matmul."""
    return {precision: matmul_peak(precision, size, repeats) for precision in ("fp32", "bf16")}


def _path_runner(kind, precision, detector, folded_by_precision, image_size, work_dir):
    """A zero-argument callable running one batch-1 inference of a path."""
    import tensorflow as tf

    images = tf.constant(
        np.random.default_rng(0).random((1, image_size, image_size, 3), np.float32)
    )
    if kind in ("keras", "folded", "folded_xla"):
        model = detector if kind == "keras" else folded_by_precision[precision]
        function = tf.function(
            lambda x, m=model: m(x, training=False), jit_compile=kind == "folded_xla"
        )
        return lambda: function(images)
    if kind == "saved_model":
        from yolor_keras.export.saved_model import export_saved_model

        export_dir = os.path.join(
            work_dir, f"{detector.name}_{precision}", "1"
        )  # work_dir is per run
        export_saved_model(
            folded_by_precision[precision], export_dir, image_size=image_size, precision=precision
        )
        signature = tf.saved_model.load(export_dir).signatures["predict_images"]
        pixels = tf.constant(
            np.random.default_rng(0).integers(0, 256, (1, image_size, image_size, 3), np.uint8)
        )
        return lambda: signature(images=pixels)
    raise ValueError(f"Unknown benchmark path kind {kind!r}.")


def benchmark_paths(
    detector, image_size, peaks, repeats=10, paths=PATHS, work_dir=None, gflops=None
):
    """Times each inference path of one detector (see the module docstring).

    Args:
        detector: a training-form `YOLORObjectDetector`.
        image_size: side of the square batch-1 input.
        peaks: `measure_peaks` output.
        repeats: timed calls per path (median), after 2 warm-up calls.
        paths: the subset of `PATHS` to run.
        work_dir: folder for the SavedModel exports (default: a temporary
            folder removed afterwards).
        gflops: the network's GFLOPs at `image_size` (counted if None).

    Returns:
        One dict per path: ``path``, ``precision``, ``seconds``,
        ``gflops_per_s``, ``share_of_peak`` (of ``peaks[precision]``), and
        ``error`` (None, or why the path could not run; then the figures
        are None).
    """
    from yolor_keras.export.folding import deploy_form
    from yolor_keras.inference.predictor import with_precision

    if gflops is None:
        gflops = graph_gflops(detector, image_size)
    folded = deploy_form(detector)
    needs_bf16 = any(precision == "bf16" for _, precision, _ in paths)
    folded_by_precision = {"fp32": folded}
    if needs_bf16:
        folded_by_precision["bf16"] = with_precision(folded, "bf16")
    rows = []
    with tempfile.TemporaryDirectory(prefix="yolor_bench_") as temporary:
        for label, precision, kind in paths:
            row = {
                "path": label,
                "precision": precision,
                "seconds": None,
                "gflops_per_s": None,
                "share_of_peak": None,
                "error": None,
            }
            try:
                call = _path_runner(
                    kind,
                    precision,
                    detector,
                    folded_by_precision,
                    image_size,
                    work_dir or temporary,
                )
                seconds = median_seconds(call, repeats=repeats)
            except Exception as error:  # a path that fails (e.g. XLA) is reported, not fatal
                row["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            else:
                row["seconds"] = seconds
                row["gflops_per_s"] = gflops / seconds
                row["share_of_peak"] = row["gflops_per_s"] / peaks[precision]
            rows.append(row)
    return rows


def print_peaks(peaks, size):
    print(
        f"Matmul peak ({size}x{size}, this process): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s (bf16/fp32 {peaks['bf16'] / peaks['fp32']:.1f}x)",
        flush=True,
    )


def print_path_rows(name, params, gflops, rows):
    print(f"{name}: {params:,} parameters, {gflops:.1f} GFLOPs")
    print(f"  {'path':<18} {'ms':>8} {'GFLOP/s':>8} {'% of peak':>9} {'vs keras fp32':>13}")
    baseline = next((row["seconds"] for row in rows if row["path"] == "keras fp32"), None)
    for row in rows:
        if row["error"]:
            print(f"  {row['path']:<18} failed: {row['error']}")
            continue
        ratio = f"{baseline / row['seconds']:.2f}x" if baseline else "-"
        print(
            f"  {row['path']:<18} {row['seconds'] * 1000:>8.0f} {row['gflops_per_s']:>8.0f} "
            f"{row['share_of_peak'] * 100:>8.0f}% {ratio:>13}",
            flush=True,
        )


def full_table(names=DEFAULT_MODELS, image_size=640, repeats=10, matmul_size=4096):
    """Measures every path of each preset, and the matmul peaks just before; prints and returns them."""
    from yolor_keras.tasks import YOLORObjectDetector

    results = {"models": {}}
    for name in names:
        detector = YOLORObjectDetector.from_preset(name, image_size=image_size)
        gflops = graph_gflops(detector, image_size)
        # Measured again right before each model: on a shared machine the
        # peak of a minute ago may not be the one this model's paths get.
        peaks = measure_peaks(matmul_size)
        print()
        print_peaks(peaks, matmul_size)
        rows = benchmark_paths(detector, image_size, peaks, repeats=repeats, gflops=gflops)
        params = official_parameter_count(detector)
        print_path_rows(name, params, gflops, rows)
        results["models"][name] = {"params": params, "gflops": gflops, "peaks": peaks, "rows": rows}
    return results


def benchmark_models(names=DEFAULT_MODELS, image_size=640, repeats=10):
    """The ``models`` table: one row of fp32 figures per model."""
    import tensorflow as tf

    from yolor_keras.export.folding import fold
    from yolor_keras.tasks import YOLORObjectDetector

    rows = []
    images = tf.constant(
        np.random.default_rng(0).random((1, image_size, image_size, 3), np.float32)
    )
    for name in names:
        detector = YOLORObjectDetector.from_preset(name, image_size=image_size)
        folded = fold(detector)
        gflops = graph_gflops(detector, image_size)
        row = {
            "model": name,
            "params": official_parameter_count(detector),
            "gflops": gflops,
        }
        variants = (
            ("unfolded", detector, False),
            ("folded", folded, False),
            ("folded_xla", folded, True),
        )
        for label, model, xla in variants:
            call = tf.function(lambda x, m=model: m(x, training=False), jit_compile=xla)
            seconds = median_latency(call, images, repeats=repeats)
            row[f"{label}_s"] = seconds
            row[f"{label}_gflops_per_s"] = gflops / seconds
        rows.append(row)
        print_rows([row], header=len(rows) == 1)
    return rows


VARIANTS = (("unfolded", "unfolded"), ("folded", "folded"), ("folded_xla", "folded+XLA"))


def print_rows(rows, header=True):
    if header:
        columns = "".join(f" {title + ' ms':>14} {'GFLOP/s':>8}" for _, title in VARIANTS)
        print(f"{'model':<12} {'params':>12} {'GFLOPs':>7}{columns}  ratios to unfolded")
    for row in rows:
        cells = "".join(
            f" {row[key + '_s'] * 1000:>14.0f} {row[key + '_gflops_per_s']:>8.0f}"
            for key, _ in VARIANTS
        )
        ratios = " ".join(f"{row[key + '_s'] / row['unfolded_s']:.2f}" for key, _ in VARIANTS[1:])
        print(
            f"{row['model']:<12} {row['params']:>12,} {row['gflops']:>7.1f}{cells}  {ratios}",
            flush=True,
        )


def cpu_description():
    """CPU model and the matrix extensions that decide the bf16 speed-up.

    bf16 convolutions are fast only with AMX (``amx_bf16``); with
    AVX512-BF16 alone they gain far less, and without either they are
    emulated. Read from ``/proc/cpuinfo`` (Linux); elsewhere the platform
    name.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            text = file.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    present = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{model} ({', '.join(present) or 'no AVX-512'})"


def _load():
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="yolor-keras benchmarks: with no argument, the full table (matmul peaks and "
        "every inference path); `models`: parameters, GFLOPs and fp32 latencies."
    )
    parser.add_argument("what", nargs="?", default="table", choices=["table", "models"])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--matmul-size", type=int, default=4096, help="table: matmul side (4096).")
    parser.add_argument(
        "--serving",
        action="store_true",
        help="Then also `yolor serve`'s images/s and latency at concurrency 1, 4 and 16, without "
        "and with server-side batching (the demo model; see benchmarks/serving_throughput.py).",
    )
    parser.add_argument(
        "--data",
        action="store_true",
        help="Then also the training pipeline's images/s (mosaic at 640, each cache choice; see "
        "benchmarks/data_pipeline.py, which also times the official loader).",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.image_size < 1 or args.matmul_size < 1:
        parser.error("--repeats, --image-size and --matmul-size must be positive.")

    print(
        f"Machine: {cpu_description()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {_load()}"
    )
    import tensorflow as tf

    print(
        f"TensorFlow {tf.__version__}, batch 1, {args.image_size}x{args.image_size}, "
        f"median of {args.repeats}",
        flush=True,
    )
    if args.what == "models":
        benchmark_models(args.models, args.image_size, args.repeats)
    else:
        full_table(args.models, args.image_size, args.repeats, args.matmul_size)
    if args.serving:
        from yolor_keras.serving.throughput import serving_rows

        print("\nyolor serve, demo model, one JPEG per REST request:", flush=True)
        serving_rows()
    if args.data:
        from yolor_keras.data.throughput import data_rows

        print("\nTraining pipeline, synthetic 640x480 JPEGs:", flush=True)
        data_rows()
    print(f"\nAt the end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
