"""`yolor evaluate`: COCO mAP of a model by the official protocol."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="COCO mAP@[.5:.95] and mAP@.5 of a model",
        description=(
            "Evaluate a .keras detector by the official YOLOR protocol: letterbox, "
            "conf 0.001, IoU 0.65, 300 detections, multi-label NMS, boxes mapped back "
            "to original pixels, scored with faster-coco-eval."
        ),
    )
    parser.add_argument("--model", required=True, help="a .keras detector (converted or trained)")
    parser.add_argument("--data", required=True, help="dataset: COCO folder/JSON, YOLO folder/YAML or tfds:NAME")
    parser.add_argument("--split", default="val")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    return parser


def run(args):
    import json

    import keras

    import yolor_keras  # noqa: F401  (registers the custom layers)
    from yolor_keras.data import build_dataset
    from yolor_keras.evaluation.evaluate_detector import evaluate_detector
    from yolor_keras.evaluation.protocol import COCO_STAT_NAMES

    model = keras.saving.load_model(args.model, compile=False)
    dataset, info = build_dataset(
        args.data, split=args.split, image_size=args.image_size,
        batch_size=args.batch_size, training=False,
    )
    metrics = evaluate_detector(model, dataset, info)
    for name in COCO_STAT_NAMES:
        print(f"{name:>6}: {metrics[name]:.4f}")
    print(f"mAP@.5:.95 {metrics['mAP']:.4f}  mAP@.5 {metrics['mAP50']:.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
    return 0
