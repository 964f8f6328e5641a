"""`yolor serve` under requests built to exhaust it.

The attacks (each measured against the server before its limits existed):

- a 58-byte gRPC request declaring ``[64, 8192, 8192, 3]`` uint8, which
  `tf.make_ndarray` would fill to 12.9 GB (a 61-byte ``[2, 4096, 4096, 3]``
  one made the old server allocate 845 MB and run the model on it);
- a REST body far over any sensible size (the old server read and parsed
  100 MiB on its event loop, stalling other requests for 2.4 s);
- eight concurrent requests of 64 blank 8192 x 8192 PNGs each: 12.5 MB of
  files that decode to over 600 GB;
- unexpected errors, whose text used to reach the client.

A real server runs in a subprocess on 127.0.0.1 with its default limits;
its peak memory is read from /proc/PID/status (VmHWM).
"""

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent import futures

import numpy as np
import pytest
import requests
from deployment_helper import scene
from deployment_helper import tiny_detector
from detection_matching import assert_same_detections

from yolor_keras.serving.limits import DEFAULT_MAX_IMAGE_PIXELS
from yolor_keras.serving.limits import PARALLEL_DECODES
from yolor_keras.serving.limits import Overloaded
from yolor_keras.serving.limits import PixelBudget
from yolor_keras.serving.limits import RequestTooLarge
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.limits import decode_cost

IMAGE_SIZE = 128
MAX_DETECTIONS = 50
# The documented bound on the server's peak memory under the flood below.
MEMORY_BOUND_BYTES = 4 * 1024**3
GIB = 1024**3
MIB = 1024**2

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc"
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_bytes(pid):
    """The process's peak resident memory (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


def blank_png(side):
    """A black side x side RGB PNG, built row by row (never side² bytes at once)."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(6)
    row = b"\0" * (1 + 3 * side)  # filter byte "none", then the pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def server(detector, tmp_path_factory, tiny_saved_model):
    """A `yolor serve` with its default host and limits: `(rest_url, grpc_target, process, root)`."""
    root = tmp_path_factory.mktemp("saved_models")
    # The export of `detector` (`tiny_detector(IMAGE_SIZE)`), shared by this process.
    tiny_saved_model(root / "tiny" / "1", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
    rest_port, grpc_port = free_port(), free_port()
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yolor_keras.cli",
            "serve",
            str(root),
            "--port",
            str(rest_port),
            "--grpc-port",
            str(grpc_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    url = f"http://127.0.0.1:{rest_port}"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"the server exited:\n{log.read()[-3000:]}")
            try:
                if requests.get(f"{url}/v1/models/tiny", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                pytest.fail("the server did not start within 180 s")
            time.sleep(0.5)
        yield url, f"127.0.0.1:{grpc_port}", process, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def assert_answers_normally(url, detector):
    """A normal request still gets the in-process `Predictor`'s detections."""
    from yolor_keras.inference import Predictor
    from yolor_keras.serving import Client

    image = scene(90, 150, seed=11)
    want = Predictor(detector, image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS).predict(
        [image]
    )
    got = Client(url, "tiny").predict([image])
    assert len(want[0]["scores"]) > 0
    np.testing.assert_allclose(got[0]["boxes"], want[0]["boxes"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got[0]["scores"], want[0]["scores"], rtol=1e-5)
    np.testing.assert_array_equal(got[0]["classes"], want[0]["classes"])


# --- gRPC: shapes declared in a few bytes ------------------------------------


def grpc_request(dims, dtype, signature, **values):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature
    tensor = request.inputs["images"]
    tensor.dtype = dtype
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    for field, value in values.items():
        if isinstance(value, list):
            getattr(tensor, field).extend(value)
        else:
            setattr(tensor, field, value)
    return request


def test_grpc_declared_shapes_are_refused_before_any_allocation(server):
    import grpc
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    _, grpc_target, process, _ = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_target))
    attacks = [
        # 12.9 GB of uint8 if filled in; refused on its pixel count alone.
        (
            grpc_request([64, 8192, 8192, 3], types_pb2.DT_UINT8, "predict_images"),
            "RESOURCE_EXHAUSTED",
            "671088640 pixels decoded at once",
        ),
        # Within every size limit, but 100663296 values declared and one sent:
        # the old server repeated it, allocated 845 MB and ran the model.
        (
            grpc_request([2, 4096, 4096, 3], types_pb2.DT_UINT8, "predict_images", int_val=[7]),
            "INVALID_ARGUMENT",
            "100663296 values) but int_val holds 1",
        ),
        (
            grpc_request([2**40], types_pb2.DT_STRING, "serving_default", string_val=[b"x"]),
            "INVALID_ARGUMENT",
            "holds 1099511627776 images; at most 64",
        ),
        (
            grpc_request([3], types_pb2.DT_STRING, "serving_default", string_val=[b"x"]),
            "INVALID_ARGUMENT",
            "declares 3 images but string_val holds 1",
        ),
    ]
    peak_before = peak_rss_bytes(process.pid)
    for request, code, message in attacks:
        assert request.ByteSize() < 100
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
        assert time.monotonic() - start < 5
        assert error.value.code().name == code
        assert message in error.value.details()
    assert peak_rss_bytes(process.pid) - peak_before < 64 * MIB


# --- REST: bodies over the cap -------------------------------------------------


def test_rest_body_over_the_cap_gets_413_unread(server, detector):
    url, _, process, _ = server
    cap = ServingLimits().max_request_bytes
    body = b'{"instances": [{"b64": "' + b"A" * cap + b'"}]}'
    peak_before = peak_rss_bytes(process.pid)
    response = requests.post(
        f"{url}/v1/models/tiny:predict", data=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert f"at most {cap} bytes (max_request_bytes)" in response.json()["error"]
    # Refused on its Content-Length: the server never held the 32 MiB.
    assert peak_rss_bytes(process.pid) - peak_before < cap // 2
    assert_answers_normally(url, detector)


def run_asgi(app, chunks, headers=()):
    """Sends a request body in `chunks` through an ASGI app; returns (status, body)."""
    sent = []
    incoming = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    incoming.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(
        message.get("body", b"") for message in sent if message["type"] == "http.response.body"
    )
    return start["status"], body


def test_chunked_body_is_cut_off_at_the_cap():
    from yolor_keras.serving.server import BodyLimitMiddleware

    read = []

    async def app(scope, receive, send):
        # Reads the whole body, as a route does, then answers 200.
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            read.append(len(message["body"]))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimitMiddleware(app, max_bytes=1000)
    assert run_asgi(limited, [b"x" * 400, b"x" * 600]) == (200, b"ok")  # exactly the cap
    read.clear()
    status, body = run_asgi(limited, [b"x" * 400] * 100)  # no Content-Length, 40 kB
    assert status == 413 and b"at most 1000 bytes" in body
    # The app saw the two chunks under the cap, then a disconnect; its own
    # answer was dropped.
    assert read == [400, 400]
    status, _ = run_asgi(limited, [], headers=[(b"content-length", b"1001")])
    assert status == 413


# --- the flood ---------------------------------------------------------------


def test_flood_of_huge_blank_pngs_stays_under_the_memory_bound(server, detector):
    url, _, process, _ = server
    png = blank_png(8192)
    assert len(png) < 300_000  # 200 KB on the wire, 201 MB as uint8 pixels
    body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode("ascii")}] * 64})

    def post(_):
        return requests.post(
            f"{url}/v1/models/tiny:predict",
            data=body,
            headers={"content-type": "application/json"},
            timeout=120,
        )

    start = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    elapsed = time.monotonic() - start
    peak = peak_rss_bytes(process.pid)
    print(f"flood: {elapsed:.1f} s, server peak RSS {peak / GIB:.2f} GiB")
    # Each request would decode its 10 largest images at once: 10 x 8192²
    # pixels, over the 100-megapixel budget: refused from the headers.
    for response in responses:
        assert response.status_code == 413
        assert "671088640 pixels decoded at once" in response.json()["error"]
    assert peak < MEMORY_BOUND_BYTES
    assert_answers_normally(url, detector)


