"""`yolor train`: train a YOLOR detector by a recipe."""


def _epoch_list(text):
    import argparse

    try:
        epochs = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epoch numbers, e.g. 298,424; got {text!r}"
        ) from None
    if any(epoch < 0 for epoch in epochs):
        raise argparse.ArgumentTypeError(f"epoch numbers must be >= 0, got {text!r}")
    return epochs


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a detector with model.fit",
        description="Train a YOLOR detector with model.fit by a recipe (recipes/*.yaml).",
    )
    parser.add_argument(
        "--data", required=True, help="dataset: COCO folder/JSON, YOLO folder/YAML or tfds:NAME"
    )
    parser.add_argument("--recipe", help="recipe YAML (default: the official hyp.scratch.1280)")
    parser.add_argument("--model", help="preset name (default: the recipe's train.model)")
    parser.add_argument(
        "--out",
        default="runs/train",
        help="run directory (checkpoints, results.csv, model.keras); a new run needs it empty",
    )
    parser.add_argument(
        "--epochs", type=int, help="total epochs, counted from epoch 0 also when continuing"
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--val-data", help="validation dataset (default: --data, split 'val')")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--depth-multiplier", type=float, default=1.0)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--weights", help="a .keras detector to start from (warmup, cosine and EMA start afresh)"
    )
    start.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    start.add_argument(
        "--continue-from",
        metavar="CHECKPOINT",
        help="continue another run's checkpoint folder (or run directory: its latest) in --out, "
        "carrying over the epoch counter, optimizer state and EMA update count, with the cosine "
        "re-based to --epochs (the official tune.py / train.py --weights last_298.pt)",
    )
    parser.add_argument(
        "--continue-weights",
        choices=["ema", "raw"],
        default="ema",
        help="with --continue-from: start from the checkpoint's EMA weights (official) or its raw weights",
    )
    parser.add_argument(
        "--stage",
        choices=["train", "tune"],
        default="train",
        help="train: 4-image mosaic (official train.py); tune: 9-image mosaic (official tune.py)",
    )
    parser.add_argument(
        "--save-epochs",
        type=_epoch_list,
        metavar="N,M",
        help="also keep the checkpoints of these 0-based epochs, e.g. 298,424 "
        "(checkpoints/epoch_298); the latest and previous checkpoints are always kept",
    )
    parser.add_argument(
        "--exist-ok",
        action="store_true",
        help="start a new run in a non-empty --out, replacing its checkpoints, results.csv and model.keras",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "mirrored", "multi_worker", "default"],
        help="tf.distribute strategy (auto: MirroredStrategy when several GPUs are visible)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        # None (not "memory"): argparse's exclusivity check ignores a value
        # equal to the default.
        default=None,
        metavar="memory|disk:FOLDER|none",
        help="where decoded images are kept between epochs: memory (default; refused with the "
        "bytes needed when it will not fit), disk:FOLDER (for datasets larger than RAM; reused by "
        "later runs), or none (decode every image every epoch)",
    )
    cache.add_argument("--no-cache", action="store_true", help="the same as --cache none")
    parser.add_argument("--steps-per-epoch", type=int, help="cap batches per epoch (quick runs)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights and the data"
    )
    return parser


def training_cache(args):
    """The `cache` argument of `train` from --cache / --no-cache."""
    if args.no_cache or args.cache == "none":
        return False
    if args.cache is None:
        return "memory"
    from yolor_keras.data.pipeline import parse_cache

    try:
        parse_cache(args.cache)
    except ValueError:
        raise ValueError(
            f"--cache {args.cache!r}: use memory, disk:FOLDER (a folder for decoded images) or none"
        ) from None
    return args.cache


def run(args):
    # A refused run directory or checkpoint (RunDirectoryError,
    # CheckpointError) is a ValueError: `yolor` prints it as one line.
    from yolor_keras.training.trainer import train

    result = train(
        data=args.data,
        out_dir=args.out,
        recipe=args.recipe,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        val_data=args.val_data,
        width_multiplier=args.width_multiplier,
        depth_multiplier=args.depth_multiplier,
        weights=args.weights,
        resume=args.resume,
        continue_from=args.continue_from,
        continue_weights=args.continue_weights,
        stage=args.stage,
        save_epochs=args.save_epochs,
        exist_ok=args.exist_ok,
        strategy=args.strategy,
        cache=training_cache(args),
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
    )
    if result.metrics:
        print(f"mAP@.5:.95 {result.metrics['mAP']:.4f}  mAP@.5 {result.metrics['mAP50']:.4f}")
    print(f"Saved the EMA model to {result.model_path}")
    return 0
