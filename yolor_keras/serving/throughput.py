"""Throughput of `yolor serve`: images/s and latency at several concurrencies.

`serving_rows` exports a model as a SavedModel, starts the real server
(``python -m yolor_keras.cli serve``) in a subprocess on a free port of
127.0.0.1 for each batching setting, and sends single-image requests as a
TF Serving REST client does: a JPEG file's bytes, base64-encoded, in
``{"instances": [{"b64": ...}]}`` to ``/v1/models/NAME:predict``. For each
concurrency (a closed loop: that many client threads, each sending its next
request when its last one is answered) it reports images/s over the whole
run and the median and 95th-percentile latency of a request.

The same model and image go through every setting, so the rows compare
serving without batching against ``--enable-batching --max-batch-size N``.
The figures include everything a client waits for: HTTP, JSON and base64,
JPEG decoding and letterboxing in the graph, the network and NMS.

Used by ``python -m yolor_keras.bench --serving`` and
``benchmarks/serving_throughput.py``.
"""

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

MODEL_NAME = "bench"
# The model of `make demo`: YOLOR-P6 at a quarter of the width, one third
# of the depth, 5 classes, 256 x 256 letterbox.
DEMO_SETTINGS = {
    "preset": "yolor_p6",
    "num_classes": 5,
    "image_size": 256,
    "width_multiplier": 0.25,
    "depth_multiplier": 0.33,
}
# The full YOLOR-P6 at 640 with COCO's 80 classes.
P6_640_SETTINGS = {
    "preset": "yolor_p6",
    "num_classes": 80,
    "image_size": 640,
    "width_multiplier": 1.0,
    "depth_multiplier": 1.0,
}
DEFAULT_CONCURRENCIES = (1, 4, 16)
# None: no server-side batching; N: --enable-batching --max-batch-size N.
DEFAULT_BATCH_SIZES = (None, 8, 16)
# The bundled 640 x 480 JPEG of the demo.
DEFAULT_IMAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "shapes.jpg")
# Enough admitted requests for the highest concurrency, with or without
# batching, so that no row is capped by the request slots.
MAX_CONCURRENT_REQUESTS = 32
SERVER_START_TIMEOUT = 300.0


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export_model(root, settings=None, seed=0):
    """Exports a randomly initialised detector to ``root/MODEL_NAME/1``.

    Random weights cost the same to run as trained ones; NMS work differs
    with the number of boxes over the score threshold, which stays small
    for both.

    Args:
        root: the model root the server will serve.
        settings: a dict like `DEMO_SETTINGS` (the default).
        seed: weight initialisation seed.
    """
    import keras

    from yolor_keras.export import export_saved_model
    from yolor_keras.tasks import YOLORObjectDetector

    settings = dict(DEMO_SETTINGS if settings is None else settings)
    keras.utils.set_random_seed(seed)
    detector = YOLORObjectDetector.from_preset(
        settings["preset"],
        num_classes=settings["num_classes"],
        width_multiplier=settings["width_multiplier"],
        depth_multiplier=settings["depth_multiplier"],
    )
    export_saved_model(
        detector, os.path.join(os.fspath(root), MODEL_NAME, "1"), image_size=settings["image_size"]
    )
    return root


class ServerProcess:
    """`yolor serve ROOT` in a subprocess on a free port of 127.0.0.1.

    Args:
        root: the model root.
        max_batch_size: None for no batching, else ``--enable-batching
            --max-batch-size N``.
        batch_timeout_micros: ``--batch-timeout-micros`` with batching.
        log_path: file for the server's output.
    """

    def __init__(self, root, max_batch_size=None, batch_timeout_micros=0, log_path=os.devnull):
        self.port = free_port()
        command = [
            sys.executable, "-m", "yolor_keras.cli", "serve", os.fspath(root),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-concurrent-requests", str(MAX_CONCURRENT_REQUESTS),
        ]  # fmt: skip
        if max_batch_size is not None:
            command += [
                "--enable-batching",
                "--max-batch-size", str(max_batch_size),
                "--batch-timeout-micros", str(batch_timeout_micros),
            ]  # fmt: skip
        self.log_path = log_path
        self._log = open(log_path, "w+b")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, timeout=SERVER_START_TIMEOUT):
        """Waits until the model's status route answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`yolor serve` exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", f"/v1/models/{MODEL_NAME}")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.3)
        raise TimeoutError(
            f"`yolor serve` did not answer within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, size=3000):
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-size:]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def request_body(image_bytes):
    """TF Serving's REST predict body for one encoded image."""
    payload = {"instances": [{"b64": base64.b64encode(image_bytes).decode("ascii")}]}
    return json.dumps(payload).encode("utf-8")


