"""Slow drift across episodes: a gain and an offset that change from recording to recording.

Months-long sensor drift (a chemical sensor array whose response changes from one recording
batch to the next, a camera's exposure and black level, a joint encoder's calibration) is
constant within a recording but grows across recordings. The recording is the batch meta
``episode``: the *drift age* ``k`` of a selected sample is the rank of its episode among the
distinct episodes of the selected samples, in ascending order (0 for the earliest), and

    y = x * (1 + gain_rate_c * k) + offset_rate_c * k

per channel ``c``. The ground truth is the fault mask (which samples drift) plus the parameters
(the rates); the earliest selected episode is marked faulty but unchanged (age 0).

Decision (documented in docs/faults.md, "slow_drift — drift across episodes"): without
``episode`` meta every selected sample is its own episode, in the order of the time index of
:func:`~mmguard.faults.temporal.time_and_episode` (meta ``t``, else the batch index). The other
temporal faults treat such a batch as one episode instead; for this fault that would make every
sample age 0, a silent no-op on samples the mask marks as faulty.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mmguard.data.model import ModalityKind
from mmguard.faults.registry import FaultContext, FaultParams, register_fault
from mmguard.faults.temporal import time_and_episode
from mmguard.faults.vector import ALL_KINDS, Finite, _broadcast

FACTOR_LO, FACTOR_HI = 0.5, 1.5  # per="channel": each channel's rate is the nominal rate times U[0.5, 1.5)


def drift_age(ctx: FaultContext) -> torch.Tensor:
    """(n,) int64 rank of each selected sample's episode among the distinct selected episodes
    (ascending, 0 for the earliest). Without ``episode`` meta the time index (meta ``t``, else
    the batch index) plays the episode, so every sample is its own recording."""
    t, ep = time_and_episode(ctx)
    label = ep if ctx.episode is not None else t
    if label.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=label.device)
    return torch.unique(label, sorted=True, return_inverse=True)[1].long()


def channel_shape(x: torch.Tensor, kind: ModalityKind) -> tuple[int, ...]:
    """Per-sample broadcast shape of the channel axis: (D,) for a vector, (1, D) for a (T, D)
    time series (one rate per feature), (C, 1, 1) for a (C, H, W) image (one rate per colour
    channel)."""
    if kind is ModalityKind.TIMESERIES:
        return (1, x.shape[2])
    if kind is ModalityKind.IMAGE:
        return (x.shape[1], 1, 1)
    return tuple(x.shape[1:])


class SlowDriftParams(FaultParams):
    gain_rate: Finite = Field(
        0.02,
        description="Change of the multiplicative gain per episode of drift age: the gain is 1 + gain_rate * k "
                    "in the k-th selected episode (negative: a sensor losing sensitivity).")
    offset_rate: Finite = Field(
        0.02,
        description="Additive offset per episode of drift age, in the modality's units (standard deviations "
                    "on standardized data).")
    per: Literal["channel", "modality"] = Field(
        "channel",
        description="'channel': every channel drifts at its own rates, the nominal ones times seeded factors "
                    "in [0.5, 1.5] (the offset with a seeded sign); 'modality': every channel at exactly the "
                    "nominal rates, no random draw (grouped entries then drift identically).")


@register_fault("slow_drift", params=SlowDriftParams, kinds=ALL_KINDS, severity="gain_rate", temporal=True)
def slow_drift(x: torch.Tensor, p: SlowDriftParams, ctx: FaultContext) -> torch.Tensor:
    """Slow drift across episodes: x * (1 + gain_rate * k) + offset_rate * k in the k-th episode.

    ``k`` is the rank of the sample's episode (meta ``episode``) among the distinct episodes of
    the selected samples, 0 for the earliest; without ``episode`` every sample is its own
    episode, ordered by meta ``t`` (else the batch index). With ``per: channel`` each channel
    (vector element, time-series feature, image colour channel) has its own rates: the nominal
    ones times factors drawn once per entry from U[0.5, 1.5), the offset with a random sign.
    With ``per: modality`` all channels share the nominal rates exactly.
    """
    k = _broadcast(drift_age(ctx).to(device=x.device, dtype=torch.float64), x)
    shape = channel_shape(x, ctx.kind)
    g = torch.full(shape, p.gain_rate, dtype=torch.float64, device=x.device)
    o = torch.full(shape, p.offset_rate, dtype=torch.float64, device=x.device)
    if p.per == "channel":
        like = torch.empty(0, dtype=torch.float64, device=x.device)
        span = FACTOR_HI - FACTOR_LO
        g = g * (FACTOR_LO + span * ctx.rand(shape, like))
        o = o * (FACTOR_LO + span * ctx.rand(shape, like))
        o = torch.where(ctx.rand(shape, like) < 0.5, -o, o)
    return x * (1.0 + g * k).to(x.dtype) + (o * k).to(x.dtype)
