"""The guard behind the endpoints: decoding, admission, coalesced guard calls, metrics.

:class:`GuardService` is what the HTTP routes (:mod:`mmguard.serve.app`) and the stream
(:mod:`mmguard.serve.stream`) call. It owns the loaded guard, the micro-batcher (one inference
thread), the metrics and the resolved token; every guard call goes through the batcher, so
torch is never called from two threads.
"""

from __future__ import annotations

from typing import Any

import torch

import mmguard
from mmguard.adapt.drift import DriftResult
from mmguard.data.model import MultimodalBatch
from mmguard.errors import MMGuardError
from mmguard.guard import Guard, GuardDriftMonitor
from mmguard.serve import codec
from mmguard.serve.batching import MicroBatcher
from mmguard.serve.metrics import ServeMetrics
from mmguard.serve.problems import RequestError, from_mmguard
from mmguard.serve.settings import ServeSettings

#: capability -> (verb in messages, guard class flag)
CAPABILITIES = {"flag": "flag", "correct": "correct data", "predict": "predict"}
#: what an infinite or NaN score or drift ratio is answered as: beyond every threshold (and valid JSON)
BEYOND = float(torch.finfo(torch.float32).max)


class GuardService:
    """One loaded guard served to many clients (see the module docstring)."""

    def __init__(self, guard: Guard, settings: ServeSettings, token: str | None) -> None:
        self.guard, self.settings, self.token = guard, settings, token
        #: what computes score/transform/predict: the guard itself, or its ONNX export (``--backend onnx``);
        #: drift tests and the stream's drift monitors always use the guard's own detector
        self.engine: Any = guard if settings.backend == "torch" else _onnx_engine(guard, settings)
        self.metrics = ServeMetrics(guard.names, {"kind": guard.name, "mmguard_version": mmguard.__version__})
        e = self.engine
        self.batcher = MicroBatcher({"score": e.score, "transform": e.transform, "predict": e.predict},
                                    queue_limit=settings.queue, max_samples=settings.coalesce_samples,
                                    max_wait_s=settings.batch_wait_ms / 1000.0, observer=self.metrics)
        self.npz_limit = codec.npz_limit(guard.specs, self.max_drift_samples)

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        await self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close(self.settings.drain_timeout_s)

    @property
    def ready(self) -> bool:
        return self.batcher.ready

    # ------------------------------------------------------------------ description
    @property
    def drift_window(self) -> int | None:
        det = self.guard.drift_detector
        return None if det is None else det.window

    @property
    def max_drift_samples(self) -> int:
        """A drift window may exceed ``--max-batch``: the drift endpoint takes up to one window more."""
        return max(self.settings.max_batch, self.drift_window or 0)

    def info(self) -> dict[str, Any]:
        g = self.guard
        det = g.drift_detector
        return {
            "kind": g.name,
            "summary": type(g).summary,
            "capabilities": g.capabilities(),
            "modalities": [s.to_dict() for s in g.specs],
            "mmguard_version": mmguard.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "device": str(g.device),
            "precision": g.precision,
            "backend": self.settings.backend,
            "false_alarm_rate": g.config.false_alarm_rate,
            "score_threshold": 1.0,
            "drift": None if det is None else {"window": det.window, "step": det.config.step,
                                               "alpha": det.config.alpha},
            "formats": [codec.JSON, codec.NPZ],
            "limits": self.settings.public(),
        }

    def require(self, capability: str) -> None:
        """404 naming the capability when the guard lacks it."""
        if not self.guard.capabilities()[capability]:
            can = [k for k, v in self.guard.capabilities().items() if v]
            raise RequestError(404, f"guard {self.guard.name!r} cannot {CAPABILITIES[capability]} (capability "
                                    f"{capability!r}); it can: {', '.join(can)} (see GET /v1/info)")

    def require_drift(self) -> None:
        if self.guard.drift_detector is None:
            raise RequestError(409, f"guard {self.guard.name!r} was fitted without drift detection (config drift: "
                                    "null); refit it with a drift config to use drift tests")

    # ------------------------------------------------------------------ decoding
    def decode(self, body: bytes, fmt: str, max_samples: int | None = None) -> MultimodalBatch:
        """A checked batch from a JSON or NPZ body (``fmt``: ``json`` or ``npz``)."""
        if not body:
            raise RequestError(400, "empty request body")
        arrays = codec.decode_json(body) if fmt == "json" else codec.decode_npz(body, self.npz_limit)
        return codec.to_batch(arrays, self.guard.specs, self.settings.max_batch if max_samples is None
                              else max_samples)

    # ------------------------------------------------------------------ guard calls
    async def score(self, batch: MultimodalBatch) -> torch.Tensor:
        """(N, M) normalised scores (1.0 = threshold); coalesced with concurrent requests."""
        self.require("flag")
        async with self.batcher.slot():
            return await self._scores(batch)

    async def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Corrected data; 422 when the guard's output is not finite (input far outside the fitted data)."""
        self.require("correct")
        async with self.batcher.slot():
            fixed: MultimodalBatch = await _guarded(self.batcher.submit("transform", batch))
        for name in fixed.names:
            _require_finite(fixed.modalities[name], f"the corrected values of modality {name!r}")
        return fixed

    async def predict(self, batch: MultimodalBatch) -> torch.Tensor:
        self.require("predict")
        async with self.batcher.slot():
            predictions: torch.Tensor = await _guarded(self.batcher.submit("predict", batch))
        return _require_finite(predictions, "the predictions")

    async def drift(self, batch: MultimodalBatch) -> DriftResult:
        """Drift test of the last ``window`` samples of ``batch`` (raw units)."""
        self.require_drift()
        async with self.batcher.slot():
            result: DriftResult = beyond_threshold(await _guarded(self.batcher.call(self.guard.drift_test, batch)))
        self.metrics.observe_drift(_flagged(result))
        return result

    def monitor(self) -> GuardDriftMonitor | None:
        """A fresh stream monitor, or ``None`` for a guard without drift detection."""
        return None if self.guard.drift_detector is None else self.guard.drift_monitor()

    async def stream_chunk(self, monitor: GuardDriftMonitor | None, batch: MultimodalBatch
                           ) -> tuple[torch.Tensor | None, list[tuple[int, DriftResult]]]:
        """Scores of a stream chunk (when the guard flags) and the drift tests that fell due in it.

        Admitted as one request: when the queue is full nothing happens (the monitor is unchanged)."""
        async with self.batcher.slot():
            scores = await self._scores(batch) if self.guard.flags else None
            tests: list[tuple[int, DriftResult]] = []
            if monitor is not None:
                due = await _guarded(self.batcher.call(monitor.update, batch))
                tests = [(at, beyond_threshold(result)) for at, result in due]
        for _, result in tests:
            self.metrics.observe_drift(_flagged(result))
        return scores, tests

    async def _scores(self, batch: MultimodalBatch) -> torch.Tensor:
        scores = beyond_threshold(await _guarded(self.batcher.submit("score", batch)))
        self.metrics.observe_flags(scores > 1.0)
        return scores


