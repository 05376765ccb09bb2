"""Test-time adaptation of the downstream model on a stream of unlabeled samples.

:class:`AdaptiveDownstream` wraps a trained :class:`~mmguard.downstream.model.Downstream` and
processes a stream chunk by chunk (standardised with the *training* statistics, the units the
model was trained in). It keeps the most recent ``window`` samples and, once adaptation is
active, predicts each chunk with one of (docs/drift.md):

* ``none`` — the model as trained;
* ``stats`` — the window re-standardised with its own class-balanced statistics
  (:mod:`mmguard.adapt.stats`; class probabilities from the unadapted model, the training prior);
  regression tasks use plain window statistics;
* ``adabn`` — a copy of the model whose BN statistics are those of the window (needs ``norm: batch``);
* ``tent`` — online entropy minimisation of the BN affine parameters on the window, predictions
  with the window's BN statistics (needs ``norm: batch`` and a classification task).

**Gate** (decision): with a :class:`~mmguard.adapt.drift.DriftMonitor`, adaptation switches on at
the first drift alarm and stays on (slow drift does not go away); before it, the model runs as
trained, so an in-distribution stream keeps its accuracy unless the detector raises a false
alarm (≤ α per test). Without a monitor adaptation is always on.
Causal: a chunk is predicted from the samples up to and including it, never later ones.
"""

from __future__ import annotations

from typing import Literal

import torch

from mmguard.adapt.drift import DriftMonitor
from mmguard.adapt.norm import Tent, adabn, copy_for_adaptation, require_norm_layers
from mmguard.adapt.stats import window_standardizer
from mmguard.adapt.window import recent
from mmguard.data.model import MultimodalBatch
from mmguard.downstream.model import Downstream
from mmguard.errors import SpecError

Method = Literal["none", "stats", "adabn", "tent"]
METHODS: tuple[str, ...] = ("none", "stats", "adabn", "tent")


def check_method(model: Downstream, method: str) -> None:
    """One-line error when ``method`` cannot adapt ``model``."""
    if method not in METHODS:
        raise SpecError(f"unknown adaptation {method!r}; choose from {list(METHODS)}")
    if method in ("adabn", "tent"):
        require_norm_layers(model.net, "the downstream model")
    if method == "tent" and model.task == "regression":
        raise SpecError("tent minimises prediction entropy: it needs a classification task")


class AdaptiveDownstream:
    """A downstream model that adapts online (see the module docstring)."""

    def __init__(self, model: Downstream, method: Method = "stats", *, window: int = 256,
                 monitor: DriftMonitor | None = None, tent_lr: float = 1e-3) -> None:
        check_method(model, method)
        if window < 2:
            raise SpecError(f"the adaptation window must hold at least 2 samples, got {window}")
        self.model, self.method, self.window, self.monitor = model, method, window, monitor
        self.tent_lr = tent_lr
        self._tent: Tent | None = None
        self._buffer: MultimodalBatch | None = None
        self.adapted_chunks = 0

    @property
    def active(self) -> bool:
        return self.method != "none" and (self.monitor is None or self.monitor.drifted)

    def process(self, chunk: MultimodalBatch) -> torch.Tensor:
        """Predictions (N,) for the next chunk of the stream (standardised with training statistics)."""
        if self.monitor is not None:
            self.monitor.update(chunk)
        self._buffer = buf = recent(self._buffer, chunk, self.window)
        if not self.active or (self.method in ("adabn", "tent") and len(buf) < 2):
            return self.model.predict(chunk)  # (batch statistics need two samples)
        self.adapted_chunks += 1
        m = self.model
        if self.method == "stats":
            probs = None if m.task == "regression" else torch.softmax(m.outputs(buf), 1)
            prior = None if m.prior is None else torch.tensor(m.prior)
            return m.predict(window_standardizer(buf, probs, prior).transform(chunk))
        if self.method == "adabn":
            net = copy_for_adaptation(m.net)
            adabn(net, lambda model: model({n: v for n, v in buf.modalities.items()}))
            return m.decode(m.outputs(chunk, net))
        if self._tent is None:
            self._tent = Tent(copy_for_adaptation(m.net), lr=self.tent_lr)
        logits = self._tent.step(lambda model: model({n: v for n, v in buf.modalities.items()}))
        return m.decode(logits[len(buf) - len(chunk):])

    def run(self, stream: MultimodalBatch, chunk: int = 25) -> torch.Tensor:
        """Predictions (N,) for a whole stream, fed in chunks of ``chunk`` samples."""
        return torch.cat([self.process(stream.select(slice(i, i + chunk))) for i in range(0, len(stream), chunk)])
