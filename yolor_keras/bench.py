"""Benchmarks: ``python -m yolor_keras.bench`` (the full table) and ``... models``.

``python -m yolor_keras.bench`` prints, in one run (ours from one process):

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

3. with ``--official DIR`` (a checkout of the official YOLOR ``main``
   branch, and PyTorch installed), the official PyTorch model of each preset,
   built from ``DIR/cfg/<preset>.cfg`` with random weights, timed the same way
   (batch 1, warm-up calls, median) in a child process, so that torch and
   TensorFlow never share threads: plain fp32, conv+BN fused and
   channels-last fp32, and bf16 autocast fused and channels-last. Then the
   ratios ours / official: our fastest fp32 path against both official fp32
   paths, our fastest bf16 path against the official bf16 one, and the
   fastest against the fastest. The official code runs from DIR only; none
   of it is part of this package.

All figures come from the same run, so their ratios are meaningful on a
noisy machine; the load average is printed at the start and the end.

``python -m yolor_keras.bench models`` prints the shorter table of parameter
counts, GFLOPs and fp32 latencies (unfolded, folded, folded+XLA).

Other benchmarks: ``benchmarks/data_pipeline.py`` (training pipeline
images/s) and ``benchmarks/deployment.py`` (every export format).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
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


def print_path_rows(name, params, gflops, rows, official=None):
    """Our rows of one model; then, if given, `official_rows`' result (or why there is none)."""
    print(f"{name}: {params:,} parameters, {gflops:.1f} GFLOPs")
    print(f"  {'path':<24} {'ms':>8} {'GFLOP/s':>8} {'% of peak':>9} {'vs keras fp32':>13}")
    baseline = next(
        (row["seconds"] for row in rows if row["path"] == "keras fp32" and not row["error"]), None
    )
    _print_rows(rows, baseline)
    if official is not None:
        print_official(official, rows, baseline)


def _print_rows(rows, baseline):
    for row in rows:
        if row["error"]:
            print(f"  {row['path']:<24} failed: {row['error']}")
            continue
        ratio = f"{baseline / row['seconds']:.2f}x" if baseline else "-"
        print(
            f"  {row['path']:<24} {row['seconds'] * 1000:>8.0f} {row['gflops_per_s']:>8.0f} "
            f"{row['share_of_peak'] * 100:>8.0f}% {ratio:>13}",
            flush=True,
        )


# The official rows: (label, precision, kind). The kinds are the ones the
# official code's users reach for on a CPU: the model as built, its own
# `fuse()` (conv+BN) with the channels-last layout oneDNN's fast convolution
# kernels want, and the same under bf16 autocast.
OFFICIAL_PATHS = (
    ("official fp32", "fp32", "plain"),
    ("official fused+CL fp32", "fp32", "fused_cl"),
    ("official bf16 fused+CL", "bf16", "bf16_fused_cl"),
)

