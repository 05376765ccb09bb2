"""Signal faults for vector and time-series modalities (most also act on images element-wise).

Every function receives the selected samples ``x`` of shape ``(n, *shape)`` and returns a new
tensor. Time-series samples are ``(T, D)``: temporal faults act along ``T`` from the ``onset``
step. Vector (and image) samples have no time axis: temporal faults use the batch meta
``episode``/``t`` (see :mod:`mmguard.faults.temporal`).

Random draws never depend on parameter values (only on shapes), so a severity sweep with one
seed corrupts the same elements with the same noise at every severity: the error to the clean
signal then grows monotonically with the severity, not just on average.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from mmguard.data.model import ModalityKind
from mmguard.faults.registry import FaultContext, FaultParams, register_fault
from mmguard.faults.temporal import held_source, steps_since_onset

ALL_KINDS = ("vector", "timeseries", "image")
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _broadcast(per_sample: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(n,) → (n, 1, ..., 1) so it broadcasts against ``x``."""
    return per_sample.reshape(per_sample.shape[0], *([1] * (x.ndim - 1)))


def unit_shape(x: torch.Tensor, kind: ModalityKind) -> tuple[int, ...]:
    """Shape of the natural "unit" of loss: elements (vector), time steps (timeseries, all
    channels together), pixels (image, all channels together)."""
    if kind is ModalityKind.TIMESERIES:
        return (x.shape[0], x.shape[1], 1)
    if kind is ModalityKind.IMAGE:
        return (x.shape[0], 1, x.shape[2], x.shape[3])
    return tuple(x.shape)


def time_ramp(x: torch.Tensor, onset: int) -> torch.Tensor:
    """(T, 1) steps elapsed since ``onset`` (0 before it) for a (n, T, D) time series."""
    T = x.shape[1]
    return (torch.arange(T, device=x.device, dtype=torch.float64) - min(onset, T - 1)).clamp_min(0)[:, None]


# ---------------------------------------------------------------------------------- gaussian noise
class GaussianNoiseParams(FaultParams):
    sigma: float | None = Field(
        None, ge=0,
        description="Noise standard deviation (0.5 if snr_db is not given; thesis section 6.3.1 uses 0.5 "
                    "on standardized data).")
    snr_db: float | None = Field(
        None,
        description="Alternative to sigma: signal-to-noise ratio in dB relative to each sample's mean power "
                    "mean(x**2).")

    @model_validator(mode="before")
    @classmethod
    def _one_of(cls, data):
        if isinstance(data, dict):
            if data.get("sigma") is not None and data.get("snr_db") is not None:
                raise ValueError(f"give exactly one of sigma and snr_db, got sigma={data['sigma']!r} "
                                 f"and snr_db={data['snr_db']!r}")
            if data.get("sigma") is None and data.get("snr_db") is None:
                data = {**data, "sigma": 0.5}
        return data


@register_fault("gaussian_noise", params=GaussianNoiseParams, kinds=ALL_KINDS, severity="sigma",
                severity_clears=("snr_db",))
def gaussian_noise(x: torch.Tensor, p: GaussianNoiseParams, ctx: FaultContext) -> torch.Tensor:
    """Additive white Gaussian noise, by absolute ``sigma`` or by ``snr_db`` per sample.

    The failing-mode simulation of the EMMA thesis (section 6.3.1): x + N(0, sigma^2) with
    sigma = 0.5 on standardized data. With ``snr_db`` the noise variance of each sample is
    mean(x**2) / 10**(snr_db / 10); an all-zero sample then receives no noise.
    """
    noise = ctx.randn(tuple(x.shape), x)
    if p.snr_db is not None:
        power = x.double().flatten(1).pow(2).mean(dim=1)
        std = (power / 10.0 ** (p.snr_db / 10.0)).sqrt().to(x.dtype)
        return x + _broadcast(std, x) * noise
    return x + p.sigma * noise


# ---------------------------------------------------------------------------------- missing / dropout
class MissingParams(FaultParams):
    fraction: float = Field(
        1.0, gt=0, le=1,
        description="Fraction of units lost (1 = the whole modality). Units: elements (vector), time steps "
                    "(timeseries), pixels (image).")
    fill: Literal["zero", "nan"] | Finite = Field(
        "zero", description="Value written into lost units: 'zero', 'nan' (only when requested) or a number.")


