"""Image faults: camera noise, impulse noise, occlusion, blur, exposure, dead pixels/lines and
frozen frames. Images are ``(n, C, H, W)``, nominally in [0, 1] before standardization, so no
fault clips unless asked to (``clip: true``) — clipping standardized images would destroy them.

All faults are vectorized over samples and channels; the random draws depend only on shapes,
never on parameter values (a severity sweep with one seed stays comparable across severities).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from mmguard.faults.registry import FaultContext, FaultParams, register_fault
from mmguard.faults.temporal import held_source
from mmguard.faults.vector import Finite

IMAGE = ("image",)


class _ClipRange(FaultParams):
    """Optional clipping to [lo, hi]; subclasses declare the fields ``clip``, ``lo``, ``hi``
    after their own (so the severity parameter is listed first)."""

    @model_validator(mode="after")
    def _order(self):
        if not self.lo < self.hi:
            raise ValueError(f"lo must be < hi, got lo={self.lo!r}, hi={self.hi!r}")
        return self

    def apply_clip(self, y: torch.Tensor) -> torch.Tensor:
        return y.clamp(self.lo, self.hi) if self.clip else y


def _clip_fields() -> tuple:
    return (Field(False, description="Clip the result to [lo, hi] (for images in a known range)."),
            Field(0.0, description="Lower clip bound (with clip)."),
            Field(1.0, description="Upper clip bound (with clip)."))


def _pixel_shape(x: torch.Tensor, shared: bool) -> tuple[int, int, int, int]:
    return (1 if shared else x.shape[0], 1, x.shape[2], x.shape[3])


# ---------------------------------------------------------------------------------- noise
class ImageNoiseParams(_ClipRange):
    sigma: float = Field(0.1, ge=0, allow_inf_nan=False, description="Noise standard deviation.")
    monochrome: bool = Field(False, description="Same noise on every channel of a pixel (luminance noise).")
    clip: bool = _clip_fields()[0]
    lo: Finite = _clip_fields()[1]
    hi: Finite = _clip_fields()[2]


@register_fault("image_gaussian_noise", params=ImageNoiseParams, kinds=IMAGE, severity="sigma")
def image_gaussian_noise(x: torch.Tensor, p: ImageNoiseParams, ctx: FaultContext) -> torch.Tensor:
    """Sensor (shot/read) noise: x + N(0, sigma^2) per pixel and channel, optionally clipped."""
    shape = (x.shape[0], 1, x.shape[2], x.shape[3]) if p.monochrome else tuple(x.shape)
    return p.apply_clip(x + p.sigma * ctx.randn(shape, x))


class SaltPepperParams(FaultParams):
    amount: float = Field(0.05, ge=0, le=1, description="Fraction of pixels hit (all channels of a pixel).")
    salt_ratio: float = Field(0.5, ge=0, le=1,
                              description="Share of hit pixels set to `high` (the rest to `low`).")
    low: Finite = Field(0.0, description="Pepper value.")
    high: Finite = Field(1.0, description="Salt value.")


@register_fault("salt_and_pepper", params=SaltPepperParams, kinds=IMAGE, severity="amount")
def salt_and_pepper(x: torch.Tensor, p: SaltPepperParams, ctx: FaultContext) -> torch.Tensor:
    """Impulse noise: a fraction ``amount`` of pixels set to ``high`` (salt) or ``low`` (pepper)."""
    shape = _pixel_shape(x, shared=False)
    hit = ctx.rand(shape, x) < p.amount
    salt = ctx.rand(shape, x) < p.salt_ratio
    value = torch.where(salt, p.high, p.low).to(x.dtype)
    return torch.where(hit, value, x)


# ---------------------------------------------------------------------------------- occlusion
class OcclusionParams(FaultParams):
    size: int = Field(8, ge=1, description="Side of each square patch in pixels (clamped to the image).")
    count: int = Field(1, ge=1, le=64, description="Patches per image.")
    fill: Finite = Field(0.0, description="Value written into the patches.")


@register_fault("occlusion", params=OcclusionParams, kinds=IMAGE, severity="size")
def occlusion(x: torch.Tensor, p: OcclusionParams, ctx: FaultContext) -> torch.Tensor:
    """Occluded lens / object in front of the camera: ``count`` square patches of side ``size``
    at seeded uniform positions (fully inside the image), filled with ``fill`` on all channels."""
    n, _, H, W = x.shape
    sh, sw = min(p.size, H), min(p.size, W)
    top = ctx.randint(H - sh + 1, (n, p.count), x.device)
    left = ctx.randint(W - sw + 1, (n, p.count), x.device)
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    in_r = (rows >= top[..., None]) & (rows < top[..., None] + sh)  # (n, count, H)
    in_c = (cols >= left[..., None]) & (cols < left[..., None] + sw)  # (n, count, W)
    covered = (in_r[..., :, None] & in_c[..., None, :]).any(dim=1)  # (n, H, W)
    return torch.where(covered[:, None], torch.full((), p.fill, dtype=x.dtype, device=x.device), x)


# ---------------------------------------------------------------------------------- blur
class BlurParams(FaultParams):
    sigma: float = Field(1.0, ge=0, le=64, allow_inf_nan=False,
                         description="Gaussian kernel standard deviation in pixels (0 = no blur).")


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalized 1-D Gaussian of radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    pos = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (pos / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


@register_fault("blur", params=BlurParams, kinds=IMAGE, severity="sigma")
def blur(x: torch.Tensor, p: BlurParams, ctx: FaultContext) -> torch.Tensor:
    """Defocus blur: separable Gaussian convolution (conv2d with replicate borders),
    applied to all samples and channels at once."""
    if p.sigma == 0 or x.shape[0] == 0:
        return x.clone()
    n, C, H, W = x.shape
    k = gaussian_kernel(p.sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    y = x.reshape(n * C, 1, H, W)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1))
    return y.reshape(n, C, H, W)


# ---------------------------------------------------------------------------------- exposure
class BrightnessContrastParams(_ClipRange):
    brightness: Finite = Field(0.2, description="Value added to every pixel (exposure shift).")
    contrast: float = Field(1.0, ge=0, allow_inf_nan=False,
                            description="Factor applied to deviations from each channel's mean.")
    clip: bool = _clip_fields()[0]
    lo: Finite = _clip_fields()[1]
    hi: Finite = _clip_fields()[2]


@register_fault("brightness_contrast", params=BrightnessContrastParams, kinds=IMAGE, severity="brightness")
def brightness_contrast(x: torch.Tensor, p: BrightnessContrastParams, ctx: FaultContext) -> torch.Tensor:
    """Exposure / gain change: (x - mean_c) * contrast + mean_c + brightness per sample and
    channel, optionally clipped. Severity is ``brightness`` (error |brightness| at contrast 1)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return p.apply_clip((x - mean) * p.contrast + mean + p.brightness)