# Run by `run_official_child` in a fresh interpreter (argv[1]: settings JSON).
# It prints one line, "RESULT {json}". The official code comes from
# settings["official"] on sys.path; modules it imports but inference never
# calls (OpenCV, matplotlib, torchvision) are replaced by do-nothing
# stand-ins when they are not installed.
_OFFICIAL_WORKER = r"""
import json, statistics, sys, time, types
settings = json.loads(sys.argv[1])
started = time.perf_counter()
sys.path.insert(0, settings["official"])
import numpy as np
if not hasattr(np, "int"):
    np.int = int  # the official code predates NumPy 1.24
for name in ("cv2", "matplotlib", "matplotlib.pyplot", "torchvision", "torchvision.ops"):
    try:
        __import__(name)
    except ImportError:
        class StandIn(types.ModuleType):
            def __getattr__(self, attribute):
                if attribute.startswith("__"):
                    raise AttributeError(attribute)
                return lambda *args, **kwargs: None
        sys.modules[name] = StandIn(name)
import contextlib, io
import torch
torch.set_num_threads(settings["threads"])
torch.manual_seed(0)
with contextlib.redirect_stdout(io.StringIO()):  # its model summary
    from models.models import Darknet
    model = Darknet(settings["cfg"]).eval()
import os
result = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "parameters": sum(p.numel() for p in model.parameters()),
    "import_s": time.perf_counter() - started,
    "rows": [],
}
images = torch.rand(1, 3, settings["image_size"], settings["image_size"],
                    generator=torch.Generator().manual_seed(0))
try:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # it fails under inference_mode (torch 2.13)
        model(images)
    result["gflops"] = counter.get_total_flops() / 1e9
except Exception:
    result["gflops"] = None
def median_seconds(call):
    for _ in range(settings["warmup"]):
        call()
    times = []
    for _ in range(settings["repeats"]):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
def plain():
    return model(images)
channels_last = images.contiguous(memory_format=torch.channels_last)
def fused_cl():
    return model(channels_last)
def bf16_fused_cl():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(channels_last)
calls = {"plain": plain, "fused_cl": fused_cl, "bf16_fused_cl": bf16_fused_cl}
fused = False
for kind in settings["kinds"]:
    row = {"kind": kind, "seconds": None, "error": None}
    try:
        if kind != "plain" and not fused:
            with contextlib.redirect_stdout(io.StringIO()):
                model.fuse()
            model = model.to(memory_format=torch.channels_last)
            fused = True
        with torch.inference_mode():
            row["seconds"] = median_seconds(calls[kind])
    except Exception as error:
        row["error"] = f"{type(error).__name__}: {str(error).strip()[:200]}"
    result["rows"].append(row)
print("RESULT " + json.dumps(result), flush=True)
"""


def official_cfg(official_dir, name):
    """The official cfg of preset ``name`` in a checkout, or None if it has none."""
    path = os.path.join(official_dir, "cfg", f"{name}.cfg")
    return path if os.path.isfile(path) else None


def official_unavailable(official_dir):
    """Why the official rows cannot be measured (one line), or None if they can.

    Raises:
        ValueError: ``official_dir`` is not a checkout of the official code
            (a mistyped path should stop the run, not skip the rows).
    """
    if official_dir is None:
        return (
            "Official PyTorch rows: not measured (pass --official DIR, a checkout of the "
            "official YOLOR main branch)."
        )
    if not os.path.isfile(os.path.join(official_dir, "models", "models.py")):
        raise ValueError(
            f"--official {official_dir}: no models/models.py there (a checkout of the "
            "official YOLOR main branch is needed)."
        )
    if importlib.util.find_spec("torch") is None:
        return "Official PyTorch rows: not measured (torch is not installed: pip install torch)."
    return None


