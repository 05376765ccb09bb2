"""The WebSocket stream: per-sample flags and the drift monitor's due tests, per connection.

The clean stream is the vector guard's test split (198 in-distribution samples: tests at 100,
125, 150, 175); the drifted stream is the same samples with a slow drift injected after sample
100 — every feature of ``v1`` moves by up to 1.5 training standard deviations, growing linearly.
Replies must equal the in-process guard and an in-process ``guard.drift_monitor()`` fed the same
chunks.
"""

from __future__ import annotations

import pytest
import torch
from serve_testutil import Fitted, json_body, npz_bytes, rows, serving, toy_registered

from mmguard.data.model import MultimodalBatch

CHUNK = 20
DRIFT_START = 100


@pytest.fixture(scope="module")
def client(vector: Fitted):
    with serving(vector.directory) as c:
        yield c


def slow_drift(fitted: Fitted, batch: MultimodalBatch) -> MultimodalBatch:
    std = fitted.splits.train.modalities["v1"].std(0)
    k = ((torch.arange(len(batch)) - DRIFT_START).clamp_min(0).float() / 100.0 * 1.5)[:, None]
    return batch.with_modalities({"v1": batch.modalities["v1"] + k * std})


def run_stream(client, fitted: Fitted, stream: MultimodalBatch) -> tuple[list[dict], list]:
    """Replies of the service and in-process monitor results for the same chunks."""
    monitor = fitted.guard.drift_monitor()
    replies, local = [], []
    with client.websocket_connect("/v1/stream") as ws:
        for start in range(0, len(stream), CHUNK):
            chunk = rows(stream, start, start + CHUNK)
            ws.send_json(json_body(chunk))
            reply = ws.receive_json()
            assert "error" not in reply, reply
            replies.append(reply)
            local.append(monitor.update(chunk))
            assert reply["samples"] == len(chunk) and reply["seen"] == min(start + CHUNK, len(stream))
            assert torch.equal(torch.tensor(reply["scores"], dtype=torch.float32), fitted.guard.score(chunk))
            assert torch.equal(torch.tensor(reply["flags"]), fitted.guard.flag(chunk))
    return replies, local


def check_against_local(replies: list[dict], local: list) -> None:
    for reply, tests in zip(replies, local, strict=True):
        assert [t["at"] for t in reply["drift"]["tests"]] == [c for c, _ in tests]
        for t, (_, result) in zip(reply["drift"]["tests"], tests, strict=True):
            assert t["ratio"] == result.to_dict()["ratio"] and t["drifted"] == result.drifted


def test_clean_stream_raises_no_alarm(client, vector: Fitted) -> None:
    replies, local = run_stream(client, vector, vector.splits.test)
    check_against_local(replies, local)
    last = replies[-1]["drift"]
    assert last["tests_total"] == 4 and last["alarms"] == 0
    assert not last["drifted"] and last["first_alarm"] is None and last["first_alarm_modalities"] == []
    assert [t["at"] for r in replies for t in r["drift"]["tests"]] == [100, 125, 150, 175]


def test_slow_drift_injected_mid_stream_is_detected_online(client, vector: Fitted) -> None:
    replies, local = run_stream(client, vector, slow_drift(vector, vector.splits.test))
    check_against_local(replies, local)
    last = replies[-1]["drift"]
    assert last["drifted"] and DRIFT_START < last["first_alarm"] <= len(vector.splits.test)
    assert last["first_alarm_modalities"] == ["v1"]
    alarms = [t for r in replies for t in r["drift"]["tests"] if t["drifted"]]
    assert alarms and alarms[0]["at"] == last["first_alarm"] and alarms[0]["flagged"] == ["v1"]
    assert all(not t["drifted"] for r in replies for t in r["drift"]["tests"] if t["at"] <= DRIFT_START)
    # the reply of the chunk in which the alarm fell says so at once
    hit = next(r for r in replies if any(t["drifted"] for t in r["drift"]["tests"]))
    assert hit["drift"]["first_alarm"] == last["first_alarm"]


def test_each_connection_has_its_own_monitor(client, vector: Fitted) -> None:
    chunk = json_body(rows(vector.splits.test, 0, 30))
    with client.websocket_connect("/v1/stream") as a, client.websocket_connect("/v1/stream") as b:
        for _ in range(3):
            a.send_json(chunk)
            assert "error" not in a.receive_json()
        b.send_json(chunk)
        assert b.receive_json()["seen"] == 30
        a.send_json(chunk)
        assert a.receive_json()["seen"] == 120


def test_bad_messages_get_an_error_reply_and_change_nothing(vector: Fitted) -> None:
    good = json_body(rows(vector.splits.test, 0, 10))
    with serving(vector.directory, max_body_mb=0.01) as c, c.websocket_connect("/v1/stream") as ws:
        ws.send_json(good)
        assert ws.receive_json()["seen"] == 10
        bad = [
            ({"modalities": {**good["modalities"], "zz": [[1.0]]}}, 422, "unknown modality"),
            ({"modalities": {"v0": good["modalities"]["v0"]}}, 422, "missing modality"),
            ("{not json", 400, "malformed JSON"),
            ({"modalities": {n: v * 30 for n, v in good["modalities"].items()}}, 413, "--max-body-mb"),
            ({"reset": False}, 422, "unknown field"),
        ]
        for i, (message, status, words) in enumerate(bad, start=1):
            if isinstance(message, str):
                ws.send_text(message)
            else:
                ws.send_json(message)
            reply = ws.receive_json()
            assert reply["seq"] == i and reply["status"] == status and words in reply["error"], reply
        ws.send_bytes(b"PK\x03\x04 garbage")
        assert ws.receive_json()["status"] == 400
        ws.send_json(good)
        reply = ws.receive_json()
        assert reply["seq"] == len(bad) + 2 and reply["seen"] == 20  # only the good chunks counted
        assert 'mmguard_errors_total{endpoint="/v1/stream",status="422"} 3.0' in c.get("/metrics").text


def test_npz_messages_and_reset(client, vector: Fitted) -> None:
    chunk = rows(vector.splits.test, 0, 15)
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(npz_bytes({n: chunk.modalities[n].numpy() for n in chunk.names}))
        reply = ws.receive_json()
        assert reply["seen"] == 15
        assert torch.equal(torch.tensor(reply["scores"], dtype=torch.float32), vector.guard.score(chunk))
        ws.send_json({"reset": True})
        assert ws.receive_json() == {"seq": 1, "reset": True}
        ws.send_json(json_body(chunk))
        assert ws.receive_json()["seen"] == 15


def test_a_guard_without_drift_detection_streams_flags_only(toy: Fitted) -> None:
    chunk = rows(toy.splits.test, 0, 12)
    with toy_registered(), serving(toy.directory) as c, c.websocket_connect("/v1/stream") as ws:
        ws.send_json(json_body(chunk))
        reply = ws.receive_json()
    assert reply["drift"] is None and reply["seen"] == 12
    assert torch.equal(torch.tensor(reply["flags"]), toy.guard.flag(chunk))