# ---------------------------------------------------------------------------------- dead pixels / lines
class DeadPixelsParams(FaultParams):
    fraction: float = Field(0.01, ge=0, le=1, description="Fraction of pixels that are dead.")
    value: Literal["random"] | Finite = Field("random", description="Stuck value; 'random' picks low or high "
                                                                    "per pixel.")
    low: Finite = Field(0.0, description="Dark stuck value for 'random'.")
    high: Finite = Field(1.0, description="Bright stuck value for 'random'.")
    shared: bool = Field(True, description="Same dead pixels in every affected image (a sensor defect); "
                                           "false draws a new map per image.")


@register_fault("dead_pixels", params=DeadPixelsParams, kinds=IMAGE, severity="fraction")
def dead_pixels(x: torch.Tensor, p: DeadPixelsParams, ctx: FaultContext) -> torch.Tensor:
    """Dead / hot pixels stuck at 0 or 1 (``low``/``high``) on all channels."""
    shape = _pixel_shape(x, p.shared)
    dead = ctx.rand(shape, x) < p.fraction
    bright = ctx.rand(shape, x) < 0.5
    if p.value == "random":
        value = torch.where(bright, p.high, p.low).to(x.dtype)
    else:
        value = torch.full((), float(p.value), dtype=x.dtype, device=x.device)
    return torch.where(dead, value, x)


class DeadLinesParams(FaultParams):
    count: int = Field(2, ge=0, description="Number of dead lines (clamped to the image size).")
    axis: Literal["rows", "cols"] = Field("rows", description="Dead rows or dead columns.")
    value: Finite = Field(0.0, description="Value of the dead lines.")
    shared: bool = Field(True, description="Same lines in every affected image (readout defect).")


@register_fault("dead_lines", params=DeadLinesParams, kinds=IMAGE, severity="count")
def dead_lines(x: torch.Tensor, p: DeadLinesParams, ctx: FaultContext) -> torch.Tensor:
    """Dead sensor rows or columns (readout failure) set to ``value`` on all channels.

    The ``count`` lines with the smallest seeded uniform keys die, so a larger count kills a
    superset of the lines of a smaller one.
    """
    n, _, H, W = x.shape
    length = H if p.axis == "rows" else W
    keys = torch.rand((1 if p.shared else n, length), generator=ctx.generator).to(x.device)
    rank = torch.argsort(torch.argsort(keys, dim=1), dim=1)
    dead = rank < min(p.count, length)
    mask = dead[:, None, :, None] if p.axis == "rows" else dead[:, None, None, :]
    return torch.where(mask, torch.full((), p.value, dtype=x.dtype, device=x.device), x)


# ---------------------------------------------------------------------------------- frozen frame
class FrozenFrameParams(FaultParams):
    pass


@register_fault("frozen_frame", params=FrozenFrameParams, kinds=IMAGE, severity=None, temporal=True)
def frozen_frame(x: torch.Tensor, p: FrozenFrameParams, ctx: FaultContext) -> torch.Tensor:
    """Frozen camera stream: every selected image repeats the frame of the earliest selected
    sample of its episode (meta ``episode``/``t``). Without ``episode`` the batch is one
    episode; without ``t`` the batch index is the time, so the first selected sample's frame
    is held."""
    return x[held_source(ctx)].clone()
