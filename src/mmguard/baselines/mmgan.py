"""Adversarial multimodal imputation as a guard (``mmgan``; MMSSL paper table 1, row "MMGAN").

The paper names MMGAN without defining it. The closest well-defined published method is GAIN
(Yoon, Jordon & van der Schaar, "GAIN: Missing Data Imputation using Generative Adversarial Nets",
ICML 2018), applied at the level of modalities: a generator imputes the corrupted modalities, a
discriminator sees the composite of observed and imputed modalities together with a *hint* and
guesses, modality by modality, which ones were imputed. Decisions in docs/baselines.md.

Notation (standardised data, modalities m = 1..M): x the clean sample, x̃ its corruption drawn from
the fault mix, m̃ ∈ {0, 1}^M the fault mask (1 = corrupted, i.e. GAIN's 1 − M).

* Generator G: the MMAE (:class:`~mmguard.mmssl.autoencoder.MultimodalAutoencoder`, conv encoders for
  images, dense for vectors, one fused latent) on the corrupted input, x̄ = G(x̃). GAIN's generator
  also reads the mask, which is known there; here the corruption is unknown at inference, so the
  generator sees the corrupted input itself (a denoising generator) and the mask enters through the
  composite and the discriminator.
* Composite (GAIN eq. 2): x̂_m = x̄_m where m̃_m = 1, else x̃_m (= x_m).
* Hint (GAIN §4): b ∈ {0, 1}^M is 1 everywhere but one modality chosen uniformly per sample; the hint
  h = b ⊙ (1 − m̃) + ½ (1 − b) reveals the mask everywhere but at that modality, and both losses are
  taken there only (b_m = 0).
* Discriminator D(x̂, h) → M logits, "modality m was observed": the MMAE's per-modality encoders, the
  codes concatenated with h, an MLP.
* Losses (GAIN eq. 5 with the generator's reconstruction term; means over the entries with b = 0):

      L_D = −E[ (1 − m̃) log D(x̂, h) + m̃ log(1 − D(x̂, h)) ]
      L_G = −E[ m̃ log D(x̂, h) ] + α Σ_m ‖x̄_m − x_m‖²

  GAIN's reconstruction term covers the observed entries only, because it never sees the missing
  values; with synthetic corruption the clean target is known, so the term covers every modality
  (as the DAE's). α = ``recon_weight``.

Training: a fresh corruption draw (and fresh hints) every epoch; per minibatch one discriminator
step, then one generator step (the training loop's :class:`~mmguard.train.loop.Phase`). Early stopping
on the generator's reconstruction error Σ_m ‖G(x̃)_m − x_m‖² on one fixed corrupted draw of the
validation split (the adversarial losses are no measure of imputation quality).

Guard: ``score`` — the generator's per-modality reconstruction residual ‖G(x)_m − x_m‖², calibrated by
the base class; ``transform`` — the GAIN composite with the calibrated flags as the mask: flagged
modalities are imputed by G(x), the others pass through bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmguard.baselines.common import (
    code_size,
    fit_module,
    init_module,
    inputs,
    keep_where,
    member,
    mlp,
    modality_encoder,
    mse,
    residuals,
    train_summary,
)
from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.faults import FaultSpec
from mmguard.faults.scenarios import training_mix
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.train.loop import Batch, Phase


class GainConfig(BaseModel):
    """The adversarial part of GAIN."""

    model_config = ConfigDict(extra="forbid")

    disc_hidden: int = Field(128, ge=1, description="hidden width of the discriminator's MLP")
    disc_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the discriminator")
    recon_weight: float = Field(10.0, ge=0, description="α: weight of the reconstruction term of L_G")


class MmganConfig(GuardConfig):
    """Generator architecture and schedule (the MMAE's ``autoencoder`` section), the adversarial part,
    and the training fault mix (a fault-spec dict; None: the default mix)."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    adversarial: GainConfig = Field(default_factory=GainConfig)
    train_faults: dict[str, Any] | None = None


class MaskDiscriminator(nn.Module):
    """D(x̂, h): per-modality encoders, codes ⊕ hint, MLP → (N, M) logits "modality observed"."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, hidden: int) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, ae) for s in specs})
        self.head = mlp([sum(code_size(s, ae) for s in specs) + len(specs), hidden, len(specs)])

    def forward(self, xs: Mapping[str, torch.Tensor], hint: torch.Tensor) -> torch.Tensor:
        codes = [torch.relu(self.encoders[n](xs[n])) for n in self.names]
        return self.head(torch.cat([*codes, hint], 1))


class GainModule(nn.Module):
    """Generator (the MMAE) and discriminator; only the generator is used at inference."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, hidden: int) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.generator = MultimodalAutoencoder(specs, ae)
        self.discriminator = MaskDiscriminator(specs, ae, hidden)

    def composite(self, xt: Mapping[str, torch.Tensor], xbar: Mapping[str, torch.Tensor], mask: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
        """GAIN eq. 2: imputed where ``mask`` (N, M) is set, observed elsewhere."""
        return keep_where(mask > 0.5, xbar, xt, self.names)

    def discriminator_loss(self, xt: Mapping[str, torch.Tensor], mask: torch.Tensor, hidden: torch.Tensor
                           ) -> torch.Tensor:
        """L_D (a scalar) on a minibatch; the generator is not differentiated."""
        with torch.no_grad():
            xbar = self.generator(xt)
        logits = self.discriminator(self.composite(xt, xbar, mask), hint(mask, hidden))
        bce = F.binary_cross_entropy_with_logits(logits, 1.0 - mask, reduction="none")
        return (bce * hidden).sum() / hidden.sum().clamp_min(1.0)

    def generator_loss(self, xt: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor],
                       mask: torch.Tensor, hidden: torch.Tensor, alpha: float) -> torch.Tensor:
        """L_G (a scalar) on a minibatch."""
        xbar = self.generator(xt)
        logits = self.discriminator(self.composite(xt, xbar, mask), hint(mask, hidden))
        adversarial = (F.softplus(-logits) * mask * hidden).sum() / hidden.sum().clamp_min(1.0)  # −m̃ log D
        recon = sum(mse(xbar[n], clean[n]).mean() for n in self.names)
        return adversarial + alpha * recon  # type: ignore[return-value]

    def restore(self, xs: Mapping[str, torch.Tensor], flagged: torch.Tensor) -> dict[str, torch.Tensor]:
        """The composite with the flags as the mask: flagged modalities imputed by G(x)."""
        return keep_where(flagged, self.generator(xs), xs, self.names)


def hint(mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """GAIN's hint h = b ⊙ (1 − m̃) + ½ (1 − b), with b = 1 − ``hidden``."""
    return (1.0 - hidden) * (1.0 - mask) + 0.5 * hidden


def hidden_modality(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """(n, M) one-hot: the modality whose mask the hint hides (b_m = 0), uniform per sample."""
    return F.one_hot(torch.randint(m, (n,), generator=gen), m).float()


class MmganPath(nn.Module):
    """Export hook: standardised modalities → residual scores, calibrated flags, composite."""

    def __init__(self, model: GainModule, calibrated: nn.Module) -> None:
        super().__init__()
        self.model, self.calibrated = model, calibrated

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        recon = self.model.generator(x)
        raw = residuals(recon, x, self.model.names)
        fixed = keep_where(self.calibrated(raw) > 1.0, recon, x, self.model.names)
        return {"scores": raw, "fixed": tuple(fixed[n] for n in self.model.names)}


@register_guard
class MmganGuard(Guard):
    """GAIN-style adversarial imputation of the flagged modalities."""

    name = "mmgan"
    config_class = MmganConfig
    summary = ("adversarial imputation (paper: MMGAN; GAIN, Yoon et al. ICML 2018): autoencoder generator, "
               "hinted mask discriminator; imputes flagged modalities")
    quick_config = {"autoencoder": {"epochs": 8, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})

    def denoise_spec(self, train: MultimodalBatch) -> FaultSpec:
        return training_mix(self.config.train_faults, train)

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return GainModule(self.specs, self.config.autoencoder, self.config.adversarial.disc_hidden)

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config.adversarial
        names = self.names
        model: GainModule = init_module(lambda: self._build_model({}), seed, "mmgan",  # type: ignore[assignment]
                                        train.modalities[names[0]].device)

        def draws(epoch: int, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
            return {"hidden": hidden_modality(n, len(names), gen)}

        def d_loss(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            return module.discriminator_loss(inputs(b, names), b["mask"], b["hidden"]).reshape(1)

        def g_loss(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            clean = {n: b[n] for n in names}
            return module.generator_loss(inputs(b, names), clean, b["mask"], b["hidden"],
                                         cfg.recon_weight).reshape(1)

        def val_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            recon = module.generator(inputs(b, names))
            return sum(mse(recon[n], b[n]).mean() for n in names).reshape(1)  # type: ignore[union-attr]

        result = fit_module(
            model, g_loss, train, val, self.config.autoencoder, seed=seed, label="mmgan",
            spec=self.denoise_spec(train), draws=draws, val_fn=val_fn,
            parameters=list(model.generator.parameters()),
            phases=[Phase(d_loss, list(model.discriminator.parameters()), lr=cfg.disc_lr)],
        )
        self.model = model
        history = [float(h[0, 0]) for h in result.phase_history]
        return {"train": train_summary(result), "discriminator_loss": history}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return residuals(self.model.generator(x.modalities), x.modalities, self.names)  # type: ignore[union-attr]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        recon = self.model.generator(x.modalities)  # type: ignore[union-attr]
        flagged = self.flags_of_raw(residuals(recon, x.modalities, self.names))  # one generator pass
        return keep_where(flagged, recon, x.modalities, self.names)

    def _inference_module(self) -> nn.Module:
        return MmganPath(self.model, self.calibrated_module())  # type: ignore[arg-type]
