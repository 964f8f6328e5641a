"""Where the folded (deploy) model's inference time goes, against the matmul peak.

Builds the folded yolor_p6 / yolor_csp at 640 (random weights, batch 1),
measures the fp32 and bf16 4096² matmul peak in the same process, then times
these variants interleaved (median of ``--repeats``), as ms and share of the
matching peak:

* ``before``: the deploy graph as it was built before `FusedConv2D`
  (ZeroPadding2D + Keras Conv2D, whose bias is an AddV2, + Activation("silu")),
  rebuilt here by swapping the conv builder; same weights as ``after``.
* ``after``: the deploy graph the package builds now (`FusedConv2D`).
* ``after, frozen``: ``after`` with its variables turned into constants
  (what a frozen export runs; lets oneDNN cache re-laid-out filters).
* each of ``before`` / ``after`` in bf16 (`with_precision(..., "bf16")`).

``--profile`` adds a per-primitive breakdown of each variant from oneDNN's
own log (``ONEDNN_VERBOSE=1``, in a child process): convolutions with and
without a fused SiLU post-op, separate SiLU (eltwise) ops, weight reorders. Thread pools are set before
TensorFlow starts with ``--intra`` / ``--inter``; compare their shares of
peak across runs, not their milliseconds.

    python benchmarks/inference_profile.py --models yolor_p6,yolor_csp --repeats 7 --profile
"""

import argparse
import collections
import os
import sys
import time

import numpy as np


def _legacy_deploy_conv(node, inputs, bn_epsilon, deploy):
    """The deploy conv as built before `FusedConv2D`: explicit ZeroPadding2D for
    stride 2, Keras Conv2D (bias via AddV2), then a separate SiLU layer."""
    import keras

    from yolor_keras.models import graph_builder
    from yolor_keras.models.graph_plan import keras_name

    if not deploy:
        return graph_builder._conv(node, inputs, bn_epsilon, deploy)
    x = inputs[0]
    kernel, stride = node["kernel"], node["stride"]
    padding = "valid"
    if kernel > 1:
        if stride == 1 and kernel % 2 == 1:
            padding = "same"
        else:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=keras_name(node["pad_name"]))(x)
    x = keras.layers.Conv2D(
        node["filters"],
        kernel,
        strides=stride,
        padding=padding,
        use_bias=node["bias"] or node["bn_name"] is not None,
        name=keras_name(node["conv_name"]),
    )(x)
    if node["act_name"]:
        x = keras.layers.Activation("silu", name=keras_name(node["act_name"]))(x)
    return x


