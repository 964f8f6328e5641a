"""`yolor serve`: serve exported SavedModels with TF Serving's REST (and gRPC) API."""

import sys

from yolor_keras.serving import limits as defaults


def _positive_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _seconds(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0; got {text!r}")
    return value


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve",
        help="Serve exported models with TF Serving's REST/gRPC API (KServe).",
        description=(
            "Serves every ROOT/NAME/VERSION export: POST /v1/models/NAME[/versions/N]:predict "
            'with {"instances": [{"b64": ...}]}, GET /v1/models/NAME for status. There is no '
            "authentication or TLS: the default address keeps the server on this machine; put a "
            "reverse proxy with TLS and authentication in front to serve a network, and serve "
            "only models you trust."
        ),
    )
    parser.add_argument(
        "root", nargs="?", default="saved_models", help="Model root (saved_models)."
    )
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
    parser.add_argument(
        "--threads", type=_positive_int, default=8, help="Threads running the model (8)."
    )
    group = parser.add_argument_group(
        "limits",
        "What a request, and all requests together, may ask of the server. With the defaults "
        "its memory stays near 4 GB at worst, plus the model's own.",
    )
    group.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=defaults.DEFAULT_MAX_REQUEST_BYTES,
        help="Largest REST body or gRPC message; larger ones get HTTP 413 / RESOURCE_EXHAUSTED "
        f"unread (default {defaults.DEFAULT_MAX_REQUEST_BYTES}, 32 MiB).",
    )
    group.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=defaults.DEFAULT_MAX_BATCH_SIZE,
        help="Most images per request, and with --enable-batching per model call "
        f"(default {defaults.DEFAULT_MAX_BATCH_SIZE}).",
    )
    group.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=defaults.DEFAULT_MAX_IMAGE_PIXELS,
        help="Most pixels (height x width) per image, read from its header before decoding "
        f"(default {defaults.DEFAULT_MAX_IMAGE_PIXELS} = 8192 x 8192).",
    )
    group.add_argument(
        "--max-inflight-pixels",
        type=_positive_int,
        default=defaults.DEFAULT_MAX_INFLIGHT_PIXELS,
        help="Most pixels decoded at once across all requests (about 19 bytes each; a request "
        f"counts its {defaults.PARALLEL_DECODES} largest images, which the graph decodes in "
        "parallel). A request waits until its pixels fit; one that alone exceeds this gets "
        f"413 / RESOURCE_EXHAUSTED (default {defaults.DEFAULT_MAX_INFLIGHT_PIXELS}: one "
        "8192 x 8192 image, or 48 full-HD ones, at once).",
    )
    group.add_argument(
        "--max-concurrent-requests",
        type=_positive_int,
        default=defaults.DEFAULT_MAX_CONCURRENT_REQUESTS,
        help="Most requests handled at once per protocol; more REST requests wait for a turn, "
        "more gRPC calls get RESOURCE_EXHAUSTED "
        f"(default {defaults.DEFAULT_MAX_CONCURRENT_REQUESTS}).",
    )
    group.add_argument(
        "--queue-timeout",
        type=_seconds,
        default=defaults.DEFAULT_QUEUE_TIMEOUT,
        help="Seconds a request may wait for a turn or for pixel budget before HTTP 503 / "
        f"UNAVAILABLE (default {defaults.DEFAULT_QUEUE_TIMEOUT:g}).",
    )
    batching = parser.add_argument_group(
        "server-side batching",
        "Run concurrent requests together, up to --max-batch-size images per model call "
        "(TF Serving's --enable_batching and batching parameters). Each caller still gets "
        "only its own results; every limit above still applies, and at most "
        "--max-concurrent-requests requests can wait for a batch at once.",
    )
    batching.add_argument(
        "--enable-batching",
        action="store_true",
        help="Batch concurrent requests (off by default).",
    )
    batching.add_argument(
        "--batch-timeout-micros",
        type=_non_negative_int,
        default=None,
        help="Microseconds the oldest queued request waits for others before a part-full "
        "batch runs; implies --enable-batching (default 0: a batch holds what queued while "
        "the model was busy, and a lone request never waits).",
    )
    batching.add_argument(
        "--num-batch-threads",
        type=_positive_int,
        default=None,
        help="Batches run at the same time; implies --enable-batching (default 1).",
    )
    return parser


def _non_negative_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def batching_from_args(args):
    """The `BatchingOptions` of parsed `yolor serve` arguments, or None without batching."""
    timeout, threads = args.batch_timeout_micros, args.num_batch_threads
    if not (args.enable_batching or timeout is not None or threads is not None):
        return None
    from yolor_keras.serving.batching import DEFAULT_BATCH_TIMEOUT_MICROS
    from yolor_keras.serving.batching import DEFAULT_NUM_BATCH_THREADS
    from yolor_keras.serving.batching import BatchingOptions

    return BatchingOptions(
        max_batch_size=args.max_batch_size,
        batch_timeout_micros=DEFAULT_BATCH_TIMEOUT_MICROS if timeout is None else timeout,
        num_batch_threads=DEFAULT_NUM_BATCH_THREADS if threads is None else threads,
    )


def limits_from_args(args):
    """The `ServingLimits` of parsed `yolor serve` arguments."""
    return defaults.ServingLimits(
        max_request_bytes=args.max_request_bytes,
        max_batch_size=args.max_batch_size,
        max_image_pixels=args.max_image_pixels,
        max_inflight_pixels=args.max_inflight_pixels,
        max_concurrent_requests=args.max_concurrent_requests,
        queue_timeout=args.queue_timeout,
    )


def run(args):
    from yolor_keras.serving.server import serve

    try:
        serve(
            args.root,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            threads=args.threads,
            limits=limits_from_args(args),
            batching=batching_from_args(args),
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"yolor serve: {error}", file=sys.stderr)
        return 2
    return 0