def _onnx_engine(guard: Guard, settings: ServeSettings) -> Any:
    """The guard's ONNX export run by ONNX Runtime: ``settings.onnx_model`` (checked to match the guard)
    or a fresh export of the guard at startup (one intra-op thread)."""
    from mmguard.export.runtime import OnnxGuard

    if settings.onnx_model is None:
        return OnnxGuard.from_guard(guard)
    engine = OnnxGuard(settings.onnx_model)
    engine.check_matches(guard)
    return engine


async def _guarded(awaitable: Any) -> Any:
    """Await a guard call; mmguard's one-line user errors become 4xx :class:`RequestError`s."""
    try:
        return await awaitable
    except MMGuardError as exc:
        raise from_mmguard(exc) from None


def beyond_threshold(values: Any) -> Any:
    """Scores (a tensor) or a drift result with every infinite or NaN value replaced by :data:`BEYOND`.

    Finite float32 input far outside the data a guard was fitted on (a sensor stuck at 1e19) can overflow
    a guard's float32 arithmetic: in-process ``guard.score`` then returns inf or NaN. The service answers
    such a value as float32's largest number — beyond every threshold, so flagged — because JSON has no
    inf or NaN, and because a NaN score would otherwise compare as *not* flagged on the most broken data.
    """
    if isinstance(values, DriftResult):
        bad = ~torch.isfinite(values.ratio)
        if not bool(bad.any()):
            return values
        return DriftResult(values.names, beyond_threshold(values.ratio), values.flagged | bad)
    if not values.is_floating_point() or bool(torch.isfinite(values).all()):
        return values
    return torch.nan_to_num(values, nan=BEYOND, posinf=BEYOND, neginf=-BEYOND)


def _require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` unless a floating-point entry is inf/NaN: then 422 naming the first such sample."""
    if values.is_floating_point():
        finite = torch.isfinite(values.reshape(len(values), -1)).all(1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise RequestError(422, f"{what} are not finite (first at sample {first}): the input is too far "
                                    "outside the data the guard was fitted on for its float32 arithmetic")
    return values


def _flagged(result: DriftResult) -> list[str]:
    return [n for n, f in zip(result.names, result.flagged.tolist(), strict=True) if f]