def build_variants(name, image_size):
    """``{label: (model_or_function, precision)}`` for one preset."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from yolor_keras.export.folding import fold
    from yolor_keras.inference.predictor import with_precision
    from yolor_keras.models import graph_builder
    from yolor_keras.tasks import YOLORObjectDetector

    detector = YOLORObjectDetector.from_preset(name, image_size=image_size)
    # Trained BatchNorms fold into non-zero conv biases. A fresh model's fold
    # gives zero biases, which grappler deletes from a frozen graph, and a
    # conv without BiasAdd no longer matches the conv + bias + SiLU fusion.
    rng = np.random.default_rng(0)
    for weight in detector.weights:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
        elif "moving_mean" in weight.path or "beta" in weight.path:
            weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    after = fold(detector)
    original = graph_builder._BUILDERS["conv"]
    graph_builder._BUILDERS["conv"] = _legacy_deploy_conv
    try:
        before = fold(detector)
    finally:
        graph_builder._BUILDERS["conv"] = original
    spec = tf.TensorSpec((1, image_size, image_size, 3), tf.float32)

    def function(model):
        return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)

    return {
        "before fp32": (function(before), "fp32"),
        "after fp32": (function(after), "fp32"),
        "after fp32, frozen": (convert_variables_to_constants_v2(function(after)), "fp32"),
        "before bf16": (function(with_precision(before, "bf16")), "bf16"),
        "after bf16": (function(with_precision(after, "bf16")), "bf16"),
        "after bf16, frozen": (
            convert_variables_to_constants_v2(function(with_precision(after, "bf16"))),
            "bf16",
        ),
    }, after


def _materialise(outputs):
    """Forces every output to exist on the host (a tiny read of each)."""
    import tensorflow as tf

    for tensor in tf.nest.flatten(outputs):
        np.asarray(tf.reshape(tensor, [-1])[:1])


def time_interleaved(functions, images, repeats):
    """Median seconds per function, the calls of all functions interleaved."""
    for function in functions.values():
        for _ in range(2):
            _materialise(function(images))
    times = collections.defaultdict(list)
    for _ in range(repeats):
        for label, function in functions.items():
            start = time.perf_counter()
            _materialise(function(images))
            times[label].append(time.perf_counter() - start)
    return {label: float(np.median(values)) for label, values in times.items()}


PROFILED = ("before fp32", "after fp32", "after fp32, frozen", "after bf16", "after bf16, frozen")


def _profile_child(name, image_size, calls=2):
    """Runs in a child with ONEDNN_VERBOSE=1: marks, then ``calls`` calls per variant."""
    import tensorflow as tf

    functions, _ = build_variants(name, image_size)
    images = tf.constant(
        np.random.default_rng(0).random((1, image_size, image_size, 3), np.float32)
    )
    for label in PROFILED:
        for _ in range(2):
            _materialise(functions[label][0](images))
    for label in PROFILED:
        for _ in range(calls):
            print(f"=====MARK {label}", flush=True)
            _materialise(functions[label][0](images))
    print("=====MARK end", flush=True)


def onednn_profile(name, image_size, calls=2):
    """ms per call of each oneDNN primitive kind, per variant (``ONEDNN_VERBOSE=1``).

    Keys are ``kind impl`` plus ``+post-ops`` when the primitive carries a fused
    post-op (the SiLU); ``reorder`` lines are weight re-layouts done at every
    call. Time outside oneDNN (concat, pad, TF's own ops, framework overhead)
    is the wall time minus their sum.
    """
    import subprocess

    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, __file__, "--profile-child", name, "--image-size", str(image_size)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    totals = collections.defaultdict(collections.Counter)
    counts = collections.defaultdict(collections.Counter)
    label = None
    for line in output.splitlines():
        if line.startswith("=====MARK"):
            label = line.split(" ", 1)[1]
            continue
        fields = line.split(",")
        if label in (None, "end") or len(fields) < 8 or fields[3] != "exec":
            continue
        post = any("attr-post-ops" in field for field in fields)
        key = f"{fields[5]} {fields[6]}" + (" +post-ops" if post else "")
        totals[label][key] += float(fields[-1]) / calls
        counts[label][key] += 1 / calls
    return totals, counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolor_p6,yolor_csp")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF default)")
    parser.add_argument("--profile", action="store_true", help="per-op breakdown too")
    parser.add_argument("--profile-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_child:
        return _profile_child(args.profile_child, args.image_size)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    from yolor_keras.bench import cpu_description
    from yolor_keras.bench import graph_gflops
    from yolor_keras.bench import measure_peaks

    print(cpu_description())
    print(f"threads: intra {args.intra or 'default'}, inter {args.inter or 'default'}")
    images = tf.constant(
        np.random.default_rng(0).random((1, args.image_size, args.image_size, 3), np.float32)
    )
    for name in args.models.split(","):
        functions, folded = build_variants(name, args.image_size)
        gflops = graph_gflops(folded, args.image_size)
        peaks = measure_peaks()
        print(
            f"\n{name} @{args.image_size}: {gflops:.1f} GFLOP; matmul peak "
            f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        medians = time_interleaved({k: f for k, (f, _) in functions.items()}, images, args.repeats)
        peaks_after = measure_peaks()
        print(
            f"  (peak after: fp32 {peaks_after['fp32']:.0f}, bf16 {peaks_after['bf16']:.0f}; "
            f"load {os.getloadavg()[0]:.2f})"
        )
        for label, seconds in medians.items():
            precision = functions[label][1]
            peak = (peaks[precision] + peaks_after[precision]) / 2
            share = gflops / seconds / peak
            print(
                f"  {label:<22} {seconds * 1e3:8.1f} ms  {gflops / seconds:6.1f} GFLOP/s"
                f"  {share:6.1%} of the {precision} peak"
            )
        if args.profile:
            totals, counts = onednn_profile(name, args.image_size)
            for label in PROFILED:
                total = sum(totals[label].values())
                print(
                    f"  oneDNN primitives, {label}: {total:.0f} ms per call "
                    f"(wall {medians[label] * 1e3:.0f} ms, outside oneDNN "
                    f"{medians[label] * 1e3 - total:.0f} ms)"
                )
                for key, ms in totals[label].most_common():
                    print(f"    {key:<52} {ms:8.1f} ms  x{counts[label][key]:4.0f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
