"""Prometheus metrics (prometheus-client), one registry per app.

=============================================  =========  ===============================================
metric                                         type       labels / meaning
=============================================  =========  ===============================================
``mmguard_requests_total``                     counter    endpoint, method, status
``mmguard_request_duration_seconds``           histogram  endpoint (HTTP requests)
``mmguard_errors_total``                       counter    endpoint, status (every 4xx/5xx, stream too)
``mmguard_queue_depth``                        gauge      requests admitted and not finished
``mmguard_batch_size_samples``                 histogram  op; samples per guard call
``mmguard_batch_requests``                     histogram  op; requests coalesced into one guard call
``mmguard_scored_samples_total``               counter    samples scored (score, flag, stream)
``mmguard_flagged_samples_total``              counter    modality; samples flagged in that modality
``mmguard_flagged_fraction``                   gauge      modality; flagged / scored since start
``mmguard_drift_tests_total``                  counter    drift tests run (drift endpoint and streams)
``mmguard_drift_alarms_total``                 counter    modality; drift tests that flagged it
``mmguard_stream_connections``                 gauge      open stream connections
``mmguard_guard``                              info       kind, mmguard version
=============================================  =========  ===============================================

Endpoint labels are the app's route paths (an unknown path is counted as ``other``), so a
client cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import torch
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ServeMetrics:
    """The service's metrics; also the batcher's :class:`~mmguard.serve.batching.BatchObserver`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, modalities: Iterable[str], info: dict[str, str]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.modalities = tuple(modalities)
        self.requests = Counter("mmguard_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("mmguard_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("mmguard_errors", "error responses (4xx/5xx) by endpoint and status",
                              ["endpoint", "status"], registry=r)
        self.depth = Gauge("mmguard_queue_depth", "requests admitted to the guard queue and not finished",
                           registry=r)
        self.batch_samples = Histogram("mmguard_batch_size_samples", "samples per guard call", ["op"],
                                       buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("mmguard_batch_requests", "requests coalesced into one guard call", ["op"],
                                        buckets=SIZE_BUCKETS, registry=r)
        self.scored = Counter("mmguard_scored_samples", "samples scored", registry=r)
        self.flagged = Counter("mmguard_flagged_samples", "samples flagged, per modality", ["modality"], registry=r)
        self.flagged_fraction = Gauge("mmguard_flagged_fraction", "fraction of scored samples flagged since start, "
                                      "per modality", ["modality"], registry=r)
        self.drift_tests = Counter("mmguard_drift_tests", "drift tests run", registry=r)
        self.drift_alarms = Counter("mmguard_drift_alarms", "drift tests that flagged a modality", ["modality"],
                                    registry=r)
        self.streams = Gauge("mmguard_stream_connections", "open stream connections", registry=r)
        Info("mmguard_guard", "the guard being served", registry=r).info(info)
        for m in self.modalities:  # every modality is exported from the start, at 0
            self.flagged.labels(m)
            self.flagged_fraction.labels(m).set(0.0)
            self.drift_alarms.labels(m)
        self._scored = 0
        self._flagged = dict.fromkeys(self.modalities, 0)

    # ------------------------------------------------------------------ observers
    def queue_depth(self, depth: int) -> None:
        self.depth.set(depth)

    def batch(self, op: str, samples: int, requests: int) -> None:
        self.batch_samples.labels(op).observe(samples)
        self.batch_requests.labels(op).observe(requests)

    def observe_flags(self, flags: torch.Tensor) -> None:
        """Count (N, M) flags of scored samples."""
        n = int(flags.shape[0])
        if n == 0:
            return
        self._scored += n
        self.scored.inc(n)
        for m, count in zip(self.modalities, flags.sum(0).tolist(), strict=True):
            self._flagged[m] += int(count)
            self.flagged.labels(m).inc(int(count))
            self.flagged_fraction.labels(m).set(self._flagged[m] / self._scored)

    def observe_drift(self, flagged: Iterable[str]) -> None:
        self.drift_tests.inc()
        for m in flagged:
            self.drift_alarms.labels(m).inc()

    def observe_error(self, endpoint: str, status: int) -> None:
        self.errors.labels(endpoint, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: latency, request and error counts of every HTTP request, by route path."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, paths: Callable[[], set[str]]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.paths() else "other"
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            m = self.metrics
            m.latency.labels(endpoint).observe(time.perf_counter() - start)
            m.requests.labels(endpoint, scope.get("method", ""), str(status)).inc()
            if status >= 400:
                m.observe_error(endpoint, status)
