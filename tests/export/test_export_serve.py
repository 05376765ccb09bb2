"""``mmguard serve --backend onnx``: the service exports the guard at startup (or takes an exported
file) and answers through ONNX Runtime with the torch guard's numbers within the export tolerance;
drift tests still use the guard's own detector. Bad backend settings are one line, exit 2."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from export_testutil import FIX_TOL, SCORE_TOL, faulty

from mmguard.errors import SpecError
from mmguard.export.runtime import OnnxGuard
from mmguard.serve.app import create_app
from mmguard.serve.settings import ServeSettings
from support import run_cli

with warnings.catch_warnings():  # starlette >= 1.10 prefers the httpx2 fork; httpx still works
    warnings.filterwarnings("ignore", message=".*install `httpx2`")
    from fastapi.testclient import TestClient


def body(batch) -> dict[str, Any]:
    return {"modalities": {n: batch.modalities[n].tolist() for n in batch.names}}


@pytest.mark.parametrize("from_file", [False, True], ids=["export-at-startup", "onnx-model"])
def test_onnx_backend_gives_the_torch_numbers(get_exported, from_file: bool) -> None:
    e = get_exported("mmae", "vector")
    settings = ServeSettings.build(backend="onnx", onnx_model=e.onnx_path if from_file else None)
    batch = faulty(e.splits.test).select(slice(0, 40))
    with TestClient(create_app(e.directory, settings)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert isinstance(service.engine, OnnxGuard) and service.guard.name == "mmae"
        assert client.get("/v1/info").json()["backend"] == "onnx"
        r = client.post("/v1/score", json=body(batch))
        assert r.status_code == 200, r.text
        got, want = torch.tensor(r.json()["scores"], dtype=torch.float32), e.guard.score(batch)
        assert float(((got - want).abs() / want.abs().clamp_min(1.0)).max()) <= SCORE_TOL
        r = client.post("/v1/transform", json=body(batch))
        assert r.status_code == 200, r.text
        fixed = e.guard.transform(batch)
        for n in batch.names:
            diff = (torch.tensor(r.json()["modalities"][n], dtype=torch.float32) - fixed.modalities[n]).abs()
            assert float((diff / e.guard.standardizer.std[n]).max()) <= FIX_TOL, n
        r = client.post("/v1/score", json={"modalities": {"v0": [[1.0, 2.0, 3.0, 4.0]]}})
        assert r.status_code == 422 and "missing" in r.json()["error"]
        window = e.guard.drift_detector.window
        r = client.post("/v1/drift", json=body(e.splits.train.select(slice(0, window))))
        assert r.status_code == 200, r.text


def test_onnx_model_of_another_guard_is_refused(get_exported) -> None:
    e, other = get_exported("mmae", "vector"), get_exported("mmssl", "image")
    with pytest.raises(SpecError, match="'mmssl'"):
        create_app(e.directory, ServeSettings.build(backend="onnx", onnx_model=other.onnx_path))
    with pytest.raises(SpecError, match="needs --backend onnx"):
        ServeSettings.build(onnx_model=e.onnx_path)


def test_serve_cli_backend_option(get_exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    monkeypatch.delenv("MMGUARD_SERVE_TOKEN", raising=False)
    e = get_exported("mmae", "vector")
    for args, word in [(["--backend", "tpu"], "--backend"), (["--onnx-model", str(e.onnx_path)], "--backend onnx"),
                       (["--backend", "onnx", "--onnx-model", str(tmp_path / "none.onnx")], "not a file")]:
        rc, out, err = run_cli(["serve", str(e.directory), *args])
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and word.lower() in lines[0].lower(), (args, err)
        assert "Traceback" not in err and out == ""
    assert calls == []
    rc, _, err = run_cli(["serve", str(e.directory), "--backend", "onnx", "--onnx-model", str(e.onnx_path)])
    assert rc == 0 and err == "", err
    (app,) = calls
    assert app.state.service.settings.backend == "onnx" and isinstance(app.state.service.engine, OnnxGuard)
