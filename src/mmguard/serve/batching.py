"""Dynamic micro-batching in front of one guard, with a bounded queue and one inference thread.

Requests for the same operation that arrive within ``max_wait_s`` of each other are
concatenated into one guard call (at most ``max_samples`` samples; a larger request runs alone)
and the result is split back per request, in order. Decisions (docs/serve.md):

* **one worker thread** runs every guard call (``ThreadPoolExecutor(max_workers=1)``): torch is
  never called concurrently, the event loop never blocks on inference, and calls that are not
  coalesced (drift tests, stream monitors) go through :meth:`MicroBatcher.call` on the same thread;
* **bounded admission** — :meth:`MicroBatcher.slot` admits at most ``queue_limit`` requests at a
  time (waiting or running); one more is refused at once with 503 (:class:`ServiceBusy`), so memory
  stays bounded under any load;
* **isolation** — if a coalesced call fails, each request is retried alone, so one request can
  never fail another; a request coalesced with nobody is exactly the in-process guard call;
* **wait from arrival** — the wait window starts when the first request of a batch arrived, so
  requests that queued behind a running call are dispatched without further delay;
* **drain** — :meth:`MicroBatcher.close` stops admitting, waits for admitted requests to finish
  (up to a timeout), then stops the collector and the thread; a later :meth:`MicroBatcher.start`
  (the app's lifespan run again, as test clients do) starts a new thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.serve.problems import ServiceBusy

Operation = Callable[[MultimodalBatch], Any]


class BatchObserver(Protocol):
    """What the batcher reports (implemented by :class:`mmguard.serve.metrics.ServeMetrics`)."""

    def queue_depth(self, depth: int) -> None: ...

    def batch(self, op: str, samples: int, requests: int) -> None: ...


@dataclass
class _Job:
    op: str
    batch: MultimodalBatch
    future: asyncio.Future[Any]
    arrived: float


class MicroBatcher:
    """Coalesce concurrent requests per operation into single guard calls (see the module docstring)."""

    def __init__(self, ops: Mapping[str, Operation], *, queue_limit: int, max_samples: int, max_wait_s: float,
                 observer: BatchObserver | None = None) -> None:
        self.ops = dict(ops)
        self.queue_limit = queue_limit
        self.max_samples = max_samples
        self.max_wait_s = max_wait_s
        self.observer = observer
        self.executor = _inference_thread()
        #: (op, samples, requests) of recent guard calls, newest last
        self.history: collections.deque[tuple[str, int, int]] = collections.deque(maxlen=1000)
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._carry: collections.deque[_Job] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self._inflight = 0
        self._accepting = False
        self._closed = False

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start the collector on the running event loop (again after :meth:`close`: a new inference thread)."""
        if self._closed:
            self.executor, self._closed = _inference_thread(), False
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._collect(), name="mmguard-batcher")
        self._accepting = True

    @property
    def ready(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        """Requests admitted and not finished (waiting or running)."""
        return self._inflight

    async def close(self, timeout: float) -> None:
        """Stop admitting, let admitted requests finish (up to ``timeout`` s), stop the collector."""
        self._accepting = False
        if self._idle is not None and self._inflight:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._leftovers():
            if not job.future.done():
                job.future.set_exception(ServiceBusy("the service is shutting down"))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._closed = True

    def _leftovers(self) -> list[_Job]:
        jobs = list(self._carry)
        self._carry.clear()
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                jobs.append(job)
        return jobs

    # ------------------------------------------------------------------ admission
    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit one request (503 when ``queue_limit`` requests are in flight or the service is closing)."""
        if not self._accepting:
            raise ServiceBusy("the service is not accepting requests (starting or shutting down)")
        if self._inflight >= self.queue_limit:
            raise ServiceBusy(f"the guard queue is full ({self._inflight} requests in flight, --queue "
                              f"{self.queue_limit}); retry shortly")
        self._inflight += 1
        assert self._idle is not None
        self._idle.clear()
        self._report_depth()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
            self._report_depth()

    def _report_depth(self) -> None:
        if self.observer is not None:
            self.observer.queue_depth(self._inflight)

    # ------------------------------------------------------------------ work
    async def submit(self, op: str, batch: MultimodalBatch) -> Any:
        """The result of ``ops[op](batch)``, possibly computed in one call with other requests' batches."""
        if op not in self.ops:
            raise KeyError(op)
        if self._queue is None:
            raise ServiceBusy("the service is not started")
        loop = asyncio.get_running_loop()
        job = _Job(op, batch, loop.create_future(), loop.time())
        self._queue.put_nowait(job)
        return await job.future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the inference thread (work that is not coalesced)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    # ------------------------------------------------------------------ collector
    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = self._carry.popleft() if self._carry else await self._queue.get()
            if first is None:
                break
            jobs, total = [first], len(first.batch)
            remaining = first.arrived + self.max_wait_s - loop.time()
            for attempt in range(2):  # take what is queued; wait out the window once; take again
                while total < self.max_samples:
                    try:
                        nxt = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    if total + len(nxt.batch) > self.max_samples:
                        self._carry.append(nxt)
                        break
                    jobs.append(nxt)
                    total += len(nxt.batch)
                if attempt == 0 and not stop and not self._carry and total < self.max_samples and remaining > 0:
                    await asyncio.sleep(remaining)
                else:
                    break
            await self._dispatch(jobs)
        for job in self._leftovers():  # stopped: nothing admitted may wait forever
            if not job.future.done():
                job.future.set_exception(ServiceBusy("the service is shutting down"))

    async def _dispatch(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[str, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.op, []).append(job)
        for op, group in groups.items():
            live = [j for j in group if not j.future.done()]  # a cancelled request is not computed
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._run, op, [j.batch for j in live])
            except BaseException as exc:  # the thread pool itself failed (shutdown); fail every request
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            samples = sum(len(j.batch) for j in live)
            self.history.append((op, samples, len(live)))
            if self.observer is not None:
                self.observer.batch(op, samples, len(live))
            for j, (ok, value) in zip(live, results, strict=True):
                if j.future.done():
                    continue
                if ok:
                    j.future.set_result(value)
                else:
                    j.future.set_exception(value)

    def _run(self, op: str, batches: Sequence[MultimodalBatch]) -> list[tuple[bool, Any]]:
        """On the inference thread: one call for all batches, split back; alone on failure."""
        fn = self.ops[op]
        if len(batches) > 1:
            try:
                whole = fn(concat_batches(list(batches)))
            except Exception:
                pass  # retried one by one below, so each request gets its own result or error
            else:
                out, start = [], 0
                for b in batches:
                    out.append((True, _take(whole, start, start + len(b))))
                    start += len(b)
                return out
        results: list[tuple[bool, Any]] = []
        for b in batches:
            try:
                results.append((True, fn(b)))
            except Exception as exc:
                results.append((False, exc))
        return results


def _inference_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmguard-guard")


def _take(result: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a guard result (a tensor, a batch or a dict of tensors)."""
    if isinstance(result, torch.Tensor):
        return result[start:stop]
    if isinstance(result, MultimodalBatch):
        return result.select(slice(start, stop))
    if isinstance(result, dict):
        return {k: _take(v, start, stop) for k, v in result.items()}
    raise TypeError(f"cannot split a {type(result).__name__} result per request")
