"""Stage 1 of MMSSL: the multimodal convolutional autoencoder (paper section 3, "Stage 1:
Sensitivity Preservation"; abstract: a multimodal *convolutional* autoencoder).

Architecture (decisions in docs/mmssl.md):

* camera / any image modality — a convolutional encoder (the paper's "locality is key":
  early layers convolutional): ``len(image_channels)`` blocks Conv2d(k=4, s=2, p=1) + ReLU,
  flatten, Linear → ``image_code``; the decoder mirrors it with ConvTranspose2d;
* kinematics / any vector modality — ``dense`` (Linear-ReLU-Linear) by default, or
  ``conv1d`` (two Conv1d layers over the channel vector). Dense is the default because the
  kinematic channels are heterogeneous sensors (joint angles, velocities, torques, tool
  pose) whose order carries no spatial neighbourhood for a convolution to exploit; the
  fault-entropy analysis (``mmssl.analysis``) measures both choices;
* ``image_encoder="dense"`` (flatten, Linear-ReLU-Linear) exists only as the comparison of the
  fault-entropy analysis;
* fusion — the per-modality codes are concatenated, passed through ReLU, and mapped by one
  Linear layer to the joint latent z (``latent_dim``); one decoder per modality maps z back.

Outputs live in the standardized input space; reconstruction errors are MSE there (paper
table 1: "MSE on normalized data").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmguard.data.model import ModalityKind, ModalitySpec
from mmguard.errors import DataError, SpecError
from mmguard.mmssl.config import AutoencoderConfig


class ImageEncoder(nn.Module):
    """Conv2d(k4, s2, p1) + ReLU blocks, then a Linear map to the modality code."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], code: int) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise SpecError(
                f"image size {h}x{w} must be divisible by {factor} for {len(channels)} conv blocks"
            )
        layers: list[nn.Module] = []
        prev = c
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, 2, 1), nn.ReLU()]
            prev = ch
        self.conv = nn.Sequential(*layers)
        self.grid = (prev, h // factor, w // factor)
        self.fc = nn.Linear(prev * (h // factor) * (w // factor), code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class DenseImageEncoder(nn.Module):
    """Flatten → Linear → ReLU → Linear: the dense alternative for the fault-entropy analysis."""

    def __init__(self, shape: Sequence[int], hidden: int, code: int) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.net = nn.Sequential(
            nn.Flatten(1), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, code)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


#: run the image decoder's transposed convolutions on channels-last (NHWC) activations (the weights
#: keep their layout, so checkpoints are unchanged); a switch so benchmarks can compare both layouts
CHANNELS_LAST_DECODER = True


def decoder_stem(shape: Sequence[int], channels: Sequence[int], latent: int
                 ) -> tuple[tuple[int, int, int], nn.Linear, list[int], list[int]]:
    """The mirror of :class:`ImageEncoder` up to its deepest grid: that grid (C, H', W'), the Linear
    from the latent to it, and the (in, out) channel counts of the upsampling blocks that follow."""
    c, h, w = (int(v) for v in shape)
    factor = 2 ** len(channels)
    rev = list(channels)[::-1]
    grid = (rev[0], h // factor, w // factor)
    return grid, nn.Linear(latent, grid[0] * grid[1] * grid[2]), rev, rev[1:] + [c]


class ImageDecoder(nn.Module):
    """Linear to the smallest feature grid, then ConvTranspose2d(k4, s2, p1) blocks (mirror)."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], latent: int) -> None:
        super().__init__()
        self.grid, self.fc, rev, outs = decoder_stem(shape, channels, latent)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(rev, outs, strict=True)):
            layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
            if i < len(rev) - 1:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(z)).view(z.shape[0], *self.grid)
        if CHANNELS_LAST_DECODER:
            # same values, other memory layout: oneDNN's transposed convolutions are faster on NHWC
            # inputs on CPU (whole forward pass 1.31x at batch 256; benchmarks/README.md, "Stage-1 FLOP
            # utilisation"); contiguous out
            return self.deconv(h.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.deconv(h)


class VectorEncoder(nn.Module):
    """Dense (Linear-ReLU-Linear) or conv1d (Conv1d over the channel vector) sensor encoder."""

    def __init__(self, dim: int, hidden: int, code: int, kind: str = "dense") -> None:
        super().__init__()
        self.kind = kind
        if kind == "dense":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, code))
        elif kind == "conv1d":
            self.net = nn.Sequential(
                nn.Unflatten(1, (1, dim)),
                nn.Conv1d(1, 8, 5, 1, 2),
                nn.ReLU(),
                nn.Conv1d(8, 8, 5, 1, 2),
                nn.ReLU(),
                nn.Flatten(1),
                nn.Linear(8 * dim, code),
            )
        else:
            raise SpecError(f"unknown sensor encoder {kind!r}; use dense or conv1d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VectorDecoder(nn.Module):
    def __init__(self, latent: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MultimodalAutoencoder(nn.Module):
    """Encoders per modality → fused joint latent z → decoders per modality."""

    def __init__(self, specs: Sequence[ModalitySpec], cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.names = tuple(s.name for s in specs)
        self.cfg = cfg
        enc, dec = {}, {}
        codes = 0
        for s in specs:
            if s.kind == ModalityKind.IMAGE:
                factor = 2 ** len(cfg.image_channels)
                if len(s.shape) != 3 or s.shape[1] % factor or s.shape[2] % factor:
                    raise SpecError(
                        f"image modality {s.name!r} of shape {tuple(s.shape)}: height and width "
                        f"must be divisible by {factor} for {len(cfg.image_channels)} conv blocks"
                    )
                enc[s.name] = (
                    ImageEncoder(s.shape, cfg.image_channels, cfg.image_code)
                    if cfg.image_encoder == "conv"
                    else DenseImageEncoder(s.shape, cfg.image_hidden, cfg.image_code)
                )
                dec[s.name] = ImageDecoder(s.shape, cfg.image_channels, cfg.latent_dim)
                codes += cfg.image_code
            elif s.kind == ModalityKind.VECTOR:
                enc[s.name] = VectorEncoder(s.size, cfg.sensor_hidden, cfg.sensor_code, cfg.sensor_encoder)
                dec[s.name] = VectorDecoder(cfg.latent_dim, cfg.sensor_hidden, s.size)
                codes += cfg.sensor_code
            else:
                raise SpecError(f"MMSSL handles image and vector modalities; {s.name!r} is {s.kind.value}")
        self.encoders = nn.ModuleDict(enc)
        self.decoders = nn.ModuleDict(dec)
        self.fusion = nn.Linear(codes, cfg.latent_dim)

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def _check(self, xs: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in xs]
        if missing:
            raise DataError(f"autoencoder input lacks modalities {missing}; expects {list(self.names)}")
        for s in self.specs:
            x = xs[s.name]
            if tuple(x.shape[1:]) != tuple(s.shape):
                raise DataError(
                    f"modality {s.name!r}: expected per-sample shape {tuple(s.shape)}, "
                    f"got {tuple(x.shape[1:])}"
                )

    def codes(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenated per-modality codes (N, Σ codes), before the fusion layer."""
        self._check(xs)
        return torch.cat([self.encoders[n](xs[n]) for n in self.names], dim=1)

    def encode(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Joint latent z (N, latent_dim)."""
        return self.fusion(torch.relu(self.codes(xs)))

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self.decoders[n](z) for n in self.names}

    def forward(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(xs))

    def layers_of(self, name: str) -> list[tuple[str, nn.Module]]:
        """The encoder of modality ``name`` as (label, module) steps, for per-layer Lipschitz analysis."""
        enc = self.encoders[name]
        if isinstance(enc, ImageEncoder):
            steps = [
                (f"conv{i // 2 + 1}", nn.Sequential(enc.conv[i], enc.conv[i + 1]))
                for i in range(0, len(enc.conv), 2)
            ]
            return steps + [("fc", nn.Sequential(nn.Flatten(1), enc.fc))]
        net = enc.net
        if isinstance(enc, DenseImageEncoder):
            return [("fc1", nn.Sequential(net[0], net[1], net[2])), ("fc2", net[3])]
        if enc.kind == "dense":
            return [("fc1", nn.Sequential(net[0], net[1])), ("fc2", net[2])]
        return [
            ("conv1", nn.Sequential(net[0], net[1], net[2])),
            ("conv2", nn.Sequential(net[3], net[4])),
            ("fc", nn.Sequential(net[5], net[6])),
        ]
