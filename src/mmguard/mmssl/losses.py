"""Training objectives of MMSSL.

* Stage 1: :func:`reconstruction_loss` — Σ_m MSE_m between decoder output and the clean input
  (the MMAE on clean inputs; the DAE baseline on corrupted inputs, same clean targets).
* Stage 2, detector: :func:`contrastive_detector_loss` — the abstract's "contrastive
  objectives for anomaly identification", in its one-class (centre) form: clean embeddings
  are pulled together at the origin, corrupted ones pushed beyond the margin m:

      L_det = ½ mean_{clean (n,m)} ||e_nm||² + ½ mean_{faulty (n,m)} max(0, m − ||e_nm||)²

  Each modality has its own embedding, so the score localizes the failing modality; the two
  halves are averaged separately so the clean/faulty imbalance does not matter.
* Stage 2, corrector: :func:`corrector_loss` — "trained against the clean latent and the
  clean reconstruction": ||C(z̃) − z||² (mean over latent coordinates) plus, with weight λ,
  Σ_m MSE(D_m(C(z̃)), x_m) through the frozen stage-1 decoders.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def reconstruction_loss(recon: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ_m mean-squared error over the batch (a scalar)."""
    return sum(((recon[n] - clean[n]) ** 2).mean() for n in recon)  # type: ignore[return-value]


def contrastive_detector_loss(scores: torch.Tensor, faulty: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-member loss (G,) from scores s = ||e||² (G, B, M) and the fault mask (B, M) or (G, B, M)."""
    faulty = faulty.expand_as(scores).to(scores.dtype)
    clean = 1.0 - faulty
    dist = (scores + 1e-12).sqrt()
    pull = (scores * clean).sum((1, 2)) / clean.sum((1, 2)).clamp_min(1.0)
    push = (torch.relu(margin - dist).pow(2) * faulty).sum((1, 2)) / faulty.sum((1, 2)).clamp_min(1.0)
    return 0.5 * (pull + push)


def latent_loss(corrected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member ||C(z̃) − z||² averaged over batch and latent coordinates: (G, B, d) → (G,)."""
    return (corrected - target).pow(2).mean((1, 2))