@register_fault("missing", params=MissingParams, kinds=ALL_KINDS, severity="fraction", aliases=("dropout",))
def missing(x: torch.Tensor, p: MissingParams, ctx: FaultContext) -> torch.Tensor:
    """Lost data (sensor dropout): the affected units are replaced by ``fill`` (zero by default).

    NaN appears only with ``fill: nan``. ``fraction`` < 1 loses a random subset of each sample's
    units (Bernoulli per unit from the entry's stream); ``fraction`` = 1 loses everything.
    """
    lost = ctx.rand(unit_shape(x, ctx.kind), x) < p.fraction
    fill = {"zero": 0.0, "nan": math.nan}.get(p.fill, p.fill) if isinstance(p.fill, str) else p.fill
    return torch.where(lost, torch.full((), float(fill), dtype=x.dtype, device=x.device), x)


# ---------------------------------------------------------------------------------- stuck at
class StuckAtParams(FaultParams):
    mode: Literal["value", "hold"] = Field("value", description="'value': stuck at the constant `value`; "
                                                                "'hold': stuck at the value of the first "
                                                                "faulty time step.")
    value: Finite = Field(0.0, description="Constant output in mode 'value'.")
    onset: int = Field(0, ge=0, description="Time series only: first faulty time step (clamped to T-1); "
                                            "earlier steps are untouched.")


@register_fault("stuck_at", params=StuckAtParams, kinds=ALL_KINDS, severity="value", temporal=True)
def stuck_at(x: torch.Tensor, p: StuckAtParams, ctx: FaultContext) -> torch.Tensor:
    """A sensor stuck at a constant (``mode: value``) or at its last good reading (``mode: hold``).

    Hold semantics: time series hold x[:, onset] for every step >= onset. Vector and image
    modalities hold, for every selected sample, the value of the earliest selected sample of the
    same episode (meta ``episode``/``t``; without meta the batch is one episode ordered by index).
    Severity is ``value`` (mode 'value' only; the error grows with |value| on centred data).
    """
    if ctx.kind is ModalityKind.TIMESERIES:
        onset = min(p.onset, x.shape[1] - 1)
        after = (torch.arange(x.shape[1], device=x.device) >= onset)[:, None]
        if p.mode == "value":
            target = torch.full_like(x, p.value)
        else:
            target = x[:, onset][:, None, :].expand_as(x)
        return torch.where(after, target, x)
    if p.mode == "value":
        return torch.full_like(x, p.value)
    return x[held_source(ctx)].clone()


# ---------------------------------------------------------------------------------- offset / gain
class OffsetParams(FaultParams):
    value: Finite = Field(1.0, description="Constant bias added to every element.")


@register_fault("offset", params=OffsetParams, kinds=ALL_KINDS, severity="value", aliases=("bias",))
def offset(x: torch.Tensor, p: OffsetParams, ctx: FaultContext) -> torch.Tensor:
    """Calibration bias: x + value (the error is |value| everywhere)."""
    return x + p.value


class GainParams(FaultParams):
    factor: Finite = Field(2.0, description="Multiplicative gain; the error grows with |factor - 1|.")


@register_fault("gain", params=GainParams, kinds=ALL_KINDS, severity="factor")
def gain(x: torch.Tensor, p: GainParams, ctx: FaultContext) -> torch.Tensor:
    """Gain (scale) error: factor * x. Sweep factors >= 1 for a growing error."""
    return x * p.factor


# ---------------------------------------------------------------------------------- drift
class DriftParams(FaultParams):
    slope: Finite = Field(0.05, description="Drift added per time step (the rate of the ramp).")
    onset: int = Field(0, ge=0,
                       description="Time series only: step at which the ramp starts (clamped to T-1).")