def parse_official_output(stdout):
    """The child's result dict from its output (the ``RESULT {json}`` line), or None."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return None


def run_official_child(settings, timeout=1800):
    """Runs `_OFFICIAL_WORKER` with ``settings`` in a fresh interpreter; returns its result.

    The child runs in a temporary folder with OpenMP limited to
    ``settings["threads"]`` (torch's thread pool is set from it too) and,
    unless the environment already says otherwise, ``OMP_WAIT_POLICY=PASSIVE``:
    on a machine whose cores are shared with other work, OpenMP's default
    spinning made the official P6@256 call 5x slower (2.78 s against 0.54 s
    passive, or 0.52 s on one thread, at load 7 on 2 cores), which would
    flatter our figures; TensorFlow's own pool does not spin that way.

    Raises:
        RuntimeError: the child failed; the message ends with its output.
    """
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(settings["threads"])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    done = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_WORKER, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
        env=env,
    )
    result = parse_official_output(done.stdout)
    if result is None:
        raise RuntimeError(
            f"the official model failed (exit {done.returncode}): "
            + (done.stdout + done.stderr)[-3000:]
        )
    return result


def default_threads():
    """The CPUs this process may run on: TensorFlow's own pool size, so both sides get the same."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def official_rows(
    name,
    official_dir,
    image_size,
    peaks,
    gflops,
    repeats=10,
    threads=None,
    paths=OFFICIAL_PATHS,
    runner=run_official_child,
):
    """Times the official model of preset ``name`` (see the module docstring).

    Args:
        name: a preset with a cfg in ``official_dir/cfg``.
        official_dir: a checkout of the official YOLOR main branch.
        image_size, repeats: as for `benchmark_paths` (2 warm-up calls).
        peaks: `measure_peaks` output (the share of peak uses it).
        gflops: our count of the network's GFLOPs; the official rows use it
            too, so that GFLOP/s compare as the inverse times do (the
            official count, from torch's FLOP counter, is returned beside).
        threads: torch threads (default: `default_threads`).
        paths: the subset of `OFFICIAL_PATHS` to run.
        runner: callable(settings dict) -> the child's result dict
            (`run_official_child`; tests pass a stand-in).

    Returns:
        dict with ``rows`` (same keys as `benchmark_paths`' rows), and
        ``torch``, ``threads``, ``omp_wait_policy``, ``parameters`` and
        ``gflops`` from the child
        (None when it could not run; then ``error`` says why).
    """
    result = {
        "rows": [],
        "torch": None,
        "threads": None,
        "omp_wait_policy": None,
        "parameters": None,
        "gflops": None,
        "error": None,
    }
    cfg = official_cfg(official_dir, name)
    child = None
    if cfg is None:
        result["error"] = f"no cfg/{name}.cfg in {official_dir}"
    else:
        settings = {
            "official": os.path.abspath(official_dir),
            "cfg": os.path.abspath(cfg),
            "image_size": image_size,
            "repeats": repeats,
            "warmup": 2,
            "threads": threads or default_threads(),
            "kinds": [kind for _, _, kind in paths],
        }
        try:
            child = runner(settings)
        except Exception as error:  # reported in the table, not fatal
            result["error"] = f"{type(error).__name__}: {str(error).strip()[:300]}"
    if child is not None:
        for key in ("torch", "threads", "omp_wait_policy", "parameters", "gflops"):
            result[key] = child.get(key)
    by_kind = {row["kind"]: row for row in (child or {}).get("rows", [])}
    for label, precision, kind in paths:
        measured = by_kind.get(kind, {})
        seconds = measured.get("seconds")
        row = {
            "path": label,
            "precision": precision,
            "seconds": seconds,
            "gflops_per_s": None,
            "share_of_peak": None,
            "error": measured.get("error") or (None if seconds else result["error"] or "no result"),
        }
        if seconds and not row["error"]:
            row["gflops_per_s"] = gflops / seconds
            row["share_of_peak"] = row["gflops_per_s"] / peaks[precision]
        result["rows"].append(row)
    return result


def _fastest(rows, precision=None):
    """The fastest row that ran (of one precision, if given), or None."""
    ran = [
        row
        for row in rows
        if row["seconds"] and not row["error"] and precision in (None, row["precision"])
    ]
    return min(ran, key=lambda row: row["seconds"], default=None)


def compare_to_official(rows, official):
    """Ratios ours / official (below 1: ours is faster) for the matching paths.

    Returns a list of ``(comparison, our_row, official_row, ratio)``: our
    fastest fp32 path against the official plain fp32 and against its fused
    channels-last fp32; our fastest bf16 path against the official bf16; our
    fastest path against the official fastest. A comparison with a side
    that did not run is left out.
    """
    by_label = {row["path"]: row for row in official["rows"] if row["seconds"] and not row["error"]}
    pairs = (
        ("fp32 vs fp32", _fastest(rows, "fp32"), by_label.get("official fp32")),
        ("fp32 vs fused+CL fp32", _fastest(rows, "fp32"), by_label.get("official fused+CL fp32")),
        ("bf16 vs bf16", _fastest(rows, "bf16"), by_label.get("official bf16 fused+CL")),
        ("best vs best", _fastest(rows), _fastest(list(by_label.values()))),
    )
    return [
        (comparison, ours, theirs, ours["seconds"] / theirs["seconds"])
        for comparison, ours, theirs in pairs
        if ours and theirs
    ]


