"""The `yolor` command line: one subcommand per stage of the pipeline.

Each subcommand lives next to the code it drives, in a module exposing
``add_parser(subparsers)`` and ``run(args)``. Those modules import TensorFlow
and the rest lazily inside ``run`` so that ``yolor --help`` stays fast.
"""

import argparse
import importlib
import sys

from yolor_keras.native_logs import quiet_native_logs

SUBCOMMANDS = {
    "convert": "yolor_keras.convert.cli",
    "train": "yolor_keras.training.cli",
    "evaluate": "yolor_keras.evaluation.cli",
    "detect": "yolor_keras.inference.cli",
    "export": "yolor_keras.export.cli",
    "serve": "yolor_keras.serving.cli",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="yolor",
        description="YOLOR in Keras 3: convert, train, evaluate, detect, export, serve.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's own log lines (hidden by default)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_path in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as error:
            # Only a missing *optional* dependency may hide a subcommand.
            if error.name and error.name.startswith("yolor_keras"):
                continue
            raise
        module.add_parser(subparsers)
        modules[name] = module
    return parser, modules


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before any subcommand module can import TensorFlow.
    quiet_native_logs(verbose="--verbose" in argv)
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args) or 0
    except (ValueError, OSError) as error:
        # Bad input (files, datasets, options) is the user's to fix: one line
        # naming it, not a traceback. --verbose keeps the traceback.
        if args.verbose:
            raise
        print(f"yolor {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
