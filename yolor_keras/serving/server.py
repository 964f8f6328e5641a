"""`yolor serve`: TF Serving's REST API (and its gRPC API) on KServe's ModelServer.

Every ``ROOT/NAME/VERSION/`` export is served:

- ``POST /v1/models/NAME:predict`` (highest version) and
  ``POST /v1/models/NAME/versions/N:predict``, with TF Serving's request
  and response bodies (`rest_format`);
- ``GET /v1/models/NAME`` and ``GET /v1/models/NAME/versions/N``: TF
  Serving's model status;
- optionally gRPC ``PredictionService/Predict`` on another port.

The REST side runs on KServe's ModelServer (FastAPI + uvicorn); the
predict, versioned and status routes are added to its app ahead of its
own. KServe binds ``0.0.0.0``; the server here rebinds to the requested
host (127.0.0.1 by default).

Limits (`ServingLimits`): every request body is capped before it is read
(HTTP 413, for every route); at most ``max_concurrent_requests`` predict
requests are read and run at once, the others waiting briefly for a turn
(then 503); JSON and base64 are decoded in worker threads, one body at a
time, so the event loop keeps answering; image sizes are read from the
headers and a request runs only when its pixels fit the server's budget.
Unexpected errors answer a generic 500 and are logged in full.
"""

import asyncio
import json
import logging
import sys
import threading
from concurrent import futures

from yolor_keras.serving.limits import Overloaded
from yolor_keras.serving.limits import RequestTooLarge
from yolor_keras.serving.limits import ServingLimits
from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelNotFound
from yolor_keras.serving.rest_format import format_predict_response
from yolor_keras.serving.rest_format import parse_predict_request
from yolor_keras.serving.rest_format import signature_name_of

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "Internal server error; the details are in the server's log."
# Parsed JSON takes several times the memory of its text (a pixel as
# "[0,0,0]," is 8 bytes of text and about 80 of Python objects), and parsing
# holds the GIL anyway: one body is parsed at a time.
_PARSE_LOCK = threading.Lock()


def _import_kserve():
    # kserve parses sys.argv when imported (its own command-line flags);
    # `yolor serve`'s flags are not its business.
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]
    try:
        import kserve
        import kserve.model_server
    finally:
        sys.argv = saved_argv
    return kserve


def _error(status, message):
    return status, {"error": message}


def predict_payload(served, payload):
    """Runs a parsed REST body through a model: `(HTTP status, JSON-ready dict)`.

    Every failure becomes a status and a message: 400 bad request, 413 too
    many pixels, 503 busy, and 500 with a generic message (the details go to
    the log) for anything unexpected.
    """
    try:
        with _PARSE_LOCK:
            if isinstance(payload, (bytes, bytearray, str)):
                payload = _parse_json(payload)
            signature_name = signature_name_of(payload)
            takes_encoded = served.input_spec(signature_name).dtype.name == "string"
            images, columnar = parse_predict_request(payload, takes_encoded)
            # The parsed JSON is dropped here: only the tensor lives on.
            del payload
            prepared = served.prepare(images, signature_name)
            del images
        return 200, format_predict_response(served.run(prepared), columnar)
    except ModelNotFound as error:
        return _error(404, str(error))
    except BadRequest as error:
        return _error(400, str(error))
    except RequestTooLarge as error:
        return _error(413, str(error))
    except Overloaded as error:
        return _error(503, str(error))
    except Exception:
        logger.exception("REST predict for model %r version %s failed", served.name, served.version)
        return _error(500, INTERNAL_ERROR_MESSAGE)


def predict_body(served, body):
    """`predict_payload` for a raw body; returns `(status, JSON bytes)`."""
    status, content = predict_payload(served, body)
    return status, json.dumps(content, separators=(",", ":")).encode("utf-8")


def _parse_json(body):
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("Unrecognized request format: the JSON is nested too deeply.") from None
    except ValueError as error:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        detail = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
        raise BadRequest(f"Unrecognized request format: the body is not JSON ({detail}).") from None


