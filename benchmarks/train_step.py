"""Training-step cost: first step (trace + graph optimisation), step time, peak memory.

Builds the full-size task as `yolor train` does (`YOLORObjectDetector` with
the recipe's loss, compiled with `build_optimizer`'s `YOLORSGD`: Nesterov
SGD, EMA of weights and BatchNorm statistics, the official accumulation
ramp), feeds synthetic images and boxes, and times `train_on_batch`:

* ``first_step_s``: the first call, which traces the train step, lets
  TensorFlow optimise the graph (or XLA compile it) and runs it once;
* ``step_median_s``: the median of the next ``--steps`` calls;
* ``peak_rss_gb``: the process's peak resident memory (``ru_maxrss``).

Each configuration (``jit_compile`` off / on) runs in its own child
process, so that neither the peak memory nor TensorFlow's caches of one
leak into the other. ``--profile`` adds a breakdown of the first step into
Python tracing, graph optimisation and the first run, and counts how often
the train step is traced. ``--official DIR`` also times the official
PyTorch code (a checkout of WongKinYiu/yolor, outside this repository) on
the same input in a child process, for the ratio.

The machine is usually shared: compare the numbers of one run with each
other, not with another run's.

``--batchnorm fused,keras`` runs each configuration with the
BatchNormalization layers on TensorFlow's fused training op and on Keras'
own ops (the same model and weights), ``--policy float32,mixed_bfloat16``
under each dtype policy. ``--agreement N`` instead trains N steps on the
synthetic set under each ``--policy`` from the same weights and batches and
compares the loss curves.

Usage:
    python benchmarks/train_step.py [--preset yolor_p6] [--image-size 640] [--batch-size 4]
        [--steps 3] [--jit off,on] [--batchnorm fused,keras] [--policy float32,mixed_bfloat16]
        [--profile] [--official /tmp/yolor] [--json out.json]
    python benchmarks/train_step.py --agreement 300 --policy float32,mixed_bfloat16
        --width 0.125 --depth 0.33 --image-size 128 --batch-size 8
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_CFG = {
    "yolor_p6": "main/yolor_p6.cfg",
    "yolor_csp": "main/yolor_csp.cfg",
    "yolor_w6": "main/yolor_w6.cfg",
    "yolor_csp_x": "main/yolor_csp_x.cfg",
}


def peak_rss_gb():
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2


def note(message):
    # Progress on stderr, so that a slow phase can be watched while it runs.
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synthetic_batch(batch_size, image_size, num_classes, max_boxes, boxes_per_image, seed=0):
    """Random images and ``boxes_per_image`` random boxes per image, padded to ``max_boxes``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (batch_size, image_size, image_size, 3)).astype("float32")
    boxes = np.zeros((batch_size, max_boxes, 4), "float32")
    classes = np.full((batch_size, max_boxes), -1, "int32")
    count = min(boxes_per_image, max_boxes)
    centre = rng.uniform(0.1, 0.9, (batch_size, count, 2)) * image_size
    size = np.exp(rng.uniform(np.log(8.0), np.log(image_size * 0.6), (batch_size, count, 2)))
    boxes[:, :count, :2] = np.clip(centre - size / 2, 0, image_size)
    boxes[:, :count, 2:] = np.clip(centre + size / 2, 0, image_size)
    classes[:, :count] = rng.integers(0, num_classes, (batch_size, count))
    return images, {"boxes": boxes, "classes": classes}


