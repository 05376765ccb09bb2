"""Summaries over seeds, written once: mean ± sample std, paired per-seed ratios."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def mean_std(values: torch.Tensor | np.ndarray | Sequence[float], *, ddof: int = 1) -> list[float]:
    """[mean, std] in float64: over seeds the sample std (``ddof=1``; 0 for a single value);
    ``ddof=0`` for the spread of a population (e.g. over samples). Empty input gives [nan, nan]."""
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return [float("nan"), float("nan")]
    return [float(a.mean()), float(a.std(ddof=ddof)) if a.size > ddof else 0.0]


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """mean ± std over seeds of the per-seed ratios a_s / b_s (paired, not a ratio of means)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired ratio needs equal lengths, got {x.shape} and {y.shape}")
    return mean_std(x / y)