@pytest.mark.slow
def test_concurrent_huge_images_queue_for_the_pixel_budget(server, detector):
    """Eight single 8192² images at once: each decodes (1.2 GB), within the budget."""
    from yolor_keras.inference import Predictor

    url, _, process, _ = server
    body = json.dumps({"instances": [{"b64": base64.b64encode(blank_png(8192)).decode("ascii")}]})
    # A blank square letterboxes to a blank 128² input with no padding, so
    # the server's boxes are a blank 128² image's, scaled by 8192 / 128.
    reference = Predictor(detector, image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS).predict(
        [np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)]
    )[0]

    def post(_):
        return requests.post(
            f"{url}/v1/models/tiny:predict",
            data=body,
            headers={"content-type": "application/json"},
            timeout=300,
        )

    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    peak = peak_rss_bytes(process.pid)
    print(
        f"8 concurrent 8192² images: statuses {[r.status_code for r in responses]}, "
        f"server peak RSS {peak / GIB:.2f} GiB"
    )
    assert {response.status_code for response in responses} <= {200, 503}
    answered = [
        response.json()["predictions"][0] for response in responses if response.status_code == 200
    ]
    assert answered
    scaled = dict(reference, boxes=reference["boxes"] * 8192 / IMAGE_SIZE)
    for prediction in answered:
        count = prediction["num_detections"]
        got = {
            "boxes": np.asarray(prediction["detection_boxes"][:count]).reshape(-1, 4)[
                :, [1, 0, 3, 2]
            ],
            "scores": prediction["detection_scores"][:count],
            "classes": prediction["detection_classes"][:count],
        }
        # Exactly tied scores may come in either order.
        assert_same_detections(got, scaled, box_atol=0.1, box_rtol=1e-5)
    for response in responses:
        if response.status_code == 503:
            assert "The server is busy" in response.json()["error"]
    assert peak < MEMORY_BOUND_BYTES


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_listens_on_loopback_by_default(server):
    url, grpc_target, _, _ = server
    ports = {int(url.rsplit(":", 1)[1]), int(grpc_target.rsplit(":", 1)[1])}
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            for line in lines.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if int(port, 16) in ports and state == "0A":  # 0A: LISTEN
                    listening.setdefault(int(port, 16), []).append(address)
    # Both ports, each on 127.0.0.1 only (not 0.0.0.0 nor ::); gRPC may use
    # an IPv6 socket bound to the IPv4-mapped ::ffff:127.0.0.1.
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert set(listening) == ports
    for addresses in listening.values():
        assert set(addresses) <= loopback


