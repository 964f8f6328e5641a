"""`yolor serve`: TF Serving's REST API (and its gRPC API) on KServe's ModelServer.

Every ``ROOT/NAME/VERSION/`` export is served:

- ``POST /v1/models/NAME:predict`` (highest version) and
  ``POST /v1/models/NAME/versions/N:predict``, with TF Serving's request
  and response bodies (`rest_format`);
- ``GET /v1/models/NAME`` and ``GET /v1/models/NAME/versions/N``: TF
  Serving's model status;
- optionally gRPC ``PredictionService/Predict`` on another port.

The REST side runs on KServe's ModelServer (FastAPI + uvicorn); KServe's
V1 predict route already has TF Serving's shape, and the versioned and
status routes are added to its app. KServe binds ``0.0.0.0``; the server
here rebinds to the requested host (127.0.0.1 by default).
"""

import asyncio
import logging
import sys
from concurrent import futures

from yolor_keras.serving.repository import BadRequest
from yolor_keras.serving.repository import ModelNotFound
from yolor_keras.serving.rest_format import format_predict_response
from yolor_keras.serving.rest_format import parse_predict_request
from yolor_keras.serving.rest_format import signature_name_of


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


def internal_name(name, version):
    """The KServe registry name of one version (only reachable via our routes)."""
    return f"{name}/versions/{version}"


def build_detection_model(kserve, served, executor):
    """A KServe model running one `ServedModel` with TF Serving's REST bodies."""

    class DetectionModel(kserve.Model):
        def __init__(self):
            super().__init__(internal_name(served.name, served.version))
            self.served = served
            self.ready = True

        async def predict(self, payload, headers=None):
            try:
                if isinstance(payload, (bytes, str)):
                    raise BadRequest("The request body must be JSON (Content-Type: application/json).")
                signature_name = signature_name_of(payload)
                takes_encoded = self.served.input_spec(signature_name).dtype.name == "string"
                images, columnar = parse_predict_request(payload, takes_encoded)
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(
                    executor, self.served.predict, images, signature_name
                )
            except BadRequest as error:
                raise kserve.errors.InvalidInput(str(error)) from None
            return format_predict_response(outputs, columnar)

    return DetectionModel()


def _add_routes(app, registry):
    """TF Serving's versioned predict route and status routes, before KServe's own."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from kserve.protocol.rest.v1_endpoints import V1Endpoints

    def not_found(error):
        return JSONResponse(status_code=404, content={"error": str(error)})

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
            return JSONResponse(status_code=400, content={"error": str(error)})

    async def version_predict(model_name: str, version: str, request: Request):
        try:
            served = registry.get(model_name, version)
        except ModelNotFound as error:
            return not_found(error)
        except BadRequest as error:
            return JSONResponse(status_code=400, content={"error": str(error)})
        endpoints = V1Endpoints(app.state.yolor_dataplane)
        return await endpoints.predict(internal_name(served.name, served.version), request)

    async def latest_predict(model_name: str, request: Request):
        try:
            served = registry.get(model_name)
        except ModelNotFound as error:
            return not_found(error)
        endpoints = V1Endpoints(app.state.yolor_dataplane)
        return await endpoints.predict(internal_name(served.name, served.version), request)

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
):
    """Serves every exported model under `root` until interrupted.

    Args:
        root: folder with ``NAME/VERSION/saved_model.pb`` exports.
        host: address to listen on (127.0.0.1: this machine only; 0.0.0.0:
            every interface).
        port: REST port (TF Serving's default is 8501).
        grpc_port: gRPC PredictionService port (TF Serving's is 8500), or
            None for no gRPC.
        max_batch_size: most images accepted per request.
        threads: threads running model calls.
    """
    from yolor_keras.serving.repository import DEFAULT_MAX_BATCH_SIZE
    from yolor_keras.serving.repository import ModelRegistry

    kserve = _import_kserve()
    registry = ModelRegistry(root, max_batch_size=max_batch_size or DEFAULT_MAX_BATCH_SIZE)
    executor = futures.ThreadPoolExecutor(max_workers=threads)
    models = [
        build_detection_model(kserve, served, executor)
        for versions in registry.models.values()
        for served in versions.values()
    ]

    grpc_server = None
    if grpc_port is not None:
        from yolor_keras.serving.grpc_service import start_grpc_server

        grpc_server, grpc_port = start_grpc_server(registry, host, grpc_port, max_workers=threads)

    class BoundModelServer(kserve.ModelServer):
        """KServe's server, listening on `host` instead of every interface."""

        def setup_event_loop(self):
            # Runs after `start` has built the REST server and before it
            # listens: the one moment the bind address can still change.
            self._rest_server.config.host = host
            super().setup_event_loop()

    app = kserve.model_server.app
    server = BoundModelServer(http_port=port, enable_grpc=False, workers=1)
    app.state.yolor_dataplane = server.dataplane
    _add_routes(app, registry)
    served_list = ", ".join(
        f"{name} (versions {sorted(versions)})" for name, versions in registry.models.items()
    )
    logging.getLogger("kserve").info("Serving %s", served_list)
    print(
        f"Serving {served_list} at http://{host}:{port}/v1/models/NAME:predict"
        + (f" and gRPC {host}:{grpc_port}" if grpc_server else ""),
        flush=True,
    )
    try:
        server.start(models)
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2)
        executor.shutdown(wait=False)