def run_load(port, body, concurrency, requests):
    """Sends `requests` copies of `body` from `concurrency` client threads.

    Each thread keeps one HTTP/1.1 connection and sends its next request as
    soon as its previous one is answered.

    Returns:
        `(wall seconds, latencies in seconds, error count)`.
    """
    path = f"/v1/models/{MODEL_NAME}:predict"
    headers = {"content-type": "application/json"}
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies, errors = [], []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    status, answer = response.status, response.read()
                except (OSError, http.client.HTTPException) as error:
                    # Counted as a failed request; the next one reconnects.
                    status, answer = None, repr(error).encode()
                    connection.close()
                elapsed = time.perf_counter() - start
                with lock:
                    if status == 200 and b'"predictions"' in answer:
                        latencies.append(elapsed)
                    else:
                        errors.append((status, answer[:200]))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, errors


def serving_rows(
    root=None,
    settings=None,
    concurrencies=DEFAULT_CONCURRENCIES,
    batch_sizes=DEFAULT_BATCH_SIZES,
    requests_per_row=64,
    batch_timeout_micros=0,
    image=DEFAULT_IMAGE,
    warmup=4,
    verbose=True,
):
    """Measures `yolor serve` for each batching setting and concurrency.

    Args:
        root: a model root holding ``bench/1`` (exported there when None,
            from `settings`, into a temporary folder).
        settings: the model to export when `root` is None (`DEMO_SETTINGS`
            by default; `P6_640_SETTINGS` for YOLOR-P6 at 640).
        concurrencies: client threads of each row.
        batch_sizes: None (no batching) and/or ``--max-batch-size`` values.
        requests_per_row: single-image requests per row (at least the
            concurrency, so every thread sends one).
        batch_timeout_micros: ``--batch-timeout-micros`` with batching.
        image: path (or bytes) of the encoded image every request sends.
        warmup: requests per client thread sent before a server's first
            row, and not counted.
        verbose: print each row as it is measured.

    Returns:
        One dict per (batching, concurrency): ``batching`` ("off" or
        "max N"), ``max_batch_size``, ``concurrency``, ``requests``,
        ``wall_s``, ``images_per_s`` (answered images / wall), ``p50_ms``,
        ``p95_ms``, ``errors``.
    """
    if isinstance(image, (bytes, bytearray)):
        image_bytes = bytes(image)
    else:
        with open(image, "rb") as file:
            image_bytes = file.read()
    body = request_body(image_bytes)
    with tempfile.TemporaryDirectory(prefix="yolor_serving_bench_") as scratch:
        if root is None:
            root = export_model(os.path.join(scratch, "models"), settings)
        servers = {}
        rows = []
        try:
            # Every server starts at once (the starts are mostly imports and
            # loading); the rows are then measured one server at a time.
            for max_batch_size in batch_sizes:
                log_path = os.path.join(scratch, f"server_{max_batch_size}.log")
                servers[max_batch_size] = ServerProcess(
                    root, max_batch_size, batch_timeout_micros, log_path
                )
            for max_batch_size, server in servers.items():
                server.wait_ready()
                # Traces and warms every path, at the widest concurrency.
                widest = max(concurrencies)
                run_load(server.port, body, widest, warmup * widest)
                for concurrency in concurrencies:
                    count = max(requests_per_row, concurrency)
                    wall, latencies, errors = run_load(server.port, body, concurrency, count)
                    row = {
                        "batching": "off" if max_batch_size is None else f"max {max_batch_size}",
                        "max_batch_size": max_batch_size,
                        "concurrency": concurrency,
                        "requests": count,
                        "wall_s": wall,
                        "images_per_s": len(latencies) / wall,
                        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
                        "p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else None,
                        "errors": len(errors),
                    }
                    if errors:
                        row["first_error"] = repr(errors[0])
                    rows.append(row)
                    if verbose:
                        print_serving_rows([row], header=len(rows) == 1)
                server.stop()
        finally:
            for server in servers.values():
                server.stop()
    return rows


def print_serving_rows(rows, header=True):
    """Prints rows of `serving_rows` as a table."""
    if header:
        print(f"{'batching':<10} {'concurrency':>11} {'requests':>8} {'images/s':>9} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")  # fmt: skip
    for row in rows:
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.0f}"
        p95 = "-" if row["p95_ms"] is None else f"{row['p95_ms']:.0f}"
        print(
            f"{row['batching']:<10} {row['concurrency']:>11} {row['requests']:>8} "
            f"{row['images_per_s']:>9.1f} {p50:>8} {p95:>8} {row['errors']:>6}",
            flush=True,
        )


def markdown_table(rows):
    """The rows as a Markdown table (for the README and the results folder)."""
    lines = [
        "| batching | concurrency | images/s | p50 latency | p95 latency |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.0f} ms"
        p95 = "-" if row["p95_ms"] is None else f"{row['p95_ms']:.0f} ms"
        lines.append(
            f"| {row['batching']} | {row['concurrency']} | {row['images_per_s']:.1f} | {p50} | {p95} |"
        )
    return "\n".join(lines)
