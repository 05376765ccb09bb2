"""Potential energy of a *convolutional* tied-weight denoising autoencoder, for image modalities.

Thesis section 4.4 names the limit of the shallow dense DAE: an image must be flattened, so the
potential ignores locality and needs U x C·H·W weights. This module keeps the construction of
chapter 4 and replaces the dense map W by a strided convolution (issue 12, decision recorded in
docs/emma.md, "Images"):

    a(x) = conv(x; W, stride s, padding p) + b_f            (K channels, one bias per channel)
    r(x) = conv^T(sigmoid(a(x)); W) + b_g                   (the same W, transposed; b_g per pixel)
    Psi(x) = - sum_{k, u, v} softplus(a(x)_{k,u,v}) + 1/2 ||x - b_g||^2        (eq. 4.7, W = conv)

A convolution is a linear map, and ``conv_transpose2d`` with the same weights, stride, padding and
the output padding that restores H x W is exactly its adjoint. So the integrability argument of
eq. 4.3 carries over unchanged and ``dPsi/dx = x - r(x)`` holds exactly, as for the dense DAE
(tested with autograd in tests/emma/test_conv_potential.py). It is still one layer: a deeper
encoder would break the tied-weight identity, so depth is not offered.

The interface is :class:`~mmguard.emma.potential.TiedDAE`'s (inputs flattened to (G, N, C·H·W),
``potential``, ``reconstruct``, ``psi_min``, ``psi_scale``, ``select``, ``describe``), so it trains
with :func:`~mmguard.emma.potential.fit_dae` and sits in :class:`~mmguard.emma.network.EmmaNetwork`
unchanged. G ensemble members run as one grouped convolution (``groups=G``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmguard.emma.potential import PotentialScale
from mmguard.train.ensemble import member_generator


def conv_geometry(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int]:
    """(output size of the convolution, output padding of its transpose that gives ``size`` back)."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} with padding {padding} does not fit an image side of {size}")
    extra = size - ((out - 1) * stride - 2 * padding + kernel)
    if not 0 <= extra < stride:
        raise ValueError(f"kernel {kernel}, stride {stride}, padding {padding}: the transposed convolution "
                         f"cannot give an image side of {size} back")
    return out, extra


class ConvTiedDAE(PotentialScale, nn.Module):
    """G tied-weight convolutional sigmoid DAEs on images of shape (C, H, W) with K feature maps."""

    def __init__(self, seeds: Sequence[int], image_shape: Sequence[int], channels: int = 16, kernel: int = 8,
                 stride: int = 4, padding: int = 2, stream: int = 0) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        self.channels, self.kernel, self.stride, self.padding = int(channels), int(kernel), int(stride), int(padding)
        (ho, oph), (wo, opw) = (conv_geometry(v, self.kernel, self.stride, self.padding) for v in (h, w))
        self.feature_shape = (self.channels, ho, wo)
        self.output_padding = (oph, opw)
        fan_in, fan_out = c * kernel * kernel, channels * kernel * kernel
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot-uniform, as the dense DAE
        ws = [(torch.rand(channels, c, kernel, kernel, generator=member_generator(s, stream)) * 2 - 1) * bound
              for s in seeds]
        g = len(ws)
        self.W = nn.Parameter(torch.stack(ws))  # (G, K, C, k, k)
        self.b_f = nn.Parameter(torch.zeros(g, channels))
        self.b_g = nn.Parameter(torch.zeros(g, c * h * w))
        self._register_potential_buffers(g)

    @property
    def in_features(self) -> int:
        return self.b_g.shape[1]

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(G, N, C·H·W) → (N, G·C, H, W): members become channel groups."""
        g, n = x.shape[:2]
        return x.reshape(g, n, *self.image_shape).transpose(0, 1).reshape(n, g * self.image_shape[0],
                                                                          *self.image_shape[1:])

    def _weight(self) -> torch.Tensor:
        return self.W.reshape(-1, *self.W.shape[2:])  # (G·K, C, k, k)

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        """a(x) as grouped feature maps (N, G·K, H', W')."""
        return F.conv2d(self._grouped(x), self._weight(), self.b_f.reshape(-1), stride=self.stride,
                        padding=self.padding, groups=self.ensemble_size)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """a(x) = conv(x; W) + b_f for x of shape (G, N, C·H·W) → (G, N, K·H'·W')."""
        a = self._maps(x)
        n = a.shape[0]
        return a.reshape(n, self.ensemble_size, -1).transpose(0, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """r(x) = conv^T(sigmoid(a(x)); W) + b_g, (G, N, C·H·W)."""
        g, n = x.shape[:2]
        y = F.conv_transpose2d(torch.sigmoid(self._maps(x)), self._weight(), stride=self.stride,
                               padding=self.padding, output_padding=self.output_padding, groups=g)
        return y.reshape(n, g, -1).transpose(0, 1) + self.b_g.unsqueeze(1)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Psi(x) of eq. 4.7 with W a convolution, per sample: (G, N, C·H·W) → (G, N)."""
        return -F.softplus(self.pre_activation(x)).sum(-1) + 0.5 * ((x - self.b_g.unsqueeze(1)) ** 2).sum(-1)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.reconstruct(x) - x) ** 2).sum(-1)

    def describe(self) -> dict[str, Any]:
        return {"kind": "conv", "image_shape": list(self.image_shape), "channels": self.channels,
                "kernel": self.kernel, "stride": self.stride, "padding": self.padding,
                "psi_scale": self.psi_scale.tolist()}

    def _empty(self, members: int) -> ConvTiedDAE:
        return ConvTiedDAE([0] * members, self.image_shape, self.channels, self.kernel, self.stride, self.padding)
