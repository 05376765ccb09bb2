"""The service's settings: one validated, immutable object shared by the app and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from mmguard.errors import SpecError
from mmguard.guard import INFERENCE_CHUNK


class ServeSettings(BaseModel):
    """Settings of ``mmguard serve`` (defaults: local-only, one worker, 256 samples, 16 MB, 64 queued).

    The bearer token is resolved by :func:`mmguard.serve.auth.resolve_token`: ``token`` when set
    (programmatic use, tests), else the contents of ``token_file``, else ``$MMGUARD_SERVE_TOKEN``,
    else no authentication.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="interface to bind (default: this machine only)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (each loads its own guard)")
    device: str = Field("cpu", description="torch device of the guard: auto, cpu or cuda")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="torch backend: fp32, or bf16 autocast of the "
                                               "guard's forward passes (calibration stays fp32; docs/devices.md)")
    token_file: Path | None = Field(None, description="file holding the bearer token")
    token: SecretStr | None = Field(None, description="the bearer token itself (overrides token_file)")
    max_batch: int = Field(256, ge=1, le=1_000_000, description="samples per request")
    max_body_mb: float = Field(16.0, gt=0, le=4096, description="request body (and stream message) size limit")
    queue: int = Field(64, ge=1, le=100_000, description="requests admitted to the guard queue at once; more: 503")
    batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long the batcher waits for more requests")
    coalesce_samples: int = Field(INFERENCE_CHUNK, ge=1, description="samples per coalesced guard call")
    drain_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for queued requests")
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM); with ssl_keyfile")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM); with ssl_certfile")
    backend: Literal["torch", "onnx"] = Field("torch", description="what computes score/flag/transform/predict: "
                                              "the torch guard, or its ONNX export run by ONNX Runtime")
    onnx_model: Path | None = Field(None, description="backend onnx: an exported .onnx file of this guard "
                                    "(default: export the guard at startup)")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def build(cls, **values: object) -> ServeSettings:
        """Validated settings; a bad value is a one-line :class:`~mmguard.errors.SpecError`."""
        try:
            settings = cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            raise SpecError(f"serve: bad setting {where!r}: {err['msg']}") from None
        if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
            raise SpecError("serve: TLS needs both --ssl-certfile and --ssl-keyfile")
        for name in ("ssl_certfile", "ssl_keyfile"):
            path = getattr(settings, name)
            if path is not None and not path.is_file():
                raise SpecError(f"serve: --{name.replace('_', '-')} {str(path)!r} is not a file")
        if settings.precision != "fp32" and settings.backend != "torch":
            raise SpecError("serve: --precision bf16 needs --backend torch (the ONNX graph is float32)")
        if settings.onnx_model is not None and settings.backend != "onnx":
            raise SpecError("serve: --onnx-model needs --backend onnx")
        if settings.onnx_model is not None and not settings.onnx_model.is_file():
            raise SpecError(f"serve: --onnx-model {str(settings.onnx_model)!r} is not a file")
        return settings

    def public(self) -> dict[str, object]:
        """The limits a client may know (``GET /v1/info``): no paths, no token."""
        return {"max_batch": self.max_batch, "max_body_mb": self.max_body_mb, "queue": self.queue,
                "batch_wait_ms": self.batch_wait_ms, "coalesce_samples": self.coalesce_samples}
