"""End-to-end tests of `yolor serve` over HTTP and gRPC on 127.0.0.1.

The server runs in a subprocess on free ports; the `Client` talks to it as
it would to TF Serving, and its answers must equal the in-process
`Predictor`'s.
"""

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent import futures

import numpy as np
import pytest
import requests
from deployment_helper import encode
from deployment_helper import png_header_only
from deployment_helper import scene
from deployment_helper import tiny_detector
from detection_matching import assert_same_detections as same_detections

from yolor_keras.inference import Predictor
from yolor_keras.serving import Client
from yolor_keras.serving import ServingError

IMAGE_SIZE = 128
MAX_DETECTIONS = 50


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def server(detector, tmp_path_factory, tiny_saved_model):
    """`(rest_url, grpc_target, rest_port)` of a running `yolor serve`."""
    root = tmp_path_factory.mktemp("saved_models")
    # The export of `detector` (`tiny_detector(IMAGE_SIZE)`), shared by this process.
    tiny_saved_model(root / "tiny" / "1", image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
    # A second version (same weights) to exercise version routing.
    shutil.copytree(root / "tiny" / "1", root / "tiny" / "2")
    rest_port, grpc_port = free_port(), free_port()
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yolor_keras.cli",
            "serve",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(rest_port),
            "--grpc-port",
            str(grpc_port),
            # Correctness under concurrency, not back-pressure: on a loaded
            # 2-core machine a queued request can wait longer than the 5 s
            # default and would be answered 503 (tested in
            # tests/robustness/test_server_limits.py).
            "--queue-timeout",
            "120",
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
        yield url, f"127.0.0.1:{grpc_port}", rest_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def images():
    return [scene(90, 150, seed=11), scene(170, 70, seed=12)]


@pytest.fixture(scope="module")
def expected(detector, images):
    predictor = Predictor(detector, image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
    return predictor.predict(images)


def assert_same_detections(got, want):
    """Same detections per image; exactly tied scores may come in any order."""
    assert len(got) == len(want)
    for have, expected_result in zip(got, want):
        same_detections(have, expected_result, box_atol=1e-3, box_rtol=1e-5)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_gets_the_predictors_detections(server, detector, images, expected, protocol):
    rest_url, grpc_target, _ = server
    url = rest_url if protocol == "rest" else grpc_target
    assert sum(len(result["scores"]) for result in expected) > 0
    with Client(url, "tiny", protocol=protocol, class_names=["a", "b", "c"]) as client:
        results = client.predict(images)
        assert_same_detections(results, expected)
        assert results[0]["class_names"] == [["a", "b", "c"][c] for c in results[0]["classes"]]
    with Client(url, "tiny", version=1, protocol=protocol) as client:
        # A JPEG file's bytes go through as they are, decoded by the graph.
        jpeg = encode(images[0], "JPEG", quality=90)
        local = Predictor(detector, image_size=IMAGE_SIZE, max_detections=MAX_DETECTIONS)
        assert_same_detections(client.predict([jpeg]), local.predict([jpeg]))


def test_versions_and_status_follow_tf_serving(server, images, expected):
    rest_url, grpc_target, _ = server
    status = requests.get(f"{rest_url}/v1/models/tiny").json()
    assert [entry["version"] for entry in status["model_version_status"]] == ["2", "1"]
    assert all(entry["state"] == "AVAILABLE" for entry in status["model_version_status"])
    one = requests.get(f"{rest_url}/v1/models/tiny/versions/1").json()
    assert [entry["version"] for entry in one["model_version_status"]] == ["1"]
    for version in (1, 2):
        assert_same_detections(Client(rest_url, "tiny", version=version).predict(images), expected)
    assert requests.get(f"{rest_url}/v1/models/absent").status_code == 404
    with pytest.raises(ServingError, match="no version 7") as error:
        Client(rest_url, "tiny", version=7).predict(images)
    assert error.value.status == 404
    with pytest.raises(ServingError, match="NOT_FOUND"):
        Client(grpc_target, "tiny", version=7, protocol="grpc").predict(images)


def test_columnar_requests_answer_columns(server, images, expected):
    rest_url, _, _ = server
    body = {"inputs": {"images": [{"b64": base64.b64encode(encode(images[0])).decode()}]}}
    outputs = requests.post(f"{rest_url}/v1/models/tiny:predict", json=body).json()["outputs"]
    count = outputs["num_detections"][0]
    boxes = np.array(outputs["detection_boxes"][0][:count])[:, [1, 0, 3, 2]]
    np.testing.assert_allclose(boxes.reshape(-1, 4), expected[0]["boxes"], atol=1e-3)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {"instances": [{"b64": base64.b64encode(b"plain text, not an image").decode()}]},
            "Not an image",
        ),
        ({"instances": []}, "empty batch"),
        (
            {"instances": [{"b64": base64.b64encode(png_header_only(20000, 20000)).decode()}]},
            "too large",
        ),
        ({"instances": [{"b64": "%%%"}]}, "not valid base64"),
        ({"pictures": []}, '"instances" or "inputs"'),
        ("{not json", "Unrecognized request format"),
    ],
)
def test_bad_requests_get_400_and_the_server_keeps_serving(server, images, expected, body, message):
    rest_url, _, _ = server
    url = f"{rest_url}/v1/models/tiny:predict"
    if isinstance(body, str):
        response = requests.post(url, data=body, headers={"content-type": "application/json"})
    else:
        response = requests.post(url, json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert_same_detections(Client(rest_url, "tiny").predict(images[:1]), expected[:1])


def test_grpc_bad_image_is_invalid_argument(server):
    _, grpc_target, _ = server
    with pytest.raises(ServingError, match="INVALID_ARGUMENT.*Not an image"):
        Client(grpc_target, "tiny", protocol="grpc").predict([b"plain text"])


def test_two_hundred_concurrent_requests_all_succeed(server, images, expected):
    rest_url, _, _ = server
    client = Client(rest_url, "tiny")
    with futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda index: client.predict([images[index % 2]])[0], range(200)))
    for index, result in enumerate(results):
        assert_same_detections([result], [expected[index % 2]])


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_listens_on_loopback_only(server):
    _, _, rest_port = server
    listening = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if int(port, 16) == rest_port and state == "0A":  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, not 0.0.0.0
