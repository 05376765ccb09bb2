"""The HTTP application: ``create_app(guard_dir, settings) -> FastAPI``.

Endpoints (docs/serve.md): ``GET /health`` (liveness, open), ``GET /ready``, ``GET /v1/info``,
``POST /v1/score|flag|transform|predict|drift``, ``GET /metrics``, WebSocket ``/v1/stream``.
Every error is ``{"error": "<one line>", "status": <code>}`` with a 4xx code (503 when the queue is
full or the service is shutting down); no stack trace ever reaches a client. No CORS middleware
(browsers on other origins cannot call the service); no OpenAPI/docs pages (they would expose the
API surface unauthenticated and load scripts from the internet) — the OpenAPI schema, completed for
the loaded guard by :mod:`mmguard.serve.openapi`, is ``app.openapi()`` in Python only.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import mmguard
from mmguard.errors import MMGuardError, SpecError
from mmguard.guard import load_guard
from mmguard.serve import auth, codec, openapi, stream
from mmguard.serve.metrics import MetricsMiddleware
from mmguard.serve.problems import RequestError, from_mmguard
from mmguard.serve.service import GuardService
from mmguard.serve.settings import ServeSettings

GUARD_DIR_ENV = "MMGUARD_SERVE_GUARD_DIR"
SETTINGS_ENV = "MMGUARD_SERVE_SETTINGS"
BODY_LIMIT_MSG = "request body of more than {mb:g} MB (--max-body-mb)"


def create_app(guard_dir: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """Load the guard (safetensors + JSON, :func:`~mmguard.guard.load_guard`) and build the app.

    A bad guard directory, device or token is a one-line :class:`~mmguard.errors.MMGuardError`
    raised here, before anything listens.
    """
    settings = settings or ServeSettings()
    token = auth.resolve_token(settings)
    service = GuardService(load_guard(guard_dir, device=settings.device, precision=settings.precision), settings, token)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()  # drain: admitted requests finish, then the inference thread stops

    app = FastAPI(title="mmguard", version=mmguard.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    paths = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, paths=lambda: paths)
    _describe_api(app, service)
    return app


def _describe_api(app: FastAPI, service: GuardService) -> None:
    """``app.openapi()``: FastAPI's schema completed for this guard (:mod:`mmguard.serve.openapi`; not served)."""
    generated = app.openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.describe(
                generated(), service.guard.specs, max_batch=service.settings.max_batch,
                max_drift=service.max_drift_samples, window=service.drift_window, secured=service.token is not None)
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers > 1``): guard directory and settings from the
    environment written by ``mmguard serve`` (the token is resolved again in each worker)."""
    guard_dir = os.environ.get(GUARD_DIR_ENV)
    if not guard_dir:
        raise SpecError(f"${GUARD_DIR_ENV} is not set (start the service with `mmguard serve`)")
    values = json.loads(os.environ.get(SETTINGS_ENV, "{}"))
    return create_app(guard_dir, ServeSettings.build(**values))


# ====================================================================== errors
def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)


def _add_error_handlers(app: FastAPI) -> None:
    async def request_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return _error(exc)

    async def mmguard_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MMGuardError)
        return _error(from_mmguard(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        words = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return _error(RequestError(exc.status_code, f"{words}: {request.method} {request.url.path[:100]}",
                                   dict(exc.headers or {})))

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error(RequestError(422, f"invalid {where}: {first.get('msg', 'invalid value')}"))

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:  # a bug: logged by the server only
        return JSONResponse({"error": "internal error (see the server log)", "status": 500}, status_code=500)

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(MMGuardError, mmguard_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


# ====================================================================== routes
async def read_body(request: Request, limit_mb: float) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit_mb`` MiB (never read whole first)."""
    limit = int(limit_mb * 2**20)
    too_big = RequestError(413, BODY_LIMIT_MSG.format(mb=limit_mb))
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"malformed Content-Length {declared[:40]!r}")
        if int(declared) > limit:
            raise too_big
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the client disconnected while sending the body") from None
    return b"".join(chunks)


def _add_routes(app: FastAPI, service: GuardService) -> None:
    def authenticate(request: Request) -> None:
        auth.require(request.headers.get("authorization"), service.token)

    guarded = [Depends(authenticate)]
    names = list(service.guard.names)

    async def batch_of(request: Request, max_samples: int | None = None) -> tuple[Any, str]:
        fmt = codec.media_type(request.headers.get("content-type"))
        body = await read_body(request, service.settings.max_body_mb)
        return service.decode(body, fmt, max_samples), fmt

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers (no authentication)."""
        return {"status": "ok"}

    @app.get("/ready", dependencies=guarded)
    async def ready() -> JSONResponse:
        """Readiness: the guard is loaded and the batcher accepts requests."""
        if not service.ready:
            return _error(RequestError(503, "not ready: the service is starting or shutting down"))
        return JSONResponse({"ready": True, "kind": service.guard.name})

    @app.get("/v1/info", dependencies=guarded)
    async def info() -> JSONResponse:
        return JSONResponse(service.info())

    @app.post("/v1/score", dependencies=guarded)
    async def score(request: Request) -> JSONResponse:
        service.require("flag")
        batch, _ = await batch_of(request)
        scores = await service.score(batch)
        return JSONResponse({"modalities": names, "threshold": 1.0, "scores": scores.tolist()})

    @app.post("/v1/flag", dependencies=guarded)
    async def flag(request: Request) -> JSONResponse:
        service.require("flag")
        batch, _ = await batch_of(request)
        flags = await service.score(batch) > 1.0
        return JSONResponse({"modalities": names, "flags": flags.tolist(), "flagged": flags.any(1).tolist()})

    @app.post("/v1/transform", dependencies=guarded)
    async def transform(request: Request) -> Response:
        service.require("correct")
        batch, fmt = await batch_of(request)
        fixed = await service.transform(batch)
        if fmt == "npz":
            return Response(codec.encode_npz(codec.batch_arrays(fixed)), media_type=codec.NPZ)
        return JSONResponse(codec.batch_json(fixed))

    @app.post("/v1/predict", dependencies=guarded)
    async def predict(request: Request) -> JSONResponse:
        service.require("predict")
        batch, _ = await batch_of(request)
        return JSONResponse({"predictions": (await service.predict(batch)).tolist()})

    @app.post("/v1/drift", dependencies=guarded)
    async def drift(request: Request) -> JSONResponse:
        service.require_drift()
        batch, _ = await batch_of(request, service.max_drift_samples)
        result = await service.drift(batch)
        return JSONResponse({**result.to_dict(), "window": service.drift_window, "samples": len(batch)})

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    app.add_api_websocket_route(stream.PATH, stream.stream_endpoint)
