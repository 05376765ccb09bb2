"""The routing gate (paper section 6, "Intelligent Routing (The Logic Gate)").

The sample's anomaly score is S = max_m s_m over its per-modality detector scores. The gate
threshold t is calibrated on *clean validation* data only: t is the (1 − α) empirical
quantile of S for a target false-alarm rate α (default 1 %), computed with the "higher"
interpolation so at most α of the validation samples lie strictly above it. A sample is
routed to the corrector iff S > t; otherwise it bypasses the corrector *exactly* (the latent
passed to the decoders is the encoder's latent itself, bit for bit).
Per-modality thresholds t_m (same rule on s_m) are kept for per-modality health reports.
"""

from __future__ import annotations

import torch


def sample_scores(scores: torch.Tensor) -> torch.Tensor:
    """S = max over modalities of the per-modality scores: (..., M) → (...)."""
    return scores.amax(-1)


def calibrate_threshold(clean_scores: torch.Tensor, false_alarm_rate: float) -> torch.Tensor:
    """(1 − α) quantile over the last axis (samples) of clean scores: (..., N) → (...)."""
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    return torch.quantile(clean_scores.double(), 1.0 - false_alarm_rate, dim=-1, interpolation="higher").to(
        clean_scores.dtype
    )


def route(z: torch.Tensor, corrected: torch.Tensor, flagged: torch.Tensor) -> torch.Tensor:
    """ẑ = C(z) where flagged, else z itself (exact bypass): z, corrected (..., N, d), flagged (..., N)."""
    return torch.where(flagged.unsqueeze(-1), corrected, z)
