"""Max-over-modalities quantile calibration, shared by guard scores and drift statistics.

Given null statistics ``raw`` of shape (N, M) — one row per clean sample (guard scores) or per
in-distribution window (drift statistics), one column per modality — find a per-modality
location and scale such that the normalised statistic ``(raw - loc) / scale`` exceeds 1 in
*some* modality on at most a fraction ``alpha`` of the rows:

* ``loc_m`` = median, ``spread_m`` = (1 − α) quantile − ``loc_m`` (a comparable scale per modality);
* ``t`` = the (1 − α) quantile ("higher" interpolation) of ``max_m (raw_m − loc_m) / spread_m``;
* ``scale_m = spread_m · t``.
"""

from __future__ import annotations

import torch


def max_quantile_calibration(raw: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale), float32 on CPU, each of shape (M,), for null statistics ``raw`` (N, M)."""
    raw = raw.double()
    loc = raw.median(0).values
    spread = torch.quantile(raw, 1 - alpha, dim=0, interpolation="higher") - loc
    floor = 1e-6 * raw.abs().amax(0).clamp_min(1.0)  # a degenerate (constant) statistic still divides
    spread = torch.maximum(spread, floor)
    t = torch.quantile(((raw - loc) / spread).amax(1), 1 - alpha, interpolation="higher")
    scale = spread * t.clamp_min(1e-6)
    return loc.float().cpu(), scale.float().cpu()
