"""Dynamic micro-batching: coalesced requests get exactly what separate calls give; the bounded queue
answers 503 when full; one request cannot fail another; shutdown drains admitted requests.

To make coalescing certain rather than a matter of timing, the tests park the inference thread
on an event, send the requests, wait until all are admitted, then release it: requests that
queued behind a running call are dispatched together.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from serve_testutil import Fitted, assert_error, json_body, rows, service_of, serving, toy_registered

from mmguard.data.model import MultimodalBatch
from mmguard.serve.batching import MicroBatcher
from mmguard.serve.problems import ServiceBusy

SIZES = [1, 2, 3, 5, 8, 13, 1, 4, 2, 7]
OPS = ["/v1/score", "/v1/flag", "/v1/transform"]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def concurrent_requests(client, requests: list[tuple[str, dict]], *, admitted: int | None = None) -> list[Any]:
    """Send every request from its own thread while the inference thread is parked; release it once
    ``admitted`` (default: all) requests are in the queue; the responses in request order."""
    service = service_of(client)
    release = threading.Event()
    parked = service.batcher.executor.submit(release.wait, 20)
    out: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        path, body = requests[i]
        out[i] = client.post(path, json=body)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: service.batcher.depth == (len(requests) if admitted is None else admitted))
    finally:
        release.set()
        for t in threads:
            t.join(30)
        parked.result(5)
    return out


def split_requests(batch: MultimodalBatch) -> list[tuple[str, MultimodalBatch]]:
    out, start = [], 0
    for i, n in enumerate(SIZES):
        out.append((OPS[i % len(OPS)], rows(batch, start, start + n)))
        start += n
    return out


def expected(guard, path: str, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
    if path == "/v1/score":
        return {"scores": guard.score(batch)}
    if path == "/v1/flag":
        return {"flags": guard.flag(batch)}
    fixed = guard.transform(batch)
    return {n: fixed.modalities[n] for n in batch.names}


def received(path: str, body: dict) -> dict[str, torch.Tensor]:
    if path == "/v1/score":
        return {"scores": torch.tensor(body["scores"], dtype=torch.float32)}
    if path == "/v1/flag":
        return {"flags": torch.tensor(body["flags"])}
    return {n: torch.tensor(v, dtype=torch.float32) for n, v in body["modalities"].items()}


def test_coalesced_requests_equal_separate_calls_exactly(toy: Fitted) -> None:
    """A guard whose rows cannot depend on the batch (MaxAbsGuard): bit-identical results, so the
    batching itself (concatenation, one call, split back) adds nothing and mixes nothing up."""
    requests = split_requests(toy.splits.test)
    with toy_registered(), serving(toy.directory, batch_wait_ms=20) as c:
        threads: set[str] = set()
        ops = service_of(c).batcher.ops
        for op, fn in list(ops.items()):
            def recorded(batch, fn=fn):
                threads.add(threading.current_thread().name)
                return fn(batch)
            ops[op] = recorded
        responses = concurrent_requests(c, [(p, json_body(b)) for p, b in requests])
        history = list(service_of(c).batcher.history)
    for (path, batch), r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        want, got = expected(toy.guard, path, batch), received(path, r.json())
        assert set(want) == set(got)
        for k in want:
            assert torch.equal(got[k], want[k]), (path, len(batch), k)
    calls = [h for h in history if h[2] > 0]
    assert sum(h[2] for h in calls) == len(requests)
    assert len(calls) < len(requests) and max(h[2] for h in calls) >= 3, history  # really coalesced
    assert {h[0] for h in calls} == {"score", "transform"}  # score and flag share the score call
    assert len(threads) == 1 and threads.pop().startswith("mmguard-guard")  # one inference thread, off the loop


def test_coalesced_requests_of_a_real_guard_agree_to_float32_rounding(vector: Fitted) -> None:
    """mmae multiplies matrices: MKL's float32 rounding depends on the batch size, so coalesced rows
    may differ from separate calls in the last bits — never more."""
    requests = split_requests(vector.splits.test)
    with serving(vector.directory, batch_wait_ms=20) as c:
        responses = concurrent_requests(c, [(p, json_body(b)) for p, b in requests])
        assert max(h[2] for h in service_of(c).batcher.history) >= 3
    for (path, batch), r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        want, got = expected(vector.guard, path, batch), received(path, r.json())
        for k in want:
            if path == "/v1/flag":
                near = (vector.guard.score(batch) - 1.0).abs() < 1e-4
                assert torch.equal(got[k][~near], want[k][~near])
            else:
                np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-5, atol=1e-5 * 50)


def test_full_queue_answers_503(vector: Fitted) -> None:
    batch = json_body(rows(vector.splits.test, 0, 4))
    with serving(vector.directory, queue=1) as c:
        service = service_of(c)
        release = threading.Event()
        parked = service.batcher.executor.submit(release.wait, 20)
        first: list[Any] = []
        t = threading.Thread(target=lambda: first.append(c.post("/v1/score", json=batch)))
        t.start()
        try:
            wait_until(lambda: service.batcher.depth == 1)
            r = c.post("/v1/flag", json=batch)
            assert_error(r, 503, "queue is full", "--queue 1")
            assert r.headers["retry-after"] == "1"
            with c.websocket_connect("/v1/stream") as ws:  # a stream chunk is refused too, and counts nothing
                ws.send_json(batch)
                reply = ws.receive_json()
                assert reply["status"] == 503 and "queue is full" in reply["error"]
                release.set()
                t.join(30)
                ws.send_json(batch)
                assert ws.receive_json()["seen"] == 4
        finally:
            release.set()
            t.join(30)
            parked.result(5)
        assert first[0].status_code == 200
        assert c.post("/v1/flag", json=batch).status_code == 200  # the slot was given back
        assert 'mmguard_requests_total{endpoint="/v1/flag",method="POST",status="503"} 1.0' in c.get("/metrics").text


def test_shutdown_drains_and_then_refuses(vector: Fitted) -> None:
    batch = json_body(rows(vector.splits.test, 0, 4))
    with serving(vector.directory) as c:
        service = service_of(c)
        assert service.ready and c.post("/v1/score", json=batch).status_code == 200
    assert not service.ready
    with pytest.raises(ServiceBusy):
        asyncio.run(_enter(service.batcher))


async def _enter(batcher: MicroBatcher) -> None:
    async with batcher.slot():
        pass


# ============================================================================ the batcher alone
def vec(values: list[float]) -> MultimodalBatch:
    return MultimodalBatch.from_arrays({"x": np.array(values, dtype=np.float32)[:, None]})


def doubled_unless_13(batch: MultimodalBatch) -> torch.Tensor:
    x = batch.modalities["x"][:, 0]
    if bool((x == 13).any()):
        raise ValueError("13 is refused")
    return x * 2


def test_one_failing_request_does_not_fail_the_others() -> None:
    async def main() -> tuple[list[Any], list[tuple[str, int, int]]]:
        b = MicroBatcher({"double": doubled_unless_13}, queue_limit=10, max_samples=100, max_wait_s=0.05)
        await b.start()

        async def one(values: list[float]) -> Any:
            async with b.slot():
                try:
                    return (await b.submit("double", vec(values))).tolist()
                except ValueError as exc:
                    return str(exc)

        out = await asyncio.gather(one([1, 2]), one([13]), one([3]), one([4, 5, 6]))
        await b.close(1.0)
        return list(out), list(b.history)

    out, history = asyncio.run(main())
    assert out == [[2, 4], "13 is refused", [6], [8, 10, 12]]
    assert history == [("double", 7, 4)]


def test_large_requests_run_alone_and_order_is_kept() -> None:
    async def main() -> tuple[list[Any], list[tuple[str, int, int]]]:
        b = MicroBatcher({"double": doubled_unless_13}, queue_limit=10, max_samples=4, max_wait_s=0.02)
        await b.start()

        async def one(values: list[float]) -> Any:
            async with b.slot():
                return (await b.submit("double", vec(values))).tolist()

        out = await asyncio.gather(one([1]), one([2, 3]), one([4, 5, 6, 7, 8]), one([9]), one([10]))
        await b.close(1.0)
        return list(out), list(b.history)

    out, history = asyncio.run(main())
    assert out == [[2], [4, 6], [8, 10, 12, 14, 16], [18], [20]]
    assert [h[1] for h in history] == [3, 5, 2] and all(h[1] <= 4 or h[2] == 1 for h in history)


def test_queue_limit_and_close_drain() -> None:
    async def main() -> tuple[list[Any], bool]:
        b = MicroBatcher({"double": doubled_unless_13}, queue_limit=2, max_samples=100, max_wait_s=0.05)
        await b.start()
        results: list[Any] = []

        async def one(values: list[float]) -> None:
            try:
                async with b.slot():
                    results.append((await b.submit("double", vec(values))).tolist())
            except ServiceBusy as exc:
                results.append(exc.status)

        tasks = [asyncio.create_task(one([i])) for i in (1, 2, 3)]
        await asyncio.sleep(0)  # all three try to enter; the third finds the queue full
        await b.close(5.0)  # waits for the two admitted ones
        await asyncio.gather(*tasks)
        return results, b.ready

    results, ready = asyncio.run(main())
    assert sorted(map(str, results)) == ["503", "[2.0]", "[4.0]"] and not ready


def test_a_closed_batcher_starts_again_with_a_new_thread() -> None:
    """The app's lifespan may run more than once (a test client entered twice, schemathesis per test)."""
    async def cycle(b: MicroBatcher) -> list[float]:
        await b.start()
        async with b.slot():
            out = (await b.submit("double", vec([1, 2]))).tolist()
        await b.close(1.0)
        return out

    b = MicroBatcher({"double": doubled_unless_13}, queue_limit=2, max_samples=100, max_wait_s=0.0)
    assert asyncio.run(cycle(b)) == [2, 4]
    assert asyncio.run(cycle(b)) == [2, 4] and not b.ready


def test_the_app_serves_again_after_its_lifespan_ran_once(vector: Fitted) -> None:
    from serve_testutil import TestClient, settings

    from mmguard.serve.app import create_app

    app = create_app(vector.directory, settings())
    body = json_body(rows(vector.splits.test, 0, 3))
    for _ in range(2):
        with TestClient(app) as c:
            assert c.post("/v1/score", json=body).status_code == 200
