"""Detect, reject, correct as a guard (``ccm``): the Crossmodal Compensation Model of Lee, Tan, Zhu &
Bohg, "Detect, Reject, Correct: Crossmodal Compensation of Corrupted Sensors", ICRA 2021
(arXiv:2012.00201). Decisions in docs/baselines.md.

CCM is a self-supervised multimodal representation model that **detects** a corrupted modality by
its *unimodal* reconstruction loss, **rejects** it from the fused representation and **compensates**
for it with the remaining modalities. The fusion that makes "reject" a well-defined operation is a
product of Gaussian experts (PoE) with a standard-normal prior expert, as in the multimodal VAE of
Wu & Goodman ("Multimodal Generative Models for Scalable Weakly-Supervised Learning", NeurIPS 2018)
on which CCM's representation model builds: dropping a modality is dropping its expert.

Model (standardised data, modalities m = 1..M, latent dimension d = ``autoencoder.latent_dim``):

* expert m: the MMAE's encoder of modality m (:mod:`mmguard.mmssl.autoencoder`) and a linear head,
  q_m(z | x_m) = N(μ_m, diag σ_m²);
* fusion over the kept modalities k ∈ {0, 1}^M (PoE with the prior N(0, I)):

      T = 1 + Σ_m k_m σ_m⁻²,   μ_k = T⁻¹ Σ_m k_m σ_m⁻² μ_m,   σ_k² = T⁻¹                  (1)

* one decoder per modality from z (the MMAE's decoders), D_m(z) ≈ x_m.

Training (the **clean** split, as CCM; MVAE's sub-sampled ELBO): for each subset S of the
modalities — all of them, each single modality, and (M > 2) one random subset drawn afresh every
epoch — z_S = μ_S + σ_S ⊙ ε (noise drawn afresh every epoch) reconstructs *every* modality:

      L = Σ_S [ Σ_m ‖D_m(z_S) − x_m‖² + β · KL(N(μ_S, σ_S²) ‖ N(0, I)) ]                   (2)

(mean squared errors; KL averaged over latent coordinates; β = ``beta``). The unimodal terms make
each expert alone reconstruct its own modality (the detection signal) and the others (compensation).

Guard:

* ``score`` — the unimodal reconstruction loss r_m = ‖D_m(μ_{e_m}) − x_m‖², modality m decoded from
  its own expert only: a corruption of another modality cannot raise it;
* ``transform`` — reject the flagged modalities (k_m = 0), decode them from the posterior mean of the
  remaining experts (eq. 1); unflagged modalities pass through bit for bit. With every modality
  flagged the compensation is the prior mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmguard.baselines.common import (
    code_size,
    fit_module,
    init_module,
    keep_where,
    member,
    modality_decoder,
    modality_encoder,
    mse,
    train_summary,
)
from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.train.loop import Batch

LOGVAR_BOUND = 8.0


class CompensationConfig(BaseModel):
    """The variational objective of eq. (2)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.01, ge=0, description="weight β of the KL term")
    random_subset: bool = Field(True, description="with M > 2 modalities, add one random subset per step")


