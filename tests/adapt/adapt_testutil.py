"""Shared helpers for the drift-detection and test-time-adaptation tests (tests/adapt)."""

from __future__ import annotations

import numpy as np
import torch

from mmguard.adapt.drift import DriftConfig, DriftDetector
from mmguard.data.model import MultimodalBatch

#: three vector modalities of different sizes; ``b`` and ``c`` share a size, so the detector
#: stacks them into one batched kernel (the per-modality results must not mix)
DIMS = {"a": 2, "b": 5, "c": 5}


def gaussian_batch(rng: np.random.Generator, n: int, dims: dict[str, int] = DIMS,
                   shift: dict[str, float] | None = None) -> MultimodalBatch:
    """``n`` i.i.d. standard normal samples per modality (already "standardised"); ``shift`` adds a
    constant to every feature of the named modalities (a mean shift in units of the std)."""
    shift = shift or {}
    mods = {name: rng.normal(size=(n, d)) + shift.get(name, 0.0) for name, d in dims.items()}
    return MultimodalBatch.from_arrays(mods)


def fit_detector(seed: int = 0, **config) -> DriftDetector:
    """A detector fitted on 400 training + 300 validation in-distribution samples."""
    rng = np.random.default_rng(1000 + seed)
    cfg = DriftConfig(**{"window": 30, "step": 10, "alpha": 0.05, "reference_size": 150, "pool_size": 550,
                         "null_windows": 1000, **config})
    return DriftDetector.fit(gaussian_batch(rng, 400), gaussian_batch(rng, 300), cfg, seed=seed)


def channel_means(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) mean per feature (vector), per channel (time series: over samples and time;
    image: over samples and pixels) — the axes a Standardizer reduces, computed independently."""
    x = x.double()
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights.double()
    if x.ndim == 2:
        return (w[:, None] * x).sum(0) / w.sum()
    if x.ndim == 3:
        return (w[:, None, None] * x).sum((0, 1)) / (w.sum() * x.shape[1])
    return (w[:, None, None, None] * x).sum((0, 2, 3)) / (w.sum() * x.shape[2] * x.shape[3])
