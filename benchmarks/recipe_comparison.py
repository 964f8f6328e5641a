"""Same seed, same budget: how a tree's training recipe scores on the synthetic set.

Trains the demo's tiny YOLOR-P6 (`yolor_keras.demo`: width 0.25, depth
0.33, the official recipe with lr0 0.02, a one-epoch warmup and mosaic 0.5)
for a fixed number of epochs on the synthetic shapes dataset, then scores
the saved model with the *current* tree's `evaluate` under both
protocols, so that two trees (say, before and after a change to the EMA,
the initialisation or the scoring) are compared on equal terms.

Usage (the `train` step runs with whichever package is first on the path,
so an older checkout can be put in front with PYTHONPATH):

    python benchmarks/recipe_comparison.py data --out runs/compare/data
    PYTHONPATH=/path/to/old/tree python benchmarks/recipe_comparison.py train \\
        --data runs/compare/data --out runs/compare/old --epochs 10
    python benchmarks/recipe_comparison.py train --data runs/compare/data \\
        --out runs/compare/new --epochs 10
    python benchmarks/recipe_comparison.py score --data runs/compare/data \\
        runs/compare/old runs/compare/new
"""

import argparse
import copy
import inspect
import json
import os
import time


def make_data(out):
    from yolor_keras.data.synthetic import generate_dataset
    from yolor_keras.demo import DEMO_DATA

    generate_dataset(out, **DEMO_DATA)


def train_run(data, out, epochs, seed):
    from yolor_keras.demo import DEMO_MODEL
    from yolor_keras.demo import DEMO_RECIPE
    from yolor_keras.training.recipe import recipe_from_dict
    from yolor_keras.training.trainer import train

    settings = copy.deepcopy(DEMO_RECIPE)
    settings["train"].update(epochs=epochs, eval_interval=epochs)
    recipe = recipe_from_dict(settings, source="benchmarks/recipe_comparison.py")
    options = dict(DEMO_MODEL, seed=seed, verbose=2)
    if "exist_ok" in inspect.signature(train).parameters:
        options["exist_ok"] = True
    start = time.perf_counter()
    result = train(data, out_dir=out, recipe=recipe, **options)
    minutes = (time.perf_counter() - start) / 60
    with open(os.path.join(out, "comparison_train.json"), "w", encoding="utf-8") as handle:
        json.dump({"model": result.model_path, "minutes": minutes, "epochs": epochs}, handle)
    print(f"{out}: {epochs} epochs in {minutes:.1f} min -> {result.model_path}")


def score_runs(data, runs):
    import keras

    from yolor_keras.data import load_source
    from yolor_keras.evaluation import evaluate
    from yolor_keras.evaluation import evaluation_batches

    source = load_source(data, split="val", verbose=False)
    print("| run | epochs | minutes | protocol | mAP@.5 | mAP@.5:.95 |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        with open(os.path.join(run, "comparison_train.json"), encoding="utf-8") as handle:
            trained = json.load(handle)
        model = keras.saving.load_model(trained["model"], compile=False)
        detector = getattr(model, "detector", model)
        for protocol in ("official", "square"):
            dataset, info = evaluation_batches(
                source, detector, image_size=256, batch_size=16, protocol=protocol, verbose=False
            )
            result = evaluate(detector, dataset, info, verbose=False)
            print(
                f"| {run} | {trained['epochs']} | {trained['minutes']:.1f} | {protocol} | "
                f"{result['mAP50']:.3f} | {result['mAP']:.3f} |",
                flush=True,
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    data = steps.add_parser("data")
    data.add_argument("--out", required=True)
    train = steps.add_parser("train")
    train.add_argument("--data", required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--seed", type=int, default=0)
    score = steps.add_parser("score")
    score.add_argument("--data", required=True)
    score.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    if args.step == "data":
        make_data(args.out)
    elif args.step == "train":
        train_run(args.data, args.out, args.epochs, args.seed)
    else:
        score_runs(args.data, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
