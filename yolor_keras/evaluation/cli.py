"""`yolor evaluate`: COCO mAP of a model by the official protocol."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="COCO mAP@[.5:.95] and mAP@.5 of a model",
        description=(
            "Evaluate a .keras detector as the official YOLOR test.py does: rect "
            "batches (images sorted by aspect ratio, canvases of long side S plus half "
            "a stride, rounded up to the largest stride), conf 0.001, IoU 0.65, 300 "
            "detections, multi-label NMS, boxes mapped back to original pixels, scored "
            "against the dataset's own COCO annotation file (crowd regions ignored, "
            "annotated areas) with faster-coco-eval."
        ),
    )
    parser.add_argument("--model", required=True, help="a .keras detector (converted or trained)")
    parser.add_argument(
        "--data", required=True, help="dataset: COCO folder/JSON, YOLO folder/YAML or tfds:NAME"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="S, the long side of each image (default: 1280 for the P6 family, "
        "640 for the CSP family, as in the official results)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--protocol",
        choices=("official", "square"),
        default="official",
        help="official: rect batches with half-stride padding, as the official "
        "test.py (default); square: every image letterboxed into S x S",
    )
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    parser.add_argument(
        "--save-results", help="also write the detections to this COCO results JSON file"
    )
    return parser


def run(args):
    import json

    import keras

    import yolor_keras  # noqa: F401  (registers the custom layers)
    from yolor_keras.atomic import write_file_atomically
    from yolor_keras.data import load_source
    from yolor_keras.evaluation.evaluation_loop import evaluate
    from yolor_keras.evaluation.evaluation_loop import evaluation_batches
    from yolor_keras.evaluation.protocol import COCO_STAT_NAMES

    model = keras.saving.load_model(args.model, compile=False)
    source = load_source(args.data, split=args.split)
    dataset, info = evaluation_batches(
        source,
        model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        protocol=args.protocol,
    )
    print(
        f"Evaluating {info.num_samples} images at {info.image_size} px "
        f"({args.protocol} protocol, {info.num_batches} batches)."
    )
    metrics = evaluate(model, dataset, info, results_path=args.save_results)
    for name in COCO_STAT_NAMES:
        print(f"{name:>6}: {metrics[name]:.4f}")
    print(f"mAP@.5:.95 {metrics['mAP']:.4f}  mAP@.5 {metrics['mAP50']:.4f}")
    if args.json:

        def write(path):
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(metrics, handle, indent=2)

        write_file_atomically(args.json, write)
    return 0
