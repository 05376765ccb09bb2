"""Helpers shared by the service tests (tests/serve).

Guards are fitted with the contract's helpers (tests/contract/test_guard_contract.py: raw data at
offsets 50 to 150, spread ~10) in ``--quick`` mode. One extra guard, :class:`MaxAbsGuard`, exists
only for the micro-batching test: its score is the largest absolute standardised value per
modality (a maximum, so exact in any batch composition) and its correction clamps to ±3, so the
rows it returns cannot depend on which other rows share a call — unlike a guard built on matrix
products, whose float32 rounding depends on the batch size (MKL takes another kernel below four
rows). It is registered only while it is fitted or loaded (:func:`toy_registered`), so no other
test sees it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mmguard.guard as guard_mod
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits
from mmguard.guard import Guard, GuardConfig, create_guard, register_guard
from mmguard.serve.app import create_app
from mmguard.serve.settings import ServeSettings

with warnings.catch_warnings():  # starlette >= 1.10 prefers the httpx2 fork; httpx still works
    warnings.filterwarnings("ignore", message=".*install `httpx2`")
    from fastapi.testclient import TestClient

TOKEN = "s3cr3t-token-for-the-tests-0123456789"
NPZ = "application/x-npz"


@dataclass
class Fitted:
    guard: Guard
    splits: Splits
    directory: Path


def fit_and_save(name: str, batch: MultimodalBatch, directory: Path, config: dict[str, Any] | None = None
                 ) -> Fitted:
    splits = make_splits(batch, seed=0)
    guard = create_guard(name, {"false_alarm_rate": 0.1, **(config or {})}, quick=True)
    guard.fit(splits, seed=0)
    guard.save(directory)
    return Fitted(guard, splits, directory)


# ============================================================================ the batch-invariant guard
class MaxAbsModel(nn.Module):
    def __init__(self, m: int) -> None:
        super().__init__()
        self.register_buffer("bound", torch.full((m,), 3.0))


class MaxAbsGuard(Guard):
    name = "serve_maxabs"
    config_class = GuardConfig
    summary = "largest absolute standardised value per modality; clamps to +-3 (serve tests only)"
    flags = True
    corrects = True

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        self.model = MaxAbsModel(len(self.specs))
        return {}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return torch.stack([x.flat(n).abs().amax(1) for n in self.names], 1)

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        return {n: x.modalities[n].clamp(-self.model.bound[i], self.model.bound[i])  # type: ignore[union-attr]
                for i, n in enumerate(self.names)}

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return MaxAbsModel(len(self.specs))


@contextlib.contextmanager
def toy_registered() -> Iterator[None]:
    """:class:`MaxAbsGuard` in a throw-away copy of the registry (built-ins discovered)."""
    guard_mod.available_guards()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard_mod, "_REGISTRY", dict(guard_mod._REGISTRY))
        register_guard(MaxAbsGuard)
        yield


# ============================================================================ requests
def rows(batch: MultimodalBatch, start: int, stop: int) -> MultimodalBatch:
    return batch.select(slice(start, stop))


def json_body(batch: MultimodalBatch) -> dict[str, Any]:
    """The JSON request for ``batch`` (float32 values written exactly)."""
    return {"modalities": {n: batch.modalities[n].tolist() for n in batch.names}}


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def settings(**values: Any) -> ServeSettings:
    return ServeSettings.build(**values)


@contextlib.contextmanager
def serving(directory: Path, **values: Any) -> Iterator[TestClient]:
    """A started app (lifespan run) on ``directory`` and a test client (no network)."""
    with TestClient(create_app(directory, settings(**values))) as client:
        yield client


def assert_error(response: Any, status: int, *words: str) -> str:
    """One JSON error ``{"error": <one line>, "status": status}`` naming every word (case-insensitive)."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "status"} and body["status"] == status, body
    text = body["error"]
    assert isinstance(text, str) and text and "\n" not in text and "Traceback" not in text, text
    for w in words:
        assert w.lower() in text.lower(), (w, text)
    return text


def service_of(client: TestClient) -> Any:
    return client.app.state.service  # type: ignore[attr-defined]
