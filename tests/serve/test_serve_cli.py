"""``mmguard serve`` through the real entry point, in-process and without starting a server: bad
input is one line ``mmguard: error: ...`` and exit code 2; good input reaches uvicorn with the
settings asked for (``uvicorn.run`` is replaced by a recorder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from serve_testutil import TOKEN, Fitted

from mmguard.serve.app import GUARD_DIR_ENV, SETTINGS_ENV
from support import run_cli


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("MMGUARD_SERVE_TOKEN", raising=False)
    return calls


def _cases(tmp: Path, guard: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "short_token").write_text("abc\n")
    (tmp / "cert.pem").write_text("not really a certificate")
    return [
        ([str(tmp / "nowhere")], "does not exist"),
        ([str(tmp / "empty")], "guard.json"),
        ([str(tmp / "short_token")], "does not exist"),  # a file is not a guard directory
        ([str(guard), "--token-file", str(tmp / "missing_token")], "token file"),
        ([str(guard), "--token-file", str(tmp / "short_token")], "at least 16"),
        ([str(guard), "--device", "tpu"], "unknown device"),
        ([str(guard), "--max-batch", "0"], "max_batch"),
        ([str(guard), "--queue", "0"], "queue"),
        ([str(guard), "--max-body-mb", "-1"], "max_body_mb"),
        ([str(guard), "--port", "70000"], "port"),
        ([str(guard), "--ssl-certfile", str(tmp / "cert.pem")], "both"),
        ([str(guard), "--log-level", "loud"], "log-level"),
        ([str(guard), "--port", "eighty"], "--port"),
        ([str(guard), "--precision", "fp16"], "precision"),
        ([str(guard), "--precision", "bf16", "--backend", "onnx"], "--backend torch"),
    ]


def test_bad_input_is_one_line_and_exit_2(vector: Fitted, tmp_path: Path, recorded: list) -> None:
    for args, word in _cases(tmp_path, vector.directory):
        rc, out, err = run_cli(["serve", *args])
        lines = err.strip().splitlines()
        assert rc == 2, (args, rc, err)
        assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), (args, err)
        assert word.lower() in lines[0].lower(), (args, word, lines[0])
        assert "Traceback" not in err and out == ""
    assert recorded == []  # nothing was served


def test_good_input_reaches_uvicorn_with_the_settings(vector: Fitted, tmp_path: Path, recorded: list) -> None:
    rc, _, err = run_cli(["serve", str(vector.directory), "--port", "8123", "--max-batch", "64", "--queue", "8",
                          "--max-body-mb", "2", "--batch-wait-ms", "5"])
    assert rc == 0 and err == ""
    ((app, options),) = recorded
    service = app.state.service
    assert service.guard.name == "mmae" and service.token is None
    s = service.settings
    assert (s.host, s.port, s.max_batch, s.queue, s.max_body_mb, s.batch_wait_ms) == ("127.0.0.1", 8123, 64, 8, 2, 5)
    assert options["host"] == "127.0.0.1" and options["port"] == 8123 and options["server_header"] is False
    assert options["limit_concurrency"] == 8 + 64 and options["ws_max_size"] > 2 * 2**20
    assert "workers" not in options


def test_bf16_precision_reaches_the_guard_and_info(vector: Fitted, recorded: list) -> None:
    rc, _, err = run_cli(["serve", str(vector.directory), "--precision", "bf16"])
    assert rc == 0 and err == ""
    service = recorded[-1][0].state.service
    assert service.settings.precision == "bf16" and service.guard.precision == "bf16"
    assert service.info()["precision"] == "bf16"


def test_listening_beyond_loopback_without_a_token_warns(vector: Fitted, tmp_path: Path, recorded: list) -> None:
    rc, _, err = run_cli(["serve", str(vector.directory), "--host", "0.0.0.0"])
    assert rc == 0 and "warning" in err and "without a token" in err
    token = tmp_path / "token"
    token.write_text(TOKEN)
    rc, _, err = run_cli(["serve", str(vector.directory), "--host", "0.0.0.0", "--token-file", str(token)])
    assert rc == 0 and err == ""
    assert recorded[-1][0].state.service.token == TOKEN


def test_several_workers_load_the_guard_through_the_factory(vector: Fitted, tmp_path: Path, recorded: list,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GUARD_DIR_ENV, raising=False)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    rc, _, err = run_cli(["serve", str(vector.directory), "--workers", "2", "--token-file", str(token)])
    assert rc == 0, err
    target, options = recorded[-1]
    assert target == "mmguard.serve.app:app_from_environment" and options["factory"] and options["workers"] == 2
    import os

    settings = json.loads(os.environ[SETTINGS_ENV])
    assert "token" not in settings and settings["token_file"] == str(token) and settings["workers"] == 2
    assert TOKEN not in os.environ[SETTINGS_ENV]
    from mmguard.serve.app import app_from_environment

    app = app_from_environment()  # what each worker does
    assert app.state.service.token == TOKEN and app.state.service.guard.name == "mmae"
