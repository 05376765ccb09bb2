"""Multimodal feature reconstruction as a guard (``mmfr``; MMSSL paper table 1, row "MMFR").

The paper names MMFR without defining it. The closest well-defined published method is
**missing-modality imagination in latent space**: each modality's *feature* (its encoder code) is
regressed from the other modalities' features and decoded in place of a missing modality — the
imagination module of MMIN (Zhao, Li & Jin, "Missing Modality Imagination Network for Emotion
Recognition with Uncertain Missing Modalities", ACL 2021), which builds on the cascaded residual
autoencoder of Tran, Liu, Zhou & Jin ("Missing Modalities Imputation via Cascaded Residual
Autoencoder", CVPR 2017). Decisions in docs/baselines.md.

Model (standardised data, modalities m = 1..M):

* per-modality encoders and decoders of the MMAE (:mod:`mmguard.mmssl.autoencoder`):
  h_m = E_m(x_m), x_m ≈ D_m(h_m);
* one predictor per modality, an MLP P_m over the *other* modalities' codes, each multiplied by
  its keep bit k_j ∈ {0, 1}, and the keep bits themselves:

      ĥ_m = P_m([k_j h_j]_{j≠m}, [k_j]_{j≠m})                                        (1)

* training on the **clean** split (the cross-modal regression never sees h_m itself, so a lost
  modality needs no simulation); every epoch draws fresh keep bits k_j ~ Bernoulli(1 − drop_rate),
  so a prediction also works from a subset of the others:

      L = Σ_m ‖D_m(h_m) − x_m‖² + ‖D_m(ĥ_m) − x_m‖² + λ ‖ĥ_m − sg(h_m)‖²               (2)

  (mean squared errors; sg = stop-gradient: the regression chases the codes, the codes are shaped
  by the reconstructions only; λ = ``latent_weight``).

Guard:

* ``score`` — the cross-modal prediction residual of each modality in input space,
  r_m(S) = ‖x_m − D_m(ĥ_m(S))‖² with source set S (k_j = 1 for j ∈ S). A broken source raises the
  residuals of the modalities it predicts (cross-talk), so with M ≥ 3 modalities the score is the
  smallest residual over the source sets "all others" and "all others but one" (the generalized
  observer scheme of model-based fault isolation: each residual generator ignores one sensor;
  P. M. Frank, Automatica 26(3), 1990): r_m = min_S r_m(S). With M = 2 it is r_m(other modality).
  Calibrated by the base class;
* ``transform`` — a flagged modality is replaced by D_m(ĥ_m) predicted from the *unflagged* modalities
  only (k_j = 0 for flagged j); an unflagged modality passes through bit for bit. When every modality
  of a sample is flagged, the one with the lowest calibrated score is kept as the source (and passes
  through): nothing can be predicted from nothing, and cross-talk flags the healthy modality of a
  two-modality sample whenever the other one breaks.
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
    mlp,
    modality_decoder,
    modality_encoder,
    mse,
    residuals,
    train_summary,
)
from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.train.loop import Batch


class FeatureReconstructionConfig(BaseModel):
    """The cross-modal regression of eq. (1)–(2)."""

    model_config = ConfigDict(extra="forbid")

    predictor_hidden: int = Field(128, ge=1, description="hidden width of each predictor P_m")
    latent_weight: float = Field(1.0, ge=0, description="λ of eq. (2)")
    drop_rate: float = Field(0.25, ge=0, lt=1, description="probability of dropping another modality's code")


class MmfrConfig(GuardConfig):
    """Encoders/decoders and schedule (the MMAE's ``autoencoder`` section) and the regression."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    reconstruction: FeatureReconstructionConfig = Field(default_factory=FeatureReconstructionConfig)


class CrossModalFeatureReconstruction(nn.Module):
    """Encoders E_m, decoders D_m and predictors P_m of eq. (1)."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, hidden: int) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        codes = [code_size(s, ae) for s in specs]
        self.codes_of = dict(zip(self.names, codes, strict=True))
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, ae) for s in specs})
        self.decoders = nn.ModuleDict({s.name: modality_decoder(s, ae, c) for s, c in zip(specs, codes, strict=True)})
        m = len(specs)
        self.predictors = nn.ModuleDict({
            n: mlp([sum(codes) - c + (m - 1), hidden, c]) for n, c in zip(self.names, codes, strict=True)
        })

    def encode(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.encoders[n](xs[n]) for n in self.names}

    def predict_codes(self, h: Mapping[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """ĥ_m of eq. (1) for every m; ``keep`` (N, M) float."""
        out = {}
        for m, n in enumerate(self.names):
            others = [j for j in range(len(self.names)) if j != m]
            parts = [h[self.names[j]] * keep[:, j : j + 1] for j in others] + [keep[:, others]]
            out[n] = self.predictors[n](torch.cat(parts, 1))
        return out

    def decode(self, h: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.decoders[n](h[n]) for n in self.names}

    def loss(self, xs: Mapping[str, torch.Tensor], keep: torch.Tensor, latent_weight: float) -> torch.Tensor:
        """Eq. (2), averaged over the batch: a scalar."""
        h = self.encode(xs)
        pred = self.predict_codes(h, keep)
        own, cross = self.decode(h), self.decode(pred)
        total = torch.zeros((), device=keep.device)
        for n in self.names:
            total = total + mse(own[n], xs[n]).mean() + mse(cross[n], xs[n]).mean()
            total = total + latent_weight * (pred[n] - h[n].detach()).pow(2).mean()
        return total

    def source_sets(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(S, M) keep patterns of the score: all modalities, and with M ≥ 3 each one left out."""
        m = len(self.names)
        ones = torch.ones(1, m, device=device, dtype=dtype)
        if m < 3:
            return ones
        return torch.cat([ones, 1.0 - torch.eye(m, device=device, dtype=dtype)])

    def scores(self, xs: Mapping[str, torch.Tensor], codes: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, M) cross-modal prediction residuals, the smallest over :meth:`source_sets`
        (``codes``: this batch's :meth:`encode`, when already computed)."""
        first = xs[self.names[0]]
        sets = self.source_sets(first.device, first.dtype)  # (S, M)
        h = codes if codes is not None else self.encode(xs)
        column = torch.ones_like(first.reshape(first.shape[0], -1)[:, :1])  # (N, 1)
        best = None
        for keep in sets:  # S ≤ M + 1 patterns, each vectorised over the samples
            r = residuals(self.decode(self.predict_codes(h, column * keep)), xs, self.names)
            # a pattern is a source set of modality j when it keeps at least one other modality
            valid = (keep.sum() - keep) > 0
            r = torch.where(valid, r, torch.full_like(r, float("inf")))
            best = r if best is None else torch.minimum(best, r)
        return best  # type: ignore[return-value]

    def restore(self, xs: Mapping[str, torch.Tensor], flagged: torch.Tensor,
                codes: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Flagged modalities predicted from the unflagged ones; the others unchanged."""
        h = codes if codes is not None else self.encode(xs)
        pred = self.decode(self.predict_codes(h, (~flagged).to(xs[self.names[0]].dtype)))
        return keep_where(flagged, pred, xs, self.names)


def replaced(normalised: torch.Tensor) -> torch.Tensor:
    """(N, M) modalities to replace given calibrated scores: the flagged ones (score > 1), except that
    a sample flagged in every modality keeps its lowest-scoring modality as the source."""
    flagged = normalised > 1.0
    lowest = normalised == normalised.amin(1, keepdim=True)
    lowest = lowest & (lowest.cumsum(1) == 1)  # one modality on ties
    return flagged & ~(flagged.all(1, keepdim=True) & lowest)


class MmfrPath(nn.Module):
    """Export hook: standardised modalities → raw scores, calibrated flags, restored modalities."""

    def __init__(self, model: CrossModalFeatureReconstruction, calibrated: nn.Module) -> None:
        super().__init__()
        self.model, self.calibrated = model, calibrated

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        codes = self.model.encode(x)
        raw = self.model.scores(x, codes)
        fixed = self.model.restore(x, replaced(self.calibrated(raw)), codes)
        return {"scores": raw, "fixed": tuple(fixed[n] for n in self.model.names)}


@register_guard
class MmfrGuard(Guard):
    """Cross-modal feature reconstruction: flag by prediction residual, replace flagged modalities."""

    name = "mmfr"
    config_class = MmfrConfig
    summary = ("multimodal feature reconstruction (paper: MMFR; MMIN-style latent imagination): "
               "each modality's code regressed from the others'; replaces flagged modalities")
    quick_config = {"autoencoder": {"epochs": 8, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})
    min_modalities = 2

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return CrossModalFeatureReconstruction(self.specs, self.config.autoencoder,
                                               self.config.reconstruction.predictor_hidden)

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config.reconstruction
        names = self.names
        model = init_module(lambda: self._build_model({}), seed, "mmfr", train.modalities[names[0]].device)

        def draws(epoch: int, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
            return {"keep": (torch.rand(n, len(names), generator=gen) >= cfg.drop_rate).float()}

        def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            return module.loss({n: b[n] for n in names}, b["keep"], cfg.latent_weight).reshape(1)

        result = fit_module(model, loss_fn, train, val, self.config.autoencoder, seed=seed, label="mmfr",
                            draws=draws)
        self.model = model
        return {"train": train_summary(result)}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return self.model.scores(x.modalities)  # type: ignore[union-attr,operator]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        codes = self.model.encode(x.modalities)  # type: ignore[union-attr,operator]
        normalised = self._normalise(self.model.scores(x.modalities, codes))  # type: ignore[union-attr,operator]
        return self.model.restore(x.modalities, replaced(normalised), codes)  # type: ignore[union-attr,operator]

    def _inference_module(self) -> nn.Module:
        return MmfrPath(self.model, self.calibrated_module())  # type: ignore[arg-type]