def print_official(official, rows, baseline=None):
    """The official rows (continuing `print_path_rows`' table) and the ratios to ours."""
    if isinstance(official, str):  # why they were not measured
        print(f"  {official}", flush=True)
        return
    details = [
        f"torch {official['torch']}" if official["torch"] else None,
        f"{official['threads']} threads" if official["threads"] else None,
        f"OMP_WAIT_POLICY={official['omp_wait_policy']}"
        if official.get("omp_wait_policy")
        else None,
        f"{official['parameters']:,} parameters" if official["parameters"] else None,
        f"torch counts {official['gflops']:.1f} GFLOPs" if official["gflops"] else None,
    ]
    print(f"  official PyTorch ({', '.join(d for d in details if d) or 'did not run'}):")
    _print_rows(official["rows"], baseline)
    ratios = compare_to_official(rows, official)
    if ratios:
        print("  ours / official (below 1: ours faster):")
    for comparison, ours, theirs, ratio in ratios:
        print(
            f"    {comparison:<22} {ours['path']} {ours['seconds'] * 1000:.0f} ms / "
            f"{theirs['path']} {theirs['seconds'] * 1000:.0f} ms = {ratio:.2f}x",
            flush=True,
        )


def full_table(
    names=DEFAULT_MODELS,
    image_size=640,
    repeats=10,
    matmul_size=4096,
    official_dir=None,
    official_threads=None,
):
    """Measures every path of each preset, and the matmul peaks just before; prints and returns them.

    With ``official_dir`` (and torch installed), each preset's official rows
    follow ours (`official_rows`); otherwise one line says why there are none.
    """
    from yolor_keras.tasks import YOLORObjectDetector

    results = {"models": {}}
    unavailable = official_unavailable(official_dir)
    if unavailable:
        print(unavailable, flush=True)
    for name in names:
        detector = YOLORObjectDetector.from_preset(name, image_size=image_size)
        gflops = graph_gflops(detector, image_size)
        # Measured again right before each model: on a shared machine the
        # peak of a minute ago may not be the one this model's paths get.
        peaks = measure_peaks(matmul_size)
        print()
        print_peaks(peaks, matmul_size)
        rows = benchmark_paths(detector, image_size, peaks, repeats=repeats, gflops=gflops)
        official = None
        if not unavailable:
            official = official_rows(
                name, official_dir, image_size, peaks, gflops, repeats, official_threads
            )
        params = official_parameter_count(detector)
        print_path_rows(name, params, gflops, rows, official)
        results["models"][name] = {
            "params": params,
            "gflops": gflops,
            "peaks": peaks,
            "rows": rows,
            "official": official,
        }
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
    parser.add_argument(
        "--official",
        metavar="DIR",
        default=None,
        help="table: also time the official PyTorch model of each preset, from this checkout of "
        "the official YOLOR main branch (needs torch), and print ours / official.",
    )
    parser.add_argument(
        "--official-threads",
        type=int,
        default=None,
        help="torch threads of the official rows (default: the CPUs this process may use, "
        "as many as TensorFlow uses).",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.image_size < 1 or args.matmul_size < 1:
        parser.error("--repeats, --image-size and --matmul-size must be positive.")
    if args.official_threads is not None and args.official_threads < 1:
        parser.error("--official-threads must be positive.")
    if args.official is not None and args.what != "table":
        parser.error("--official adds rows to the table, not to `models`.")
    try:
        official_unavailable(args.official)
    except ValueError as error:
        parser.error(str(error))

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
        full_table(
            args.models,
            args.image_size,
            args.repeats,
            args.matmul_size,
            args.official,
            args.official_threads,
        )
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
