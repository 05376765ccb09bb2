"""Test-time re-estimation of the input statistics, robust to a change of the class mix.

Slow sensor drift (gain and offset that change over months) moves every feature's location
and scale; re-standardising recent unlabeled data with its *own* statistics removes it. But a
window whose class mix differs from training (one gas dominating a recording batch) also
moves the statistics, and plain re-standardisation then removes real signal. The fix (decision,
docs/drift.md): weight each sample of the window so that the window's *predicted* class mix
matches the training prior before taking weighted moments — the importance weights of label
shift, ``w_i = Σ_k p_ik π_k / π̂_k`` with ``π̂_k = mean_i p_ik`` (Saerens, Latinne, Decaestecker,
"Adjusting the outputs of a classifier to new a priori probabilities", Neural Computation
14(1), 2002, eq. 2.4, one step with the unadapted model's probabilities ``p``).
One step only: iterating (re-predicting with the adapted statistics) was worse on the
development batches (docs/results/gas-drift.md).
"""

from __future__ import annotations

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.errors import DataError


def class_balanced_weights(probs: torch.Tensor, prior: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """(N,) weights, mean 1, that re-weight a window with class probabilities ``probs`` (N, K)
    to the class prior ``prior`` (K,). Predicted class frequencies below ``floor`` are floored."""
    if probs.ndim != 2 or prior.shape != (probs.shape[1],):
        raise DataError(f"class probabilities {tuple(probs.shape)} do not match the prior {tuple(prior.shape)}")
    p = probs.double()
    pi = prior.double() / prior.double().sum()
    predicted = p.mean(0).clamp_min(floor)
    w = (p * (pi / predicted)).sum(1)
    return (w / w.mean().clamp_min(1e-12)).float()


def window_standardizer(window: MultimodalBatch, probs: torch.Tensor | None = None,
                        prior: torch.Tensor | None = None) -> Standardizer:
    """Statistics of a window of recent (standardised or raw) samples; class-balanced when the
    model's class probabilities and the training prior are given."""
    weights = None if probs is None or prior is None else class_balanced_weights(probs, prior)
    return Standardizer.fit(window, weights)


def compose(outer: Standardizer, inner: Standardizer) -> Standardizer:
    """The standardiser x → inner((x − outer.mean) / outer.std) as one (mean, std) pair."""
    mean = {n: outer.mean[n] + outer.std[n] * inner.mean[n] for n in outer.mean}
    std = {n: outer.std[n] * inner.std[n] for n in outer.std}
    return Standardizer(mean=mean, std=std)
