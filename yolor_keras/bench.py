"""Benchmarks: ``python -m yolor_keras.bench models``.

For each model it prints the parameter count, the GFLOPs at the input size
(FLOP = 2 x multiply-accumulate, as the official figures), and the
median batch-1 latency of the Keras model called through a compiled
`tf.function`: unfolded, folded (`yolor_keras.export.folding`), and folded
with XLA (``jit_compile=True``), each with the achieved GFLOP/s. All figures of one run come from the same process, so
their ratios are meaningful on a noisy machine.

Other benchmarks: ``benchmarks/data_pipeline.py`` (training pipeline
images/s) and ``benchmarks/deployment.py`` (every export format).
"""

import argparse
import platform
import time

import numpy as np

DEFAULT_MODELS = ("yolor_p6", "yolor_csp")


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


def median_latency(function, inputs, warmup=2, repeats=10):
    """Median seconds of ``function(inputs)`` after ``warmup`` calls."""
    for _ in range(warmup):
        np.asarray(function(inputs)[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(function(inputs)[0])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def benchmark_models(names=DEFAULT_MODELS, image_size=640, repeats=10):
    """Returns one row of figures per model (see module docstring)."""
    import tensorflow as tf

    from yolor_keras.export import fold
    from yolor_keras.models import YOLORDetector

    rows = []
    images = tf.constant(np.random.default_rng(0).random((1, image_size, image_size, 3), np.float32))
    for name in names:
        detector = YOLORDetector.from_preset(name, image_size=image_size)
        folded = fold(detector)
        gflops = graph_gflops(detector, image_size)
        row = {
            "model": name,
            "params": official_parameter_count(detector),
            "gflops": gflops,
        }
        variants = (("unfolded", detector, False), ("folded", folded, False), ("folded_xla", folded, True))
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
            f" {row[key + '_s'] * 1000:>14.0f} {row[key + '_gflops_per_s']:>8.0f}" for key, _ in VARIANTS
        )
        ratios = " ".join(f"{row[key + '_s'] / row['unfolded_s']:.2f}" for key, _ in VARIANTS[1:])
        print(f"{row['model']:<12} {row['params']:>12,} {row['gflops']:>7.1f}{cells}  {ratios}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="yolor-keras benchmarks")
    parser.add_argument("what", choices=["models"], help="what to benchmark")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    import os

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, batch 1, {args.image_size}x{args.image_size}, "
          f"median of {args.repeats}")
    benchmark_models(args.models, args.image_size, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