@register_fault("drift", params=DriftParams, kinds=("vector", "timeseries"), severity="slope", temporal=True)
def drift(x: torch.Tensor, p: DriftParams, ctx: FaultContext) -> torch.Tensor:
    """Slow sensor drift: a ramp slope * (steps since onset) added along the time index.

    Time series: along the T axis of each sample, 0 up to ``onset``. Vector modalities: along
    meta ``t`` within each episode, starting at 0 at the earliest selected sample of the episode
    (without meta the batch index is the time). Sweep slopes >= 0 for a growing error.
    """
    if ctx.kind is ModalityKind.TIMESERIES:
        return x + (p.slope * time_ramp(x, p.onset)).to(x.dtype)
    steps = steps_since_onset(ctx)
    return x + _broadcast((p.slope * steps).to(x.dtype), x)


# ---------------------------------------------------------------------------------- spikes
class SpikesParams(FaultParams):
    prob: float = Field(0.05, ge=0, le=1, description="Probability that an element receives an impulse.")
    amplitude: float = Field(5.0, ge=0, allow_inf_nan=False,
                             description="Impulse height added to the element.")
    sign: Literal["both", "positive", "negative"] = Field(
        "both", description="Impulse polarity ('both': random).")


@register_fault("spikes", params=SpikesParams, kinds=ALL_KINDS, severity="amplitude", aliases=("impulses",))
def spikes(x: torch.Tensor, p: SpikesParams, ctx: FaultContext) -> torch.Tensor:
    """Impulsive noise: each element independently receives +/- amplitude with probability prob."""
    hit = ctx.rand(tuple(x.shape), x) < p.prob
    coin = ctx.rand(tuple(x.shape), x) < 0.5
    if p.sign == "positive":
        sgn = torch.ones_like(x)
    elif p.sign == "negative":
        sgn = -torch.ones_like(x)
    else:
        sgn = torch.where(coin, 1.0, -1.0).to(x.dtype)
    return x + hit.to(x.dtype) * sgn * p.amplitude


# ---------------------------------------------------------------------------------- saturation
class SaturationParams(FaultParams):
    bound: float | None = Field(None, gt=0, allow_inf_nan=False,
                                description="Symmetric clip to [-bound, bound] (default 1 when lo/hi are "
                                            "absent).")
    lo: float | None = Field(None, allow_inf_nan=False, description="Lower clip bound (instead of bound).")
    hi: float | None = Field(None, allow_inf_nan=False, description="Upper clip bound (instead of bound).")

    @model_validator(mode="before")
    @classmethod
    def _bounds(cls, data):
        if isinstance(data, dict):
            has_lohi = data.get("lo") is not None or data.get("hi") is not None
            if data.get("bound") is not None and has_lohi:
                raise ValueError(f"give either bound or lo/hi, got bound={data['bound']!r} with "
                                 f"lo={data.get('lo')!r}, hi={data.get('hi')!r}")
            if data.get("bound") is None and not has_lohi:
                data = {**data, "bound": 1.0}
        return data

    @model_validator(mode="after")
    def _order(self):
        if self.lo is not None and self.hi is not None and not self.lo < self.hi:
            raise ValueError(f"lo must be < hi, got lo={self.lo!r}, hi={self.hi!r}")
        return self


@register_fault("saturation", params=SaturationParams, kinds=ALL_KINDS, severity="bound",
                severity_direction="decreasing", severity_clears=("lo", "hi"), aliases=("clipping",))
def saturation(x: torch.Tensor, p: SaturationParams, ctx: FaultContext) -> torch.Tensor:
    """Saturation / clipping at fixed bounds (no data-dependent quantiles).

    ``bound`` clips to [-bound, bound]; ``lo``/``hi`` give an asymmetric or one-sided range.
    The severity is ``bound`` and the error *decreases* as it grows.
    """
    lo, hi = (-p.bound, p.bound) if p.bound is not None else (p.lo, p.hi)
    return torch.clamp(x, min=lo, max=hi)


# ---------------------------------------------------------------------------------- quantization
class QuantizationParams(FaultParams):
    step: float = Field(0.25, gt=0, allow_inf_nan=False,
                        description="Quantization step: x -> step * round(x / step).")


@register_fault("quantization", params=QuantizationParams, kinds=ALL_KINDS, severity="step")
def quantization(x: torch.Tensor, p: QuantizationParams, ctx: FaultContext) -> torch.Tensor:
    """Coarse ADC: values rounded to the nearest multiple of ``step`` (error at most step / 2)."""
    return torch.round(x / p.step) * p.step