class CcmConfig(GuardConfig):
    """Experts/decoders and schedule (the MMAE's ``autoencoder`` section) and the objective."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    compensation: CompensationConfig = Field(default_factory=CompensationConfig)


class CrossmodalCompensation(nn.Module):
    """Gaussian experts, product-of-experts fusion (eq. 1) and per-modality decoders."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        d = ae.latent_dim
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, ae) for s in specs})
        self.heads = nn.ModuleDict({s.name: nn.Linear(code_size(s, ae), 2 * d) for s in specs})
        self.decoders = nn.ModuleDict({s.name: modality_decoder(s, ae, d) for s in specs})

    def experts(self, xs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ² of every expert: two (N, M, d) tensors."""
        out = torch.stack([self.heads[n](torch.relu(self.encoders[n](xs[n]))) for n in self.names], 1)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(-LOGVAR_BOUND, LOGVAR_BOUND)

    @staticmethod
    def fuse(mu: torch.Tensor, logvar: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (1): posterior mean and log-variance (..., d) of the kept experts; ``keep`` (..., M)."""
        precision = torch.exp(-logvar) * keep.unsqueeze(-1)
        total = 1.0 + precision.sum(-2)
        return (precision * mu).sum(-2) / total, -torch.log(total)

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self.decoders[n](z) for n in self.names}

    def loss(self, xs: Mapping[str, torch.Tensor], subsets: torch.Tensor, eps: torch.Tensor, beta: float
             ) -> torch.Tensor:
        """Eq. (2), batch mean: ``subsets`` (B, S, M) keep masks, ``eps`` (B, S, d) noise."""
        mu, logvar = self.experts(xs)
        b, s = subsets.shape[:2]
        mu_s, logvar_s = self.fuse(mu.unsqueeze(1), logvar.unsqueeze(1), subsets)  # (B, S, d)
        z = (mu_s + torch.exp(0.5 * logvar_s) * eps).reshape(b * s, -1)
        recon = self.decode(z)
        total = torch.zeros((), device=z.device)
        for n in self.names:
            target = xs[n].unsqueeze(1).expand(b, s, *xs[n].shape[1:]).reshape(b * s, *xs[n].shape[1:])
            total = total + mse(recon[n], target).mean() * s
        kl = 0.5 * (mu_s.pow(2) + logvar_s.exp() - 1.0 - logvar_s).mean(-1)  # (B, S)
        return total + beta * kl.sum(1).mean()

    def scores(self, xs: Mapping[str, torch.Tensor],
               experts: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, M) unimodal reconstruction losses: modality m decoded from its own expert
        (``experts``: this batch's :meth:`experts`, when already computed)."""
        mu, logvar = experts if experts is not None else self.experts(xs)
        eye = torch.eye(len(self.names), device=mu.device, dtype=mu.dtype)
        z, _ = self.fuse(mu.unsqueeze(1), logvar.unsqueeze(1), eye)  # (N, M, d): z[:, m] from expert m only
        return torch.stack([mse(self.decoders[n](z[:, m]), xs[n]) for m, n in enumerate(self.names)], 1)

    def restore(self, xs: Mapping[str, torch.Tensor], flagged: torch.Tensor,
                experts: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Reject the flagged modalities and compensate them from the others (posterior mean)."""
        mu, logvar = experts if experts is not None else self.experts(xs)
        z, _ = self.fuse(mu, logvar, (~flagged).to(mu.dtype))
        return keep_where(flagged, self.decode(z), xs, self.names)


class CcmPath(nn.Module):
    """Export hook: standardised modalities → raw scores, calibrated flags, compensated modalities."""

    def __init__(self, model: CrossmodalCompensation, calibrated: nn.Module) -> None:
        super().__init__()
        self.model, self.calibrated = model, calibrated

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        experts = self.model.experts(x)
        raw = self.model.scores(x, experts)
        fixed = self.model.restore(x, self.calibrated(raw) > 1.0, experts)
        return {"scores": raw, "fixed": tuple(fixed[n] for n in self.model.names)}


def subset_masks(m: int, n: int, gen: torch.Generator, *, random_subset: bool) -> torch.Tensor:
    """(n, S, M) keep masks of eq. (2): all modalities, each single one, and (M > 2) a random subset."""
    fixed = torch.cat([torch.ones(1, m), torch.eye(m)]).unsqueeze(0).expand(n, -1, -1)
    if not (random_subset and m > 2):
        return fixed.clone()
    return torch.cat([fixed, (torch.rand(n, 1, m, generator=gen) < 0.5).float()], 1)


@register_guard
class CcmGuard(Guard):
    """Detect by unimodal reconstruction, reject the modality, compensate from the others."""

    name = "ccm"
    config_class = CcmConfig
    summary = ("crossmodal compensation (Lee et al. ICRA 2021): unimodal-reconstruction detector, "
               "flagged modalities dropped from a product of experts and decoded from the others")
    quick_config = {"autoencoder": {"epochs": 8, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})
    min_modalities = 2

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return CrossmodalCompensation(self.specs, self.config.autoencoder)

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config.compensation
        names, d = self.names, self.config.autoencoder.latent_dim
        model = init_module(lambda: self._build_model({}), seed, "ccm", train.modalities[names[0]].device)

        def draws(epoch: int, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
            subsets = subset_masks(len(names), n, gen, random_subset=cfg.random_subset)
            # validation (epoch 0): the posterior means, so epochs are compared without sampling noise
            eps = torch.randn(n, subsets.shape[1], d, generator=gen) if epoch > 0 else torch.zeros(
                n, subsets.shape[1], d)
            return {"subsets": subsets, "eps": eps}

        def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            return module.loss({n: b[n] for n in names}, b["subsets"], b["eps"], cfg.beta).reshape(1)

        result = fit_module(model, loss_fn, train, val, self.config.autoencoder, seed=seed, label="ccm",
                            draws=draws)
        self.model = model
        return {"train": train_summary(result)}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return self.model.scores(x.modalities)  # type: ignore[union-attr,operator]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        experts = self.model.experts(x.modalities)  # type: ignore[union-attr,operator]
        flagged = self.flags_of_raw(self.model.scores(x.modalities, experts))  # type: ignore[union-attr,operator]
        return self.model.restore(x.modalities, flagged, experts)  # type: ignore[union-attr,operator]

    def _inference_module(self) -> nn.Module:
        return CcmPath(self.model, self.calibrated_module())  # type: ignore[arg-type]
