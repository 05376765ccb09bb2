"""Bearer-token authentication: 401 without or with a wrong token, 200 with it; /health stays open;
the stream handshake is refused (1008); the token comes from the settings, a file or the environment."""

from __future__ import annotations

import pytest
from serve_testutil import TOKEN, Fitted, assert_error, json_body, rows, serving
from starlette.websockets import WebSocketDisconnect

from mmguard.errors import SpecError
from mmguard.serve.app import create_app
from mmguard.serve.auth import TOKEN_ENV, authorized
from mmguard.serve.settings import ServeSettings
from support import one_line

PROTECTED = [("get", "/ready"), ("get", "/v1/info"), ("get", "/metrics"), ("post", "/v1/score"),
             ("post", "/v1/flag"), ("post", "/v1/transform"), ("post", "/v1/drift"), ("post", "/v1/predict")]


@pytest.fixture(scope="module")
def client(vector: Fitted):
    with serving(vector.directory, token=TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def body(vector: Fitted) -> dict:
    return json_body(rows(vector.splits.test, 0, 3))


def call(client, method: str, path: str, body: dict, headers: dict | None = None):
    if method == "get":
        return client.get(path, headers=headers or {})
    return client.post(path, json=body, headers=headers or {})


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_401_without_or_with_a_wrong_token(client, body: dict, method: str, path: str) -> None:
    r = call(client, method, path, body)
    assert_error(r, 401, "missing", "bearer")
    assert r.headers["www-authenticate"].startswith("Bearer")
    wrong = (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN,
             "Bearer \xfc".encode("latin-1"))
    for header in wrong:
        assert_error(call(client, method, path, body, {"authorization": header}), 401, "wrong")


def test_200_with_the_token_and_health_open(client, body: dict) -> None:
    ok = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/health").status_code == 200
    assert client.get("/ready", headers=ok).status_code == 200
    assert client.get("/v1/info", headers=ok).status_code == 200
    assert client.get("/metrics", headers=ok).status_code == 200
    for path in ("/v1/score", "/v1/flag", "/v1/transform"):
        assert client.post(path, json=body, headers=ok).status_code == 200, path
    assert client.post("/v1/score", json=body, headers={"authorization": f"bearer {TOKEN}"}).status_code == 200


def test_unauthorized_requests_do_not_reach_the_guard(client, body: dict) -> None:
    """401 comes before the body is read: even a malformed body gets 401, not 400."""
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 401)


def test_stream_handshake_needs_the_token(client, body: dict) -> None:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/v1/stream"):
        pass
    assert info.value.code == 1008
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/v1/stream", headers={"authorization": "Bearer wrong-token-wrong-token"}):
        pass
    with client.websocket_connect("/v1/stream", headers={"authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send_json(body)
        assert ws.receive_json()["samples"] == 3


def test_token_from_file_and_environment(vector: Fitted, body: dict, tmp_path, monkeypatch) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    ok = {"authorization": f"Bearer {TOKEN}"}
    with serving(vector.directory, token_file=f) as c:
        assert c.post("/v1/score", json=body).status_code == 401
        assert c.post("/v1/score", json=body, headers=ok).status_code == 200
    monkeypatch.setenv(TOKEN_ENV, "environment-token-0123456789")
    with serving(vector.directory) as c:
        assert c.post("/v1/score", json=body, headers=ok).status_code == 401
        env_ok = {"authorization": "Bearer environment-token-0123456789"}
        assert c.post("/v1/score", json=body, headers=env_ok).status_code == 200
    with serving(vector.directory, token_file=f) as c:  # the file wins over the environment
        assert c.post("/v1/score", json=body, headers=ok).status_code == 200


@pytest.mark.parametrize(("kind", "words"), [
    ("short", ["at least 16"]), ("spaces", ["printable"]), ("missing", ["does not exist"]),
    ("binary", ["non-ascii"]), ("env-short", [TOKEN_ENV, "at least 16"])])
def test_bad_tokens_are_refused_in_one_line(vector: Fitted, tmp_path, monkeypatch, kind: str,
                                            words: list[str]) -> None:
    f = tmp_path / "token"
    values: dict = {"token_file": f}
    if kind == "short":
        f.write_text("abc\n")
    elif kind == "spaces":
        f.write_text("a token with spaces inside it\n")
    elif kind == "binary":
        f.write_bytes(b"\xff\xfe" * 20)
    elif kind == "env-short":
        monkeypatch.setenv(TOKEN_ENV, "short")
        values = {}
    with pytest.raises(SpecError) as info:
        create_app(vector.directory, ServeSettings.build(**values))
    one_line(info.value, *words)


def test_authorized_without_a_token_is_open() -> None:
    assert authorized(None, None) and authorized("Bearer anything", None)
    assert not authorized(None, TOKEN) and authorized(f"Bearer {TOKEN}", TOKEN)
