"""Implicit-knowledge ablation: tiny YOLOR models on the synthetic shapes data.

Every setting trains the same tiny network (``recipes/multi_task_synthetic.yaml``:
YOLOR-P6 backbone and neck at width 0.125 and depth 0.33, 128 px) with the
same data, epochs, optimizer and seeds; only the heads and their implicit
knowledge change:

(a) detection without implicit knowledge;
(b) detection with implicit vectors (YOLOR's default);
(c) detection with implicit knowledge through a network (z = W z0) and
    through a matrix factorization (z = Z^T c);
(d) the multi-task model (detection, multi-label classification and
    identity embedding, each head with its own implicit vectors) against
    the single-task models of each head.

Each model is scored on the validation split: COCO mAP@.5 (and
mAP@.5:.95) with `COCOEvaluator`, multi-label mAP and micro F1, embedding
recall@1; with its parameter count in training form (implicit parameters
included) and deploy form (implicit knowledge and BatchNorm folded), and
the batch-1 latency of the deploy network (a compiled `tf.function`, raw
outputs, median of repeated runs). The markdown table goes to stdout and
to ``benchmarks/results/implicit_ablation.md``; the rows are kept in
``implicit_ablation.json`` beside it, so that rerunning some settings with
the same budget updates their rows and keeps the others.

Usage::

    python benchmarks/implicit_ablation.py [--epochs 12] [--data /tmp/yolor_keras_shapes]
        [--settings det_none det_vector ...] [--out benchmarks/results/implicit_ablation.md]

The default budget is about 3-5 minutes per setting on 2 CPU cores.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "multi_task_synthetic.yaml"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "implicit_ablation.md"

ALL_HEADS = ("detection", "classification", "embedding")
# name -> (group, heads mapping with each head's implicit setting)
SETTINGS = {
    "det_none": ("(a)", {"detection": "none"}),
    "det_vector": ("(b)", {"detection": "vector"}),
    "det_network": ("(c)", {"detection": "network"}),
    "det_factorization": ("(c)", {"detection": "factorization"}),
    "cls_vector": ("(d) single", {"classification": "vector"}),
    "emb_vector": ("(d) single", {"embedding": "vector"}),
    "multi_vector": ("(d) multi", {head: "vector" for head in ALL_HEADS}),
    "multi_none": ("(d) multi", {head: "none" for head in ALL_HEADS}),
}
DEFAULT_SETTINGS = (
    "det_none",
    "det_vector",
    "det_network",
    "det_factorization",
    "cls_vector",
    "emb_vector",
    "multi_vector",
)
LATENCY_REPEATS = 30


def batch1_latency(model, image_size):
    """Median seconds of one compiled call on a (1, S, S, 3) batch."""
    import tensorflow as tf

    run = tf.function(lambda images: model(images, training=False))
    images = tf.random.uniform((1, image_size, image_size, 3), seed=0)
    for _ in range(3):  # trace, then warm up
        run(images)
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        outputs = run(images)
        tf.nest.map_structure(lambda tensor: tensor.numpy(), outputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def setting_recipe(recipe, heads):
    """The recipe with only ``heads``, each keeping its settings but taking the given form."""
    chosen = {}
    for head, form in heads.items():
        settings = dataclasses.asdict(recipe.model.heads[head])
        settings["implicit"] = form
        chosen[head] = settings
    return recipe.with_heads(chosen)


def run_setting(name, recipe, data_dir, epochs, verbose):
    import keras

    from yolor_keras.export import fold
    from yolor_keras.training.trainer import train

    group, heads = SETTINGS[name]
    keras.utils.clear_session()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(
            data_dir, run_dir, recipe=setting_recipe(recipe, heads), epochs=epochs, verbose=verbose
        )
    train_seconds = time.perf_counter() - start
    model = result.task
    history = result.history.history
    diverged = any(not np.isfinite(value) for value in history.get("loss", [np.nan]))
    deploy = fold(model)
    forms = {form or "none" for head in model.heads for form in head.implicit.values()}
    row = {
        "setting": name,
        "group": group,
        "heads": "+".join(model.head_names),
        "implicit": ", ".join(sorted(forms)),
        "params": model.count_params(),
        "deploy_params": deploy.count_params(),
        "latency_ms": 1000 * batch1_latency(deploy, recipe.train.image_size),
        "train_s": train_seconds,
        "final_loss": history["loss"][-1] if history.get("loss") else float("nan"),
        "diverged": diverged,
        **(result.metrics or {}),
    }
    return row


def _cell(row, key, digits=3):
    value = row.get(key)
    if value is None:
        return "–"
    if isinstance(value, float) and not np.isfinite(value):
        return "nan"
    return f"{value:.{digits}f}"


def markdown_table(rows, description):
    lines = [
        "| group | setting | heads | implicit | params (train) | params (deploy) | "
        "batch-1 latency (ms) | mAP@.5 | mAP@.5:.95 | label mAP | label F1 | recall@1 "
        "| train (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['group']} | {row['setting']}{' (diverged)' if row['diverged'] else ''} "
            f"| {row['heads']} | {row['implicit']} | {row['params']:,} | {row['deploy_params']:,} "
            f"| {row['latency_ms']:.1f} | {_cell(row, 'mAP50')} | {_cell(row, 'mAP')} "
            f"| {_cell(row, 'label_mAP')} | {_cell(row, 'label_F1')} | {_cell(row, 'recall@1')} "
            f"| {row['train_s']:.0f} |"
        )
    return "\n".join([description, "", *lines, ""])


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.training.recipe import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument(
        "--data",
        default=os.path.join(tempfile.gettempdir(), "yolor_keras_shapes"),
        help="synthetic dataset folder (written if missing)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument(
        "--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=sorted(SETTINGS)
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    args = parser.parse_args(argv)

    recipe = load_recipe(args.recipe)
    epochs = args.epochs or recipe.train.epochs
    if not os.path.isdir(args.data):
        generate_dataset(args.data, num_train=400, num_val=100, image_size=recipe.train.image_size)
    model = recipe.model
    weights = {head: settings.loss_weight for head, settings in model.heads.items()}
    description = (
        f"Implicit-knowledge ablation on the synthetic shapes data ({args.data}): "
        f"{recipe.train.model} at width {model.width_multiplier} and depth "
        f"{model.depth_multiplier}, {recipe.train.image_size} px, {epochs} epochs of batch "
        f"{recipe.train.batch_size} (YOLORSGD, lr0 {recipe.optimizer.lr0}); loss weights "
        f"{weights}. Scores with the EMA weights on the val split; latency of the folded "
        "network on this machine's CPU."
    )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = out.with_suffix(".json")
    rows = {}
    if store.is_file():
        saved = json.loads(store.read_text(encoding="utf-8"))
        if saved.get("description") == description:  # same budget: keep the other rows
            rows = {row["setting"]: row for row in saved["rows"]}
    for index, name in enumerate(args.settings, start=1):
        print(
            f"\n=== [{index}/{len(args.settings)}] {name}: heads {SETTINGS[name][1]} ===",
            flush=True,
        )
        rows[name] = run_setting(name, recipe, args.data, epochs, args.verbose)
        print(json.dumps(rows[name]), flush=True)
        ordered = [rows[key] for key in SETTINGS if key in rows]
        store.write_text(json.dumps({"description": description, "rows": ordered}, indent=1))

    table = markdown_table(ordered, description)
    print("\n" + table)
    out.write_text(table, encoding="utf-8")
    print(f"Wrote {out} and {store}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