class BodyLimitMiddleware:
    """ASGI middleware refusing request bodies over `max_bytes` with HTTP 413.

    A declared Content-Length over the cap is refused before a byte of the
    body is read; a chunked body is counted as it arrives and refused as
    soon as it passes the cap (the app then sees the client disconnect, and
    anything it answers is dropped).
    """

    def __init__(self, app, max_bytes):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def _refuse(self, send, size):
        body = json.dumps(
            {
                "error": f"The request body is {size} bytes; this server accepts at most "
                f"{self.max_bytes} bytes (max_request_bytes)."
            }
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    # The unread rest of the body makes the connection unusable.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > self.max_bytes:
                    await self._refuse(send, f"declared as {declared}")
                    return
        received = 0
        refused = False
        started = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(send, f"over {received}")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def internal_name(name, version):
    """The KServe registry name of one version (only reachable via our routes)."""
    return f"{name}/versions/{version}"


def build_detection_model(kserve, served, executor):
    """A KServe model running one `ServedModel` with TF Serving's REST bodies.

    The routes of `_add_routes` answer predict requests themselves; this
    model registers the version with KServe (readiness, model listing), and
    runs any request KServe hands it the same way, off the event loop.
    """

    class DetectionModel(kserve.Model):
        def __init__(self):
            super().__init__(internal_name(served.name, served.version))
            self.served = served
            self.ready = True

        async def predict(self, payload, headers=None):
            loop = asyncio.get_running_loop()
            status, content = await loop.run_in_executor(executor, predict_payload, served, payload)
            if status == 400:
                raise kserve.errors.InvalidInput(content["error"])
            if status != 200:
                raise kserve.errors.InferenceError(content["error"])
            return content

    return DetectionModel()


class RequestSlots:
    """At most `count` REST predict requests are read and run at once.

    Holding a slot from before the body is read bounds the bodies in memory
    to `count` x the body cap; a request that waits longer than `timeout`
    for a slot gets 503.
    """

    def __init__(self, count, timeout):
        self.count = count
        self.timeout = timeout
        self._semaphore = None

    async def acquire(self):
        if self._semaphore is None:
            # Created on the server's own event loop, at the first request.
            self._semaphore = asyncio.Semaphore(self.count)
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.timeout)
        except TimeoutError:
            raise Overloaded(
                f"The server is busy: {self.count} requests are being handled and no turn came "
                f"within {self.timeout:g} s; retry later."
            ) from None

    def release(self):
        self._semaphore.release()


def _json_response(status, content):
    from fastapi.responses import Response

    if not isinstance(content, bytes):
        content = json.dumps(content).encode("utf-8")
    headers = {"retry-after": "1"} if status == 503 else None
    return Response(
        content=content, status_code=status, media_type="application/json", headers=headers
    )


async def internal_error_handler(request, error):
    """Replaces KServe's catch-all handler, which sends the exception's text to the client."""
    logger.error("Unhandled error in %s %s", request.method, request.url.path, exc_info=error)
    return _json_response(500, {"error": INTERNAL_ERROR_MESSAGE})


def _add_routes(app, registry, executor, slots):
    """TF Serving's predict and status routes, before KServe's own."""
    from fastapi import Request
    from starlette.requests import ClientDisconnect

    def not_found(error):
        return _json_response(404, {"error": str(error)})

    async def status(model_name: str):
        try:
            return registry.status(model_name)
        except ModelNotFound as error:
            return not_found(error)

    async def version_status(model_name: str, version: str):
        try:
            return registry.status(model_name, version)
        except ModelNotFound as error:
            return not_found(error)
        except BadRequest as error:
            return _json_response(400, {"error": str(error)})

    async def predict(served, request):
        try:
            await slots.acquire()
        except Overloaded as error:
            return _json_response(503, {"error": str(error)})
        try:
            # BodyLimitMiddleware has refused bodies over the cap.
            body = await request.body()
            loop = asyncio.get_running_loop()
            status_code, content = await loop.run_in_executor(executor, predict_body, served, body)
            return _json_response(status_code, content)
        except ClientDisconnect:
            # The client left, or the body passed the cap (413 already sent).
            return _json_response(400, {"error": "The client disconnected."})
        except Exception as error:
            return await internal_error_handler(request, error)
        finally:
            slots.release()

    async def version_predict(model_name: str, version: str, request: Request):
        try:
            served = registry.get(model_name, version)
        except ModelNotFound as error:
            return not_found(error)
        except BadRequest as error:
            return _json_response(400, {"error": str(error)})
        return await predict(served, request)

    async def latest_predict(model_name: str, request: Request):
        try:
            served = registry.get(model_name)
        except ModelNotFound as error:
            return not_found(error)
        return await predict(served, request)

    app.add_api_route("/v1/models/{model_name}", status, methods=["GET"])
    app.add_api_route("/v1/models/{model_name}/versions/{version}", version_status, methods=["GET"])
    app.add_api_route(
        "/v1/models/{model_name}/versions/{version}:predict",
        version_predict,
        methods=["POST"],
        response_model=None,
    )
    app.add_api_route(
        "/v1/models/{model_name}:predict", latest_predict, methods=["POST"], response_model=None
    )