# --- the pieces, without a server -------------------------------------------


def test_decode_cost_counts_the_largest_images_decoded_in_parallel():
    assert PARALLEL_DECODES == 10
    assert decode_cost([5]) == 5
    assert decode_cost([1, 2, 3]) == 6
    # 12 images: the 10 largest (3..12) are what can be decoded at once.
    assert decode_cost(list(range(1, 13))) == sum(range(3, 13))
    assert decode_cost([1920 * 1080] * 64) == 10 * 1920 * 1080


def test_exported_graph_decodes_at_most_ten_images_at_once(server):
    """`decode_cost` relies on the serving graph's map_fn running 10 iterations in parallel."""
    import tensorflow as tf

    root = server[3]
    graph = tf.saved_model.load(str(root / "tiny" / "1")).signatures["serving_default"].graph
    graph_def = graph.as_graph_def()
    nodes = list(graph_def.node) + [
        node for function in graph_def.library.function for node in function.node_def
    ]
    loops = [
        node.attr["parallel_iterations"].i
        for node in nodes
        if node.op in ("While", "StatelessWhile")
    ]
    # One loop decodes the batch (map_fn); none runs more than 10 at once.
    assert loops and max(loops) <= PARALLEL_DECODES


def test_pixel_budget_refuses_queues_and_times_out():
    budget = PixelBudget(100)
    with pytest.raises(RequestTooLarge, match="101 pixels decoded at once"):
        budget.reserve(101, timeout=1)
    held = budget.reserve(60, timeout=0)
    assert budget.in_use == 60
    start = time.monotonic()
    with pytest.raises(Overloaded, match="60 of its 100 pixels"):
        budget.reserve(50, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    assert budget.in_use == 60  # a refused request holds nothing

    admitted = threading.Event()

    def waiter():
        with budget.reserve(50, timeout=5):
            admitted.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not admitted.wait(0.2)  # 60 + 50 > 100: it waits...
    held.__exit__(None, None, None)
    assert admitted.wait(5)  # ...and runs as soon as the 60 are released
    thread.join()
    assert budget.in_use == 0


def test_pixel_budget_serves_waiters_in_order():
    budget = PixelBudget(100)
    held = budget.reserve(90, timeout=0)
    order = []

    def take(pixels, name):
        with budget.reserve(pixels, timeout=5):
            order.append(name)

    big = threading.Thread(target=take, args=(100, "big"))
    big.start()
    time.sleep(0.1)
    # 5 pixels would fit now, but the big request came first: it waits too.
    small = threading.Thread(target=take, args=(5, "small"))
    small.start()
    time.sleep(0.1)
    assert order == []
    held.__exit__(None, None, None)
    big.join()
    small.join()
    assert order == ["big", "small"]


def test_default_limits_are_the_cli_defaults_and_stated_in_help(capsys):
    from yolor_keras.cli import build_parser
    from yolor_keras.export.image_header import DEFAULT_MAX_IMAGE_PIXELS as EXPORT_DEFAULT
    from yolor_keras.serving.cli import limits_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["serve"])
    assert args.host == "127.0.0.1"
    defaults = ServingLimits()
    assert limits_from_args(args) == defaults
    assert DEFAULT_MAX_IMAGE_PIXELS == EXPORT_DEFAULT
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for value in (
        defaults.max_request_bytes,
        defaults.max_batch_size,
        defaults.max_image_pixels,
        defaults.max_inflight_pixels,
        defaults.max_concurrent_requests,
    ):
        assert f"(default {value}" in help_text
    assert "(default 5)" in help_text  # queue timeout, seconds
    assert "authentication" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-inflight-pixels", "0"])


def test_limits_reject_nonsense():
    with pytest.raises(ValueError, match="max_batch_size"):
        ServingLimits(max_batch_size=0)
    with pytest.raises(ValueError, match="queue_timeout"):
        ServingLimits(queue_timeout=-1)
