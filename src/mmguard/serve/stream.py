"""The WebSocket stream ``/v1/stream``: per-connection drift monitoring and per-sample flags.

Protocol (docs/serve.md): after the connection is accepted, the client sends chunks of samples
— a text message ``{"modalities": {...}}`` (the JSON request format) or a binary message holding
an NPZ — and gets one JSON reply per message, in order::

    {"seq": 0, "samples": 20, "seen": 20,
     "scores": [[...], ...], "flags": [[...], ...], "flagged": [...],        # guards that flag
     "drift": {"tests": [{"at": 100, "drifted": false, "ratio": {...}, "flagged": []}],
               "drifted": false, "first_alarm": null, "first_alarm_modalities": [],
               "tests_total": 1, "alarms": 0, "window": 100, "step": 25}}       # null without a detector

Each connection has its own :meth:`Guard.drift_monitor` (the last ``window`` samples, tested
every ``step`` new ones), so slow drift is detected online; ``seen`` counts the samples accepted
on this connection. ``{"reset": true}`` starts a fresh monitor (and count). A bad message gets
``{"seq": k, "error": "...", "status": 4xx}`` and changes nothing: the connection stays open and
the next message continues the stream. Authentication is the ``Authorization: Bearer`` header of
the handshake; without it the handshake is refused (close code 1008).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from mmguard.adapt.drift import DriftResult
from mmguard.errors import MMGuardError
from mmguard.serve import auth, codec
from mmguard.serve.problems import RequestError, from_mmguard
from mmguard.serve.service import GuardService

PATH = "/v1/stream"


class StreamSession:
    """The state of one stream connection: its drift monitor and message count."""

    def __init__(self, service: GuardService) -> None:
        self.service = service
        self.monitor = service.monitor()
        self.seq = 0
        self.seen = 0
        self.first_alarm_modalities: list[str] = []

    async def handle(self, text: str | None, data: bytes | None) -> dict[str, Any]:
        """The reply to one message (never raises for a bad message: the reply carries the error)."""
        seq, self.seq = self.seq, self.seq + 1
        try:
            return {"seq": seq, **await self._handle(text, data)}
        except MMGuardError as exc:
            err = from_mmguard(exc)
        except RequestError as exc:
            err = exc
        self.service.metrics.observe_error(PATH, err.status)
        return {"seq": seq, **err.body()}

    async def _handle(self, text: str | None, data: bytes | None) -> dict[str, Any]:
        limit = self.service.settings.max_body_bytes
        size = len(data) if data is not None else len((text or "").encode("utf-8", "replace"))
        if size > limit:
            raise RequestError(413, f"message of {size / 2**20:.1f} MB; the limit is "
                                    f"{self.service.settings.max_body_mb:g} MB (--max-body-mb)")
        if data is not None:
            arrays = codec.decode_npz(data, self.service.npz_limit)
        else:
            try:
                obj = json.loads(text or "")
            except RecursionError:
                raise RequestError(400, "malformed JSON: nested too deeply") from None
            except ValueError as exc:
                raise RequestError(400, f"malformed JSON: {exc}") from None
            if obj == {"reset": True}:
                self.monitor = self.service.monitor()
                self.seen = 0
                self.first_alarm_modalities = []
                return {"reset": True}
            arrays = codec.modalities_from_json(obj)
        batch = codec.to_batch(arrays, self.service.guard.specs, self.service.settings.max_batch)
        scores, tests = await self.service.stream_chunk(self.monitor, batch)
        reply: dict[str, Any] = {"samples": len(batch)}
        if scores is not None:
            flags = scores > 1.0
            reply.update(scores=scores.tolist(), flags=flags.tolist(), flagged=flags.any(1).tolist())
        self.seen += len(batch)
        reply["drift"] = self._drift(tests)
        reply["seen"] = self.seen
        return reply

    def _drift(self, tests: list[tuple[int, DriftResult]]) -> dict[str, Any] | None:
        m = self.monitor
        if m is None:
            return None
        out = []
        for count, result in tests:
            d = result.to_dict()
            if result.drifted and count == m.first_alarm:
                self.first_alarm_modalities = d["flagged"]
            out.append({"at": count, **d})
        return {"tests": out, "drifted": m.drifted, "first_alarm": m.first_alarm,
                "first_alarm_modalities": self.first_alarm_modalities, "tests_total": m.tests, "alarms": m.alarms,
                "window": m.detector.window, "step": m.step}


async def stream_endpoint(websocket: WebSocket) -> None:
    """Serve one stream connection until the client disconnects."""
    service: GuardService = websocket.app.state.service
    if not auth.authorized(websocket.headers.get("authorization"), service.token):
        service.metrics.observe_error(PATH, 401)
        await websocket.close(code=1008, reason="missing or wrong bearer token")
        return
    await websocket.accept()
    session = StreamSession(service)
    service.metrics.streams.inc()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            reply = await session.handle(message.get("text"), message.get("bytes"))
            await websocket.send_text(json.dumps(reply))
    except WebSocketDisconnect:
        pass
    finally:
        service.metrics.streams.dec()