def build_task(args, jit_compile):
    """The task and optimizer as `yolor train` builds them, with the recipe's loss values."""
    import dataclasses

    from yolor_keras.tasks import YOLORObjectDetector
    from yolor_keras.training import build_optimizer
    from yolor_keras.training.recipe import load_recipe

    recipe = load_recipe(os.path.join(REPO, "recipes", args.recipe))
    scaling = {}
    if args.width is not None:
        scaling["width_multiplier"] = args.width
    if args.depth is not None:
        scaling["depth_multiplier"] = args.depth
    task = YOLORObjectDetector.from_preset(
        args.preset, num_classes=args.num_classes, image_size=args.image_size, **scaling
    )
    nominal = 64
    accumulate = max(round(nominal / args.batch_size), 1)
    optimizer = build_optimizer(
        dataclasses.asdict(recipe.optimizer),
        steps_per_epoch=1000,
        epochs=300,
        batch_size=args.batch_size,
        nominal_batch_size=nominal,
    )
    loss = recipe.loss
    task.compile(
        optimizer=optimizer,
        box_gain=loss.box,
        obj_gain=loss.obj,
        cls_gain=loss.cls,
        anchor_t=loss.anchor_t,
        cls_pos_weight=loss.cls_pw,
        obj_pos_weight=loss.obj_pw,
        focal_gamma=loss.fl_gamma,
        # The trainer's scale: the official loss times the nominal batch.
        loss_scale=args.batch_size * accumulate,
        jit_compile=jit_compile,
    )
    return task


def use_fused_batchnorm(model, fused):
    """Switches the fused training path of every BatchNormalization; returns their count."""
    from yolor_keras.layers import BatchNormalization

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, BatchNormalization):
            layer.fused = fused
            count += 1
    return count


