"""U-Net conditional GAN as a guard (``mmugan``; MMSSL paper table 1, row "MMUGAN").

The paper names MMUGAN without defining it. The closest well-defined published method is pix2pix
(Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017): a U-Net generator with skip connections translates the corrupted input into the clean
one, a conditional PatchGAN discriminator judges (input, output) pairs patch by patch, and the
generator minimises the adversarial loss plus λ times an L1 term. Here it is multimodal: the camera
(any image modality) gets pix2pix's U-Net and PatchGAN, the sensors (vector modalities) a dense
generator head and a dense conditional discriminator, and every modality's code meets in one fused
bottleneck so that a lost modality can be restored from the others. Decisions in docs/baselines.md.

Generator G (standardised data):

* encoders: the MMAE's (:mod:`mmguard.mmssl.autoencoder`) — images ``len(image_channels)`` blocks
  Conv2d(k4, s2) + ReLU whose activations a_1..a_L are kept as skips, then Linear → image code;
  vectors Linear-ReLU-Linear → sensor code;
* bottleneck: the codes concatenated, ReLU, Linear → z (``latent_dim``), as in the MMAE;
* image decoder (U-Net): Linear z → the deepest grid u_L, then for l = L..1:
  u_{l−1} = ConvTranspose2d(k4, s2)([u_l, a_l]) (+ ReLU but for the output) — every level sees its
  encoder twin (pix2pix §3.1, "U-Net with skips"); vector decoder: the MMAE's Linear-ReLU-Linear.

Discriminators (conditional, pix2pix §3.2): images — a PatchGAN, Conv2d(k4, s2) + LeakyReLU(0.2)
blocks over the channel concatenation [x̃_m, y_m], then Conv2d(k3, s1) → one logit per patch; vectors —
an MLP over [x̃_m, y_m] → one logit. No normalisation layers (no batch statistics at inference) and no
dropout noise (the guard is deterministic, as every guard in mmguard).

Objective (pix2pix eq. 1–4; x̃ the corrupted input, x the clean target, mean over patches):

    L_D = ½ Σ_m [ BCE(D_m(x̃_m, x_m), 1) + BCE(D_m(x̃_m, G(x̃)_m), 0) ]
    L_G = Σ_m BCE(D_m(x̃_m, G(x̃)_m), 1) + λ Σ_m ‖G(x̃)_m − x_m‖₁                    (λ = ``l1_weight``)

Training: a fresh corruption draw of the training split from the fault mix every epoch; per
minibatch one discriminator step, then one generator step (the training loop's
:class:`~mmguard.train.loop.Phase`). Early stopping on the generator's mean squared error
Σ_m ‖G(x̃)_m − x_m‖² on one fixed corrupted draw of the validation split.

Guard: every sample is translated, as pix2pix translates every image (no gate): ``transform`` = G(x);
``score`` = the per-modality residual ‖G(x)_m − x_m‖², calibrated by the base class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmguard.baselines.common import (
    check_image,
    code_size,
    fit_module,
    init_module,
    inputs,
    member,
    mlp,
    modality_encoder,
    mse,
    residuals,
    train_summary,
)
from mmguard.data.model import ModalityKind, ModalitySpec, MultimodalBatch
from mmguard.faults import FaultSpec
from mmguard.faults.scenarios import training_mix
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.autoencoder import ImageEncoder, VectorDecoder, decoder_stem
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.train.loop import Batch, Phase


class Pix2pixConfig(BaseModel):
    """The adversarial part of pix2pix."""

    model_config = ConfigDict(extra="forbid")

    disc_channels: list[int] | None = Field(None, description="PatchGAN channels (None: image_channels)")
    disc_hidden: int = Field(128, ge=1, description="hidden width of a vector modality's discriminator")
    disc_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the discriminators")
    l1_weight: float = Field(100.0, ge=0, description="λ of L_G (pix2pix: 100)")


class MmuganConfig(GuardConfig):
    """Generator architecture and schedule (the MMAE's ``autoencoder`` section), the adversarial part,
    and the training fault mix (a fault-spec dict; None: the default mix)."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    adversarial: Pix2pixConfig = Field(default_factory=Pix2pixConfig)
    train_faults: dict[str, Any] | None = None


def encode_with_skips(enc: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """An :class:`ImageEncoder`'s code and the activation after each conv block (shallow to deep)."""
    skips = []
    h = x
    for i in range(0, len(enc.conv), 2):
        h = enc.conv[i + 1](enc.conv[i](h))
        skips.append(h)
    return enc.fc(h.flatten(1)), skips


class UNetImageDecoder(nn.Module):
    """Linear z → the deepest grid, then ConvTranspose2d(k4, s2, p1) blocks over [u_l, a_l]."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int], latent: int) -> None:
        super().__init__()
        self.grid, self.fc, rev, outs = decoder_stem(shape, channels, latent)
        self.up = nn.ModuleList(nn.ConvTranspose2d(2 * a, b, 4, 2, 1) for a, b in zip(rev, outs, strict=True))

    def forward(self, z: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        u = torch.relu(self.fc(z)).view(z.shape[0], *self.grid)
        for i, (layer, skip) in enumerate(zip(self.up, reversed(skips), strict=True)):
            u = layer(torch.cat([u, skip], 1))
            if i < len(self.up) - 1:
                u = torch.relu(u)
        return u


class UNetGenerator(nn.Module):
    """Multimodal generator: MMAE encoders and bottleneck, U-Net decoders for images, dense for vectors."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig) -> None:
        super().__init__()
        self.specs = specs
        self.names = tuple(s.name for s in specs)
        enc, dec = {}, {}
        for s in specs:
            if s.kind == ModalityKind.IMAGE:
                check_image(s, ae)
                enc[s.name] = ImageEncoder(s.shape, ae.image_channels, ae.image_code)  # conv: skips need conv
                dec[s.name] = UNetImageDecoder(s.shape, ae.image_channels, ae.latent_dim)
            else:
                enc[s.name] = modality_encoder(s, ae)
                dec[s.name] = VectorDecoder(ae.latent_dim, ae.sensor_hidden, s.size)
        self.encoders = nn.ModuleDict(enc)
        self.decoders = nn.ModuleDict(dec)
        self.fusion = nn.Linear(sum(code_size(s, ae) for s in specs), ae.latent_dim)
        self.images = frozenset(s.name for s in specs if s.kind == ModalityKind.IMAGE)

    def forward(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        codes, skips = [], {}
        for n in self.names:
            if n in self.images:
                code, skips[n] = encode_with_skips(self.encoders[n], xs[n])
            else:
                code = self.encoders[n](xs[n])
            codes.append(code)
        z = self.fusion(torch.relu(torch.cat(codes, 1)))
        return {n: self.decoders[n](z, skips[n]) if n in self.images else self.decoders[n](z) for n in self.names}


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: [x̃, y] (2C channels) → Conv2d(k4, s2) + LeakyReLU(0.2) blocks → Conv2d(k3) → (N, P)."""

    def __init__(self, channels_in: int, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 2 * channels_in
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
            prev = ch
        layers.append(nn.Conv2d(prev, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, y], 1)).flatten(1)


class VectorDiscriminator(nn.Module):
    """Conditional dense discriminator: [x̃, y] → MLP → (N, 1)."""

    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp([2 * size, hidden, 1])

    def forward(self, condition: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, y], 1))


class Pix2pixModule(nn.Module):
    """U-Net generator and one conditional discriminator per modality (only G is used at inference)."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, adv: Pix2pixConfig) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.generator = UNetGenerator(specs, ae)
        disc_channels = adv.disc_channels if adv.disc_channels is not None else ae.image_channels
        self.discriminators = nn.ModuleDict({
            s.name: PatchDiscriminator(s.shape[0], disc_channels) if s.kind == ModalityKind.IMAGE
            else VectorDiscriminator(s.size, adv.disc_hidden) for s in specs
        })

    def discriminator_loss(self, xt: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L_D (a scalar); the generator is not differentiated."""
        with torch.no_grad():
            fake = self.generator(xt)
        total = torch.zeros((), device=xt[self.names[0]].device)
        for n in self.names:
            real_logits = self.discriminators[n](xt[n], clean[n])
            fake_logits = self.discriminators[n](xt[n], fake[n])
            total = total + 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                                   + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        return total

    def generator_loss(self, xt: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor], l1_weight: float
                       ) -> torch.Tensor:
        """L_G (a scalar)."""
        fake = self.generator(xt)
        total = torch.zeros((), device=xt[self.names[0]].device)
        for n in self.names:
            logits = self.discriminators[n](xt[n], fake[n])
            total = total + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            total = total + l1_weight * (fake[n] - clean[n]).abs().mean()
        return total


class MmuganPath(nn.Module):
    """Export hook: standardised modalities → residual scores and translations."""

    def __init__(self, model: Pix2pixModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        out = self.model.generator(x)
        return {"scores": residuals(out, x, self.model.names), "fixed": tuple(out[n] for n in self.model.names)}


@register_guard
class MmuganGuard(Guard):
    """pix2pix-style translation of corrupted inputs to clean ones (U-Net + PatchGAN)."""

    name = "mmugan"
    config_class = MmuganConfig
    summary = ("U-Net conditional GAN (paper: MMUGAN; pix2pix, Isola et al. CVPR 2017): U-Net generator with "
               "skips, PatchGAN for images, dense for sensors; translates every sample")
    # small minibatches: an L1-trained generator needs more steps than the MMAE's 8 quick epochs give
    quick_config = {"autoencoder": {"epochs": 8, "patience": None, "batch_size": 16}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})

    def denoise_spec(self, train: MultimodalBatch) -> FaultSpec:
        return training_mix(self.config.train_faults, train)

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return Pix2pixModule(self.specs, self.config.autoencoder, self.config.adversarial)

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config.adversarial
        names = self.names
        model: Pix2pixModule = init_module(lambda: self._build_model({}), seed, "mmugan",  # type: ignore[assignment]
                                           train.modalities[names[0]].device)

        def d_loss(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            return module.discriminator_loss(inputs(b, names), {n: b[n] for n in names}).reshape(1)

        def g_loss(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            return module.generator_loss(inputs(b, names), {n: b[n] for n in names}, cfg.l1_weight).reshape(1)

        def val_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            out = module.generator(inputs(b, names))
            return sum(mse(out[n], b[n]).mean() for n in names).reshape(1)  # type: ignore[union-attr]

        result = fit_module(
            model, g_loss, train, val, self.config.autoencoder, seed=seed, label="mmugan",
            spec=self.denoise_spec(train), val_fn=val_fn,
            parameters=list(model.generator.parameters()),
            phases=[Phase(d_loss, list(model.discriminators.parameters()), lr=cfg.disc_lr)],
        )
        self.model = model
        history = [float(h[0, 0]) for h in result.phase_history]
        return {"train": train_summary(result), "discriminator_loss": history}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return residuals(self.model.generator(x.modalities), x.modalities, self.names)  # type: ignore[union-attr]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        return self.model.generator(x.modalities)  # type: ignore[union-attr,operator]

    def _inference_module(self) -> nn.Module:
        return MmuganPath(self.model)  # type: ignore[arg-type]
