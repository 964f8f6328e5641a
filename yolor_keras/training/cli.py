"""`yolor train`: train a YOLOR detector by a recipe."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a detector with model.fit",
        description="Train a YOLOR detector with model.fit by a recipe (recipes/*.yaml).",
    )
    parser.add_argument("--data", required=True, help="dataset: COCO folder/JSON, YOLO folder/YAML or tfds:NAME")
    parser.add_argument("--recipe", help="recipe YAML (default: the official hyp.scratch.1280)")
    parser.add_argument("--model", help="preset name (default: the recipe's train.model)")
    parser.add_argument("--out", default="runs/train", help="run directory (checkpoints, results.csv, model.keras)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--val-data", help="validation dataset (default: --data, split 'val')")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--depth-multiplier", type=float, default=1.0)
    parser.add_argument("--weights", help="a .keras detector to start from (e.g. converted official weights)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.keras")
    parser.add_argument(
        "--strategy", default="auto", choices=["auto", "mirrored", "multi_worker", "default"],
        help="tf.distribute strategy (auto: MirroredStrategy when several GPUs are visible)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not cache decoded images in memory")
    parser.add_argument("--steps-per-epoch", type=int, help="cap batches per epoch (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args):
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
        strategy=args.strategy,
        cache=not args.no_cache,
        seed=args.seed,
        steps_per_epoch=args.steps_per_epoch,
    )
    if result.metrics:
        print(f"mAP@.5:.95 {result.metrics['mAP']:.4f}  mAP@.5 {result.metrics['mAP50']:.4f}")
    print(f"Saved the EMA model to {result.model_path}")
    return 0