def serve(
    root,
    host="127.0.0.1",
    port=8501,
    grpc_port=None,
    max_batch_size=None,
    threads=8,
    limits=None,
    batching=None,
):
    """Serves every exported model under `root` until interrupted.

    There is no authentication: anyone who can reach the port can run the
    models. The default `host` keeps the server on this machine; put a
    reverse proxy with TLS and authentication in front to serve a network.

    Args:
        root: folder with ``NAME/VERSION/saved_model.pb`` exports.
        host: address to listen on (127.0.0.1: this machine only; 0.0.0.0:
            every interface).
        port: REST port (TF Serving's default is 8501).
        grpc_port: gRPC PredictionService port (TF Serving's is 8500), or
            None for no gRPC.
        max_batch_size: most images accepted per request (overrides
            ``limits.max_batch_size``).
        threads: threads running model calls (per protocol).
        limits: `ServingLimits` (body size, images per request, pixels per
            image and in flight, concurrent requests, queue timeout);
            defaults when None.
        batching: `batching.BatchingOptions` to run concurrent requests
            together (server-side batching), or None to run each alone.
    """
    import dataclasses

    from yolor_keras.serving.repository import ModelRegistry

    limits = limits or ServingLimits()
    if max_batch_size is not None:
        limits = dataclasses.replace(limits, max_batch_size=max_batch_size)
    kserve = _import_kserve()
    batcher = None
    if batching is not None:
        from yolor_keras.serving.batching import Batcher

        batcher = Batcher(batching, limits.max_inflight_pixels)
        # A thread waits on each request queued for a batch, so fewer
        # threads than admitted requests would cap the batches at `threads`.
        threads = max(threads, limits.max_concurrent_requests)
    registry = ModelRegistry(root, limits=limits, batcher=batcher)
    executor = futures.ThreadPoolExecutor(max_workers=threads)
    models = [
        build_detection_model(kserve, served, executor)
        for versions in registry.models.values()
        for served in versions.values()
    ]

    grpc_server = None
    if grpc_port is not None:
        from yolor_keras.serving.grpc_service import start_grpc_server

        grpc_server, grpc_port = start_grpc_server(
            registry, host, grpc_port, max_workers=threads, limits=limits
        )

    app = kserve.model_server.app

    class BoundModelServer(kserve.ModelServer):
        """KServe's server, listening on `host` instead of every interface."""

        def setup_event_loop(self):
            # Runs after `start` has built the REST server and before it
            # listens: the one moment the bind address can still change.
            rest_server = self._rest_server
            rest_server.config.host = host
            create_application = rest_server.create_application

            def create_application_then_sanitise_errors():
                create_application()
                # KServe's own catch-all answers with the exception's text.
                app.add_exception_handler(Exception, internal_error_handler)

            rest_server.create_application = create_application_then_sanitise_errors
            super().setup_event_loop()

    server = BoundModelServer(http_port=port, enable_grpc=False, workers=1)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_request_bytes)
    _add_routes(
        app, registry, executor, RequestSlots(limits.max_concurrent_requests, limits.queue_timeout)
    )
    served_list = ", ".join(
        f"{name} (versions {sorted(versions)})" for name, versions in registry.models.items()
    )
    logging.getLogger("kserve").info("Serving %s", served_list)
    print(
        f"Serving {served_list} at http://{host}:{port}/v1/models/NAME:predict"
        + (f" and gRPC {host}:{grpc_port}" if grpc_server else ""),
        flush=True,
    )
    if batching is not None:
        print(
            f"Batching concurrent requests: up to {batching.max_batch_size} images per model "
            f"call, {batching.batch_timeout_micros} us timeout, "
            f"{batching.num_batch_threads} batch thread(s)",
            flush=True,
        )
    try:
        server.start(models)
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2)
        executor.shutdown(wait=False)
        if batcher is not None:
            batcher.close()
