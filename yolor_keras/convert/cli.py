"""``yolor convert``: official PyTorch checkpoint -> ``.keras`` file (and preset folder)."""

import os
import sys


def _multiplier(text):
    return None if text == "auto" else float(text)


def add_parser(subparsers):
    """Adds the ``convert`` subcommand to the ``yolor`` command line."""
    from yolor_keras.models.yolor_presets import PRESETS

    parser = subparsers.add_parser(
        "convert",
        help="convert an official YOLOR checkpoint (.pt) to a .keras model",
        description=(
            "Convert an official YOLOR checkpoint of the main (darknet cfg) or paper (YAML) "
            "branch into a Keras .keras file. The official code is not needed, and nothing "
            "in the file runs: torch.load is never called, the zip archive is checked first "
            "(TorchScript archives, compressed or overlapping records and torch's legacy "
            "format are refused), data.pkl is read with a restricted unpickler, and tensors "
            "are converted from the raw records with NumPy. The .keras file is written to a "
            "temporary file, loaded back and checked, then renamed into place."
        ),
    )
    parser.add_argument("weights", help="the official checkpoint, e.g. yolor_p6.pt")
    parser.add_argument(
        "--model", required=True, choices=sorted(PRESETS), help="the model the checkpoint holds"
    )
    parser.add_argument(
        "--out", help="the .keras file to write (default: the checkpoint's name with .keras)"
    )
    parser.add_argument(
        "--preset",
        help=(
            "also write a preset folder there (config and weights), which "
            "YOLORObjectDetector.from_preset(folder) and YOLORBackbone.from_preset(folder) load"
        ),
    )
    parser.add_argument(
        "--num-classes",
        default="auto",
        help="number of classes the checkpoint predicts (default: auto, read from the file)",
    )
    parser.add_argument(
        "--width-multiplier",
        type=_multiplier,
        default=None,
        help="main branch: the model's width multiplier (default: auto, from the widest conv)",
    )
    parser.add_argument(
        "--depth-multiplier",
        type=_multiplier,
        default=None,
        help="main branch: the model's depth multiplier (default: 1)",
    )
    return parser


def run(args):
    """Runs ``yolor convert`` with parsed ``args``; returns the exit status."""
    from yolor_keras.convert.convert import convert_checkpoint

    out = args.out or os.path.splitext(args.weights)[0] + ".keras"
    try:
        num_classes = None if args.num_classes == "auto" else int(args.num_classes)
    except ValueError:
        print(
            f"yolor convert: error: --num-classes must be an integer or 'auto', got "
            f"{args.num_classes!r}.",
            file=sys.stderr,
        )
        return 2
    print(f"Converting {args.weights} as {args.model} ...", flush=True)
    try:
        model = convert_checkpoint(
            args.weights,
            args.model,
            out_path=out,
            num_classes=num_classes,
            width_multiplier=args.width_multiplier,
            depth_multiplier=args.depth_multiplier,
        )
    except ImportError as error:
        # A missing optional dependency. Bad or hostile input and failed
        # writes (ValueError, OSError) are printed as one line by `yolor`.
        print(f"yolor convert: error: {error}", file=sys.stderr)
        return 2
    if args.preset:
        model.save_to_preset(args.preset)
        print(f"Wrote the preset folder {args.preset}.")
    parameters = sum(_size(w) for w in model.trainable_weights)
    print(
        f"Wrote {out}: {model.num_classes} classes, strides {model.strides}, "
        f"{parameters:,} parameters."
    )
    return 0


def _size(variable):
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size
