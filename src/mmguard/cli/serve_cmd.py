"""``mmguard serve``: a fitted guard behind an HTTP/WebSocket API (FastAPI + uvicorn; docs/serve.md)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

import typer

from mmguard.cli import dataopts as opt
from mmguard.errors import SpecError

CONNECTION_HEADROOM = 64  # open connections allowed beyond --queue (idle keep-alive, streams, health checks)
WS_SLACK = 64 * 1024  # bytes a WebSocket frame may exceed --max-body-mb by before uvicorn closes the stream (1009)


def serve_command(
    guard_dir: Path = typer.Argument(..., help="Guard directory written by `mmguard fit`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="Worker processes; each loads the guard (memory x N)."),
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the bearer token (else "
                                           "$MMGUARD_SERVE_TOKEN; neither: no authentication)."),
    max_batch: int = typer.Option(256, "--max-batch", help="Samples per request."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Request body / stream message limit (413)."),
    queue: int = typer.Option(64, "--queue", help="Requests admitted to the guard at once; more get 503."),
    batch_wait_ms: float = typer.Option(2.0, "--batch-wait-ms", help="Micro-batching: wait this long for "
                                        "concurrent requests to coalesce."),
    max_connections: int | None = typer.Option(None, "--max-connections", help="Open connections before uvicorn "
                                               f"answers 503 (default: --queue + {CONNECTION_HEADROOM})."),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="TLS certificate (PEM)."),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, "
                                  "info, debug."),
    backend: str = typer.Option("torch", "--backend", help="torch: the guard itself; onnx: its ONNX export run "
                                "by ONNX Runtime (needs the export extra; docs/export.md)."),
    onnx_model: Path | None = typer.Option(None, "--onnx-model", help="With --backend onnx: a .onnx file written "
                                           "by `mmguard export` for this guard (default: export at startup)."),
) -> None:
    """Serve a guard: score, flag, transform, predict, drift tests and a drift-monitored stream.

    The guard is loaded (safetensors + JSON) and every setting checked before anything listens.
    """
    _require_serve_extra()
    from mmguard.serve.app import create_app
    from mmguard.serve.settings import ServeSettings

    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise SpecError(f"unknown --log-level {log_level!r}; use critical, error, warning, info or debug")
    if backend not in ("torch", "onnx"):
        raise SpecError(f"unknown --backend {backend!r}; use torch or onnx")
    if backend == "onnx":
        from mmguard.export.onnx import require_export_extra

        require_export_extra()
    if max_connections is not None and max_connections < 1:
        raise SpecError(f"--max-connections must be at least 1, got {max_connections}")
    settings = ServeSettings.build(host=host, port=port, workers=workers, device=device, precision=precision,
                                   token_file=token_file,
                                   max_batch=max_batch, max_body_mb=max_body_mb, queue=queue,
                                   batch_wait_ms=batch_wait_ms, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                                   backend=backend, onnx_model=onnx_model)
    app = create_app(guard_dir, settings)  # bad guard directory, device or token: one line, exit 2
    if app.state.service.token is None and not is_loopback(host):
        sys.stderr.write(f"mmguard: warning: serving on {host} without a token: anyone who can reach this port "
                         "can use the guard (--token-file or $MMGUARD_SERVE_TOKEN)\n")
    run_server(app, guard_dir, settings, log_level=log_level,
               max_connections=max_connections or settings.queue + CONNECTION_HEADROOM)


def _require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SpecError(f"mmguard serve needs the serve extra ({exc.name} is not installed): "
                        "pip install 'mmguard[serve]'") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(app: Any, guard_dir: Path, settings: Any, *, log_level: str, max_connections: int) -> None:
    """Run uvicorn until SIGINT/SIGTERM; shutdown is graceful (the lifespan drains the batcher)."""
    import uvicorn

    from mmguard.serve.app import GUARD_DIR_ENV, SETTINGS_ENV

    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": log_level, "server_header": False,
        "limit_concurrency": max_connections, "ws_max_size": settings.max_body_bytes + WS_SLACK,
        "timeout_graceful_shutdown": settings.drain_timeout_s,
        "ssl_certfile": None if settings.ssl_certfile is None else str(settings.ssl_certfile),
        "ssl_keyfile": None if settings.ssl_keyfile is None else str(settings.ssl_keyfile),
    }
    if settings.workers == 1:
        uvicorn.run(app, **options)
        return
    # worker processes import the app through a factory; the token is resolved again in each of them
    os.environ[GUARD_DIR_ENV] = str(Path(guard_dir).resolve())
    os.environ[SETTINGS_ENV] = settings.model_dump_json(exclude={"token"})
    uvicorn.run("mmguard.serve.app:app_from_environment", factory=True, workers=settings.workers, **options)
