"""Helpers of the baseline tests (tests/baselines): small synthetic sets whose modalities are strongly
correlated, so one modality can be restored from the others, and a way to break one modality."""

from __future__ import annotations

import numpy as np
import torch

from mmguard.data.model import MultimodalBatch


def correlated_batch(n: int = 600, seed: int = 0, sizes: tuple[int, ...] = (6, 5, 4)) -> MultimodalBatch:
    """Vector modalities ``a``, ``b``, ``c`` (6, 5, 4 features): linear maps of one shared 3-d latent plus
    5 % noise, at offsets 10/20/30 and spreads 2 (raw units), and a binary target."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    mods = {}
    for i, (name, d) in enumerate(zip("abc", sizes, strict=False)):
        w = rng.normal(size=(3, d))
        mods[name] = 2.0 * (z @ w) / np.sqrt(3) + 0.05 * rng.normal(size=(n, d)) + 10.0 * (i + 1)
    return MultimodalBatch.from_arrays(mods, target=(z[:, 0] > 0).astype(np.int64))


def replaced_by_noise(batch: MultimodalBatch, name: str, rows: torch.Tensor, seed: int = 1) -> MultimodalBatch:
    """``batch`` with modality ``name`` of the samples ``rows`` (bool) replaced by Gaussian noise of the
    modality's own mean and spread: plausible values that carry no information."""
    x = batch.modalities[name]
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen) * x.std(0) + x.mean(0)
    return batch.with_modalities({name: torch.where(rows[:, None], noise, x)})


def half(n: int) -> torch.Tensor:
    """Every other sample (bool mask)."""
    return torch.arange(n) % 2 == 0


def error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())
