"""`yolor serve`: serve exported SavedModels with TF Serving's REST (and gRPC) API."""

import sys


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve",
        help="Serve exported models with TF Serving's REST/gRPC API (KServe).",
        description=(
            "Serves every ROOT/NAME/VERSION export: POST /v1/models/NAME[/versions/N]:predict "
            'with {"instances": [{"b64": ...}]}, GET /v1/models/NAME for status.'
        ),
    )
    parser.add_argument("root", nargs="?", default="saved_models", help="Model root (saved_models).")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all).",
    )
    parser.add_argument("--port", type=int, default=8501, help="REST port (default 8501).")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="Also serve TF Serving's gRPC PredictionService on this port (e.g. 8500).",
    )
    parser.add_argument("--max-batch-size", type=int, default=None, help="Images per request (64).")
    parser.add_argument("--threads", type=int, default=8, help="Threads running the model (8).")
    return parser


def run(args):
    from yolor_keras.serving.server import serve

    try:
        serve(
            args.root,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            max_batch_size=args.max_batch_size,
            threads=args.threads,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"yolor serve: {error}", file=sys.stderr)
        return 2
    return 0