def run_keras(args):
    """One configuration, in this process; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    jit, batchnorm, policy = args.child.split(":")
    jit = jit == "on"
    started = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    result = {
        "kind": "keras",
        "jit_compile": jit,
        "batchnorm": batchnorm,
        "policy": policy,
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }
    result["import_s"] = time.perf_counter() - started
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)

    if args.grappler:
        # e.g. "layout_optimizer=False,remapping=False": which graph passes
        # cost the first step its time.
        options = {}
        for item in args.grappler.split(","):
            key, value = item.split("=")
            options[key.strip()] = value.strip().lower() in ("1", "true", "on")
        tf.config.optimizer.set_experimental_options(options)
        result["grappler"] = options

    tick = time.perf_counter()
    task = build_task(args, jit)
    result["batchnorm_layers"] = use_fused_batchnorm(task, batchnorm == "fused")
    result["build_s"] = time.perf_counter() - tick
    note(f"built in {result['build_s']:.1f} s")
    result["parameters"] = int(task.count_params())
    images, targets = synthetic_batch(
        args.batch_size, args.image_size, args.num_classes, args.max_boxes, args.boxes
    )
    result["rss_after_build_gb"] = peak_rss_gb()

    # `compile` has built the optimizer (its eager variable creation is in
    # build_s): variables created inside the first trace would make
    # TensorFlow trace the step twice.
    assert task.optimizer.built

    # The train step's Python body runs once per trace: counting its calls
    # counts traces (a retrace on a later step would show here).
    traces = []
    train_step = task.train_step

    def counted_train_step(data):
        traces.append(time.perf_counter())
        return train_step(data)

    task.train_step = counted_train_step

    if args.profile:
        # Python tracing alone: the same step traced into a graph that is
        # never run (no grappler, no XLA).
        images_t = tf.convert_to_tensor(images)
        targets_t = {k: tf.convert_to_tensor(v) for k, v in targets.items()}
        tick = time.perf_counter()
        cpu = time.process_time()
        concrete = tf.function(train_step).get_concrete_function((images_t, targets_t, None))
        result["python_trace_s"] = time.perf_counter() - tick
        result["python_trace_cpu_s"] = time.process_time() - cpu
        note(f"traced in {result['python_trace_s']:.1f} s")
        graph = concrete.graph.as_graph_def()
        # Conditionals keep their branches as library functions: count those too.
        result["graph_nodes"] = len(graph.node) + sum(
            len(function.node_def) for function in graph.library.function
        )
        result["graph_functions"] = len(graph.library.function)
        del concrete, graph

    durations, cpu_times = [], []
    for step in range(args.steps + 1):
        tick, cpu = time.perf_counter(), time.process_time()
        logs = task.train_on_batch(images, targets, return_dict=True)
        durations.append(time.perf_counter() - tick)
        cpu_times.append(time.process_time() - cpu)
        note(f"step {step}: {durations[-1]:.2f} s ({cpu_times[-1]:.2f} s CPU)")
        if step == 0:
            result["rss_after_first_step_gb"] = peak_rss_gb()
            result["first_trace_s"] = traces[0] - tick if traces else None
    result["first_step_s"] = durations[0]
    result["steps_s"] = durations[1:]
    result["step_median_s"] = statistics.median(durations[1:]) if durations[1:] else None
    # CPU seconds of the whole process (all threads): less sensitive than
    # wall time to other work on a shared machine.
    result["first_step_cpu_s"] = cpu_times[0]
    result["step_median_cpu_s"] = statistics.median(cpu_times[1:]) if cpu_times[1:] else None
    result["traces"] = len(traces)
    result["loss"] = float(np.asarray(logs["loss"]))
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def run_agreement(args):
    """``--agreement N``: N training steps on the synthetic set under one policy.

    Runs in its own process per policy (``--child agree:POLICY``): the same
    seed, the same initial weights and the same batches (synthetic shapes,
    letterboxed without augmentation, in a fixed order), so the loss curves
    of float32 and mixed_bfloat16 differ only by the precision. Prints one
    JSON line with every step's loss and the median step time.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tempfile

    import keras
    import numpy as np

    from yolor_keras.data.pipeline import build_dataset
    from yolor_keras.data.synthetic import generate_dataset

    policy = args.child.split(":", 1)[1]
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, num_train=64, num_val=4, image_size=args.image_size, seed=0)
        dataset, _ = build_dataset(
            folder,
            split="train",
            image_size=args.image_size,
            batch_size=args.batch_size,
            training=True,
            augment=False,
            shuffle=False,
            verbose=False,
        )
        batches = [
            (
                np.asarray(images),
                {k: np.asarray(targets[k]) for k in ("boxes", "classes")},
            )
            for images, targets in dataset.take(64 // args.batch_size)
        ]
    task = build_task(args, False)
    losses, durations = [], []
    for step in range(args.agreement):
        images, targets = batches[step % len(batches)]
        tick = time.perf_counter()
        logs = task.train_on_batch(images, targets, return_dict=True)
        durations.append(time.perf_counter() - tick)
        losses.append(float(np.asarray(logs["loss"])))
    print(
        "RESULT "
        + json.dumps(
            {
                "kind": "agreement",
                "policy": policy,
                "losses": losses,
                "first_step_s": durations[0],
                "step_median_s": statistics.median(durations[1:]),
            }
        ),
        flush=True,
    )


def report_agreement(results):
    """The loss curves of each policy against the first (float32) one."""
    import numpy as np

    reference = np.asarray(results[0]["losses"])
    steps = len(reference)
    print(f"\n{steps} steps on the synthetic set, load average {os.getloadavg()[0]:.1f}")
    print(
        "| policy | step median | loss, first 10 steps | loss, last 50 | max rel. diff | "
        "mean rel. diff, last 50 |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        losses = np.asarray(r["losses"])
        relative = np.abs(losses - reference) / np.abs(reference)
        print(
            f"| {r['policy']} | {r['step_median_s']:.3f} s | {losses[:10].mean():.4f} | "
            f"{losses[-50:].mean():.4f} | {relative.max():.3%} | {relative[-50:].mean():.3%} |"
        )


def run_official(args):
    """The official forward + loss + backward + SGD step on the same batch; prints one JSON line."""
    started = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.official)
    import types

    if not hasattr(np, "int"):
        np.int = int  # the official code predates NumPy 1.24
    # Modules the official code imports but a training step never calls
    # (OpenCV, plotting, torchvision) get empty stand-ins when absent.
    for name in ("cv2", "matplotlib", "matplotlib.pyplot", "torchvision", "torchvision.ops"):
        try:
            __import__(name)
        except ImportError:
            stand_in = types.ModuleType(name)

            def anything(attribute):
                if attribute.startswith("__"):
                    raise AttributeError(attribute)
                return lambda *args, **kwargs: None

            stand_in.__getattr__ = anything
            sys.modules[name] = stand_in
    from models.models import Darknet
    from utils.loss import compute_loss

    # The official `build_targets` clamps integer cell indices with float
    # tensor bounds, which torch 2.x refuses; the bounds are whole numbers.
    clamp_ = torch.Tensor.clamp_

    def integer_safe_clamp_(tensor, min=None, max=None):  # noqa: A002 (torch's names)
        if not tensor.is_floating_point():
            min = int(min) if isinstance(min, torch.Tensor) else min
            max = int(max) if isinstance(max, torch.Tensor) else max
        return clamp_(tensor, min, max)

    torch.Tensor.clamp_ = integer_safe_clamp_

    result = {"kind": "official", "threads": torch.get_num_threads()}
    result["import_s"] = time.perf_counter() - started
    torch.manual_seed(0)
    cfg = os.path.join(args.reference, OFFICIAL_CFG[args.preset])
    model = Darknet(cfg).train()
    hyp = {
        "box": 0.05,
        "cls": 0.5,
        "cls_pw": 1.0,
        "obj": 1.0,
        "obj_pw": 1.0,
        "anchor_t": 4.0,
        "fl_gamma": 0.0,
        "iou_t": 0.2,
    }
    hyp["cls"] *= args.num_classes / 80.0
    model.nc, model.hyp, model.gr = args.num_classes, hyp, 1.0
    # The official three parameter groups (decay on conv kernels only).
    decay, no_decay, biases = [], [], []
    for name, parameter in model.named_parameters():
        if name.endswith(".bias"):
            biases.append(parameter)
        elif name.endswith(".weight") and parameter.dim() > 1:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    optimizer = torch.optim.SGD(no_decay, lr=0.01, momentum=0.937, nesterov=True)
    optimizer.add_param_group({"params": decay, "weight_decay": 5e-4})
    optimizer.add_param_group({"params": biases})

    images, targets = synthetic_batch(
        args.batch_size, args.image_size, args.num_classes, args.max_boxes, args.boxes
    )
    rows = []
    for b in range(args.batch_size):
        for box, cls in zip(targets["boxes"][b], targets["classes"][b]):
            if cls < 0:
                continue
            x1, y1, x2, y2 = box / args.image_size
            rows.append([b, cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    images_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    targets_t = torch.tensor(rows, dtype=torch.float32)

    durations = []
    for _ in range(args.steps + 1):
        tick = time.perf_counter()
        pred = model(images_t)
        loss, _ = compute_loss(pred, targets_t, model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        durations.append(time.perf_counter() - tick)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    result["first_step_s"] = durations[0]
    result["steps_s"] = durations[1:]
    result["step_median_s"] = statistics.median(durations[1:]) if durations[1:] else None
    result["loss"] = float(loss)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def child(args, mode, extra_env=None):
    """Runs one configuration in a fresh process and returns its result dict."""
    command = [sys.executable, os.path.abspath(__file__), "--child", mode] + args.passthrough
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if mode == "official":
        env["OMP_NUM_THREADS"] = str(args.threads)
    env.update(extra_env or {})
    process = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (process.stderr or process.stdout)[-3000:]
    raise RuntimeError(f"configuration {mode!r} failed (exit {process.returncode}):\n{tail}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="yolor_p6")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument(
        "--width", type=float, default=None, help="width multiplier (smaller models)"
    )
    parser.add_argument("--depth", type=float, default=None, help="depth multiplier")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument(
        "--max-boxes", type=int, default=300, help="label padding (the pipeline's 300)"
    )
    parser.add_argument("--boxes", type=int, default=20, help="real boxes per image")
    parser.add_argument("--recipe", default="scratch_1280.yaml")
    parser.add_argument(
        "--jit", default="off,on", help="comma list of jit_compile settings: off, on"
    )
    parser.add_argument(
        "--batchnorm",
        default="fused",
        help="comma list of BatchNormalization training paths: fused (TensorFlow's fused op), "
        "keras (Keras' own ops)",
    )
    parser.add_argument(
        "--policy",
        default="float32",
        help="comma list of Keras dtype policies, e.g. float32,mixed_bfloat16",
    )
    parser.add_argument(
        "--agreement",
        type=int,
        default=0,
        help="instead: train this many steps on the synthetic set under each --policy "
        "and compare the loss curves (e.g. --agreement 300 --policy float32,mixed_bfloat16 "
        "--width 0.125 --depth 0.33 --image-size 128 --batch-size 8)",
    )
    parser.add_argument("--grappler", default=None, help="tf.config.optimizer options, k=v,...")
    parser.add_argument(
        "--profile", action="store_true", help="time Python tracing apart and count nodes"
    )
    parser.add_argument("--official", default=None, help="a checkout of WongKinYiu/yolor (main)")
    parser.add_argument(
        "--reference", default="/work/shared/reference", help="folder of the official cfgs"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the official step")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # What a child needs to rebuild the same configuration.
    raw = list(sys.argv[1:] if argv is None else argv)
    passthrough, skip = [], False
    for _index, item in enumerate(raw):
        if skip:
            skip = False
            continue
        if item in ("--jit", "--json", "--child", "--batchnorm", "--policy"):
            skip = True
            continue
        if item.startswith(("--jit=", "--json=", "--child=", "--batchnorm=", "--policy=")):
            continue
        passthrough.append(item)
    args.passthrough = passthrough
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child == "official":
        return run_official(args)
    if args.child is not None and args.child.startswith("agree:"):
        return run_agreement(args)
    if args.child is not None:
        return run_keras(args)
    if args.agreement:
        policies = [m.strip() for m in args.policy.split(",") if m.strip()]
        results = [child(args, f"agree:{policy}") for policy in policies]
        report_agreement(results)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as file:
                json.dump({"args": vars(args), "results": results}, file, indent=2)
        return
    results = []
    batchnorms = [m.strip() for m in args.batchnorm.split(",") if m.strip()]
    policies = [m.strip() for m in args.policy.split(",") if m.strip()]
    for mode in [m.strip() for m in args.jit.split(",") if m.strip()]:
        if mode not in ("off", "on"):
            raise SystemExit(f"--jit takes off and/or on, got {mode!r}")
        for batchnorm in batchnorms:
            if batchnorm not in ("fused", "keras"):
                raise SystemExit(f"--batchnorm takes fused and/or keras, got {batchnorm!r}")
            for policy in policies:
                results.append(child(args, f"{mode}:{batchnorm}:{policy}"))
                print(json.dumps(results[-1]), flush=True)
    if args.official:
        results.append(child(args, "official"))
        print(json.dumps(results[-1]), flush=True)
    print()
    print(
        f"{args.preset} @{args.image_size}, batch {args.batch_size}, {args.steps} timed steps, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| configuration | first step (CPU) | step median (CPU) | peak RSS | loss |")
    print("|---|---|---|---|---|")
    official = next((r for r in results if r["kind"] == "official"), None)
    for r in results:
        if r["kind"] == "official":
            name = "official PyTorch"
        else:
            name = ", ".join(
                ["Keras"]
                + (["XLA"] if r["jit_compile"] else [])
                + [f"{r['batchnorm']} BN"]
                + ([r["policy"]] if r["policy"] != "float32" else [])
            )
        ratio = ""
        if official and r is not official and official["step_median_s"]:
            ratio = f" ({r['step_median_s'] / official['step_median_s']:.2f}x official)"
        cpu_first = f" ({r['first_step_cpu_s']:.1f} s)" if "first_step_cpu_s" in r else ""
        cpu_step = f" ({r['step_median_cpu_s']:.2f} s)" if r.get("step_median_cpu_s") else ""
        print(
            f"| {name} | {r['first_step_s']:.1f} s{cpu_first} | "
            f"{r['step_median_s']:.2f} s{cpu_step}{ratio} | {r['peak_rss_gb']:.2f} GB | "
            f"{r['loss']:.6g} |"
        )
    if args.json:
        from yolor_keras.atomic import write_file_atomically

        def write(path):
            with open(path, "w", encoding="utf-8") as file:
                json.dump({"args": vars(args), "results": results}, file, indent=2)

        write_file_atomically(args.json, write)


if __name__ == "__main__":
    main()
