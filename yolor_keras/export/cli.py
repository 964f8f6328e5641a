"""`yolor export`: SavedModel for TF Serving, TFLite or ONNX, from a saved task.

--model is a `.keras` file or a preset folder (`task.save_to_preset`) of a
YOLORObjectDetector with any heads; every format runs the task's one
inference path (`task.detect`) on its folded (deploy) copy and returns every
head's outputs. The NMS settings are the task's own unless --conf, --iou,
--max-det or --multi-label are given.

- ``--format saved_model`` writes ``OUT/NAME/VERSION/`` (TF Serving's
  layout; OUT defaults to ``saved_models``) with encoded-image and pixel
  signatures, NMS and mapping back to image pixels inside.
- ``--format tflite`` writes a ``.tflite`` file (``--quantize none|fp16|int8``;
  int8 calibrates on ``--calibration`` images), NMS inside unless ``--no-nms``.
- ``--format onnx`` writes a ``.onnx`` file with decoded predictions, or
  detections with ``--nms``.

Each export is written beside its destination under a hidden name, loaded
and run once (no NaN, weights present), and only then renamed into place:
a failed export leaves the previous file or version folder untouched.
"""

import argparse
import os
import sys

FORMATS = ("saved_model", "tflite", "onnx")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="Export a task for serving (SavedModel, TFLite, ONNX).",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument(
        "--model", required=True, help="A .keras task file, or a preset folder (save_to_preset)."
    )
    parser.add_argument(
        "--out",
        default=None,
        help="saved_model: the model root folder (default saved_models); tflite/onnx: "
        "the output file (default: next to --model).",
    )
    parser.add_argument(
        "--name", default=None, help="saved_model: model name (default: file stem)."
    )
    parser.add_argument("--version", default="1", help="saved_model: version number (default 1).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing export.")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Square input side, a multiple of the largest stride (default: the task's "
        "preprocessor, else its fixed image size, else 640).",
    )
    parser.add_argument("--conf", type=float, default=None, help="Score threshold (the task's).")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (the task's).")
    parser.add_argument(
        "--max-det", type=int, default=None, help="Detections per image (the task's)."
    )
    parser.add_argument(
        "--multi-label",
        action="store_true",
        default=None,
        help="Keep every class above --conf (default: the task's setting).",
    )
    parser.add_argument("--names", default=None, help="saved_model: class names file to store.")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="saved_model: compute precision of the network (bf16: convolutions in bfloat16, "
        "fast on AMX/AVX512-BF16 CPUs; inputs, outputs, decode and NMS stay float32).",
    )
    parser.add_argument(
        "--quantize", default="none", choices=("none", "fp16", "int8"), help="tflite: weight type."
    )
    parser.add_argument("--calibration", default=None, help="tflite int8: folder of images.")
    parser.add_argument(
        "--calibration-limit", type=int, default=200, help="tflite int8: images used (200)."
    )
    nms = parser.add_mutually_exclusive_group()
    nms.add_argument(
        "--nms", dest="nms", action="store_true", default=None, help="NMS in the graph."
    )
    nms.add_argument("--no-nms", dest="nms", action="store_false", help="No NMS in the graph.")
    return parser


def run(args):
    # Imported here: it loads TensorFlow, which `yolor --help` must not wait for.
    from yolor_keras.export.checks import ExportCheckError

    try:
        return _export(args)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"yolor export: {error}", file=sys.stderr)
        return 2
    except ExportCheckError as error:
        # The export was written aside and refused; the destination is as it was.
        print(f"yolor export: {error} Nothing was replaced.", file=sys.stderr)
        return 1


def _default_file(model_path, suffix):
    stem = os.path.splitext(os.path.normpath(model_path))[0]
    return stem + suffix


def load_task(path):
    """A task from a `.keras` file or a preset folder, with clear errors."""
    if os.path.isdir(path):
        from yolor_keras.tasks import YOLORObjectDetector

        return YOLORObjectDetector.from_preset(path)
    from yolor_keras.inference.predictor import load_detector

    return load_detector(path)


def _export(args):
    from yolor_keras.inference.predictor import read_class_names

    if args.format != "tflite" and (args.quantize != "none" or args.calibration):
        raise ValueError("--quantize and --calibration apply to --format tflite only.")
    if args.format != "saved_model" and args.precision != "fp32":
        raise ValueError("--precision bf16 applies to --format saved_model only.")
    if args.format == "saved_model" and args.nms is False:
        raise ValueError("A SavedModel always includes NMS; --no-nms applies to tflite.")
    model = load_task(args.model)
    image_size = args.image_size
    nms_settings = dict(
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        multi_label=args.multi_label,
    )

    if args.format == "saved_model":
        from yolor_keras.export.saved_model import export_saved_model
        from yolor_keras.export.saved_model import serving_directory

        name = args.name or os.path.splitext(os.path.basename(os.path.normpath(args.model)))[0]
        export_dir = serving_directory(args.out or "saved_models", name, args.version)
        export_saved_model(
            model,
            export_dir,
            image_size=image_size,
            class_names=read_class_names(args.names) if args.names else None,
            overwrite=args.overwrite,
            precision=args.precision,
            **nms_settings,
        )
        print(
            f"SavedModel written to {export_dir} (signatures serving_default, predict_images; "
            f"heads {', '.join(model.head_names)}; {args.precision})."
        )
        return 0

    if args.format == "tflite":
        from yolor_keras.export.litert import export_tflite

        if args.quantize == "int8" and not args.calibration:
            raise ValueError("--quantize int8 needs --calibration FOLDER of representative images.")
        suffix = "" if args.quantize == "none" else f"_{args.quantize}"
        path = args.out or _default_file(args.model, f"{suffix}.tflite")
        _refuse_existing(path, args.overwrite)
        export_tflite(
            model,
            path,
            image_size=image_size,
            quantize=args.quantize,
            representative_images=args.calibration,
            calibration_limit=args.calibration_limit,
            nms=True if args.nms is None else args.nms,
            **nms_settings,
        )
    else:
        from yolor_keras.export.onnx import export_onnx

        path = args.out or _default_file(args.model, ".onnx")
        _refuse_existing(path, args.overwrite)
        export_onnx(model, path, image_size=image_size, nms=bool(args.nms), **nms_settings)
    print(f"{args.format} file written to {path} ({os.path.getsize(path) / 1e6:.1f} MB).")
    return 0


def _refuse_existing(path, overwrite):
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
