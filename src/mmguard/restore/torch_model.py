"""The modules of the detect-and-restore guard (docs/restore.md), plain PyTorch.

Notation (standardised data, modalities m = 1..M): x the clean sample, x̃ what the guard receives,
f ∈ {0, 1}^M the flags (1 = modality m is taken as faulty).

* **Detector**, trained on clean data; the failure score of modality m is a residual
  r_m = ‖D(x̃)_m − x̃_m‖² (mean over features): clean data is reconstructed well, a corruption is not.

  - ``joint``: the MMAE (:class:`~mmguard.mmssl.autoencoder.MultimodalAutoencoder`, MMSSL's stage 1),
    one fused latent. Sensitive to cross-modal inconsistency, but a fault in one modality moves the
    shared latent and raises the residual of the others too (it localises poorly);
  - ``unimodal`` (:class:`UnimodalAutoencoders`): one autoencoder per modality (the MMAE's encoder,
    a latent of its own, the MMAE's decoder), so r_m depends on x̃_m alone and a fault in another
    modality cannot raise it — the flags say *which* modality failed.
* **Fault classifier** C(x̃) → M logits, "modality m is corrupted" (optional, ``classifier``): the
  MMAE's per-modality encoders, codes concatenated, an MLP; trained on the fault mix (binary cross
  entropy against the fault mask). A residual cannot see faults that land *on* the clean manifold
  (a lost frame replaced by the mean image, half the channels at their mean, a constant hold); a
  classifier trained on such faults can. The score of modality m is then
  s_m = max(r_m / q^r_m, softplus(C_m) / q^c_m), each term divided by its (1 − α) quantile on the
  clean training split (``scales``), so both speak the same units before the base class calibrates s.
* **Restorer** R(x̃, f): per-modality encoders E_m (the MMAE's), a fusion layer that reads the codes
  *and the flags*, z = W [relu(E_1(x̃_1)), …, relu(E_M(x̃_M)), f] + b, and per-modality decoders
  (the MMAE's). Knowing which modality is faulty, R can rebuild it from the healthy ones (and from
  what is left of it, ``flagged_input = "keep"``; or from the others only, ``"drop"``, where a
  flagged modality's input is replaced by zeros = the training mean). With ``skip``, the decoder of a
  vector modality reads [z, x̃_m] instead of z (a skip past the bottleneck): per channel, it can
  return what is left of x̃_m (the healthy half of a half-lost modality, an offset reading less the
  offset) without squeezing it through the fused latent; images keep the plain decoder.
* **Gate** (exact bypass per modality): y_m = R(x̃, f)_m where f_m = 1, else x̃_m bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmguard.baselines.common import code_size, keep_where, modality_decoder, modality_encoder, residuals
from mmguard.data.model import ModalityKind, ModalitySpec
from mmguard.mmssl.autoencoder import MultimodalAutoencoder, VectorDecoder
from mmguard.mmssl.config import AutoencoderConfig


class FlagConditionedAutoencoder(nn.Module):
    """R(x̃, f): the MMAE's encoders and decoders around a fusion layer that also reads the flags."""

    def __init__(self, specs: Sequence[ModalitySpec], cfg: AutoencoderConfig, *, drop_flagged: bool,
                 skip: bool = False) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.drop_flagged = drop_flagged
        #: the vector modalities whose decoder reads [z, x̃_m] (``skip``)
        self.skipped = frozenset(s.name for s in specs if skip and s.kind == ModalityKind.VECTOR)
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, cfg) for s in specs})
        self.fusion = nn.Linear(sum(code_size(s, cfg) for s in specs) + len(specs), cfg.latent_dim)
        self.decoders = nn.ModuleDict({
            s.name: VectorDecoder(cfg.latent_dim + s.size, cfg.sensor_hidden, s.size) if s.name in self.skipped
            else modality_decoder(s, cfg, cfg.latent_dim) for s in specs})

    def forward(self, xs: Mapping[str, torch.Tensor], flags: torch.Tensor) -> dict[str, torch.Tensor]:
        """All M modalities rebuilt (N, *shape); ``flags`` (N, M) float in {0, 1}."""
        seen = {}
        for m, n in enumerate(self.names):
            x = xs[n]
            if self.drop_flagged:
                x = x * (1.0 - flags[:, m]).reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
            seen[n] = x
        codes = [torch.relu(self.encoders[n](seen[n])) for n in self.names]
        z = self.fusion(torch.cat([*codes, flags.to(codes[0].dtype)], 1))
        return {n: self.decoders[n](torch.cat([z, seen[n].to(z.dtype)], 1) if n in self.skipped else z)
                for n in self.names}


class UnimodalAutoencoders(nn.Module):
    """One autoencoder per modality: x_m → E_m → relu → Linear → z_m (latent_dim) → D_m → x̂_m."""

    def __init__(self, specs: Sequence[ModalitySpec], cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, cfg) for s in specs})
        self.bottlenecks = nn.ModuleDict({s.name: nn.Linear(code_size(s, cfg), cfg.latent_dim) for s in specs})
        self.decoders = nn.ModuleDict({s.name: modality_decoder(s, cfg, cfg.latent_dim) for s in specs})

    def forward(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.decoders[n](self.bottlenecks[n](torch.relu(self.encoders[n](xs[n])))) for n in self.names}


def build_detector(specs: Sequence[ModalitySpec], cfg: AutoencoderConfig, kind: str) -> nn.Module:
    """The ``joint`` (MMAE) or ``unimodal`` detector autoencoder."""
    return MultimodalAutoencoder(specs, cfg) if kind == "joint" else UnimodalAutoencoders(specs, cfg)


class FaultClassifier(nn.Module):
    """C(x̃): per-modality encoders, codes ⊕, MLP → (N, M) logits "modality m is corrupted"."""

    def __init__(self, specs: Sequence[ModalitySpec], cfg: AutoencoderConfig, hidden: int) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, cfg) for s in specs})
        sizes = [sum(code_size(s, cfg) for s in specs), hidden, len(specs)]
        self.head = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]))

    def forward(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.encoders[n](xs[n])) for n in self.names], 1))


class DetectRestore(nn.Module):
    """Detector (a clean autoencoder) and restorer, with the per-modality exact-bypass gate."""

    def __init__(self, specs: Sequence[ModalitySpec], detector: AutoencoderConfig, restorer: AutoencoderConfig,
                 *, drop_flagged: bool, detector_kind: str = "joint", classifier_hidden: int | None = None,
                 skip: bool = False) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        self.detector = build_detector(specs, detector, detector_kind)
        self.classifier = FaultClassifier(specs, detector, classifier_hidden) if classifier_hidden else None
        # q^r and q^c of the module docstring (set after training; ones until then)
        self.register_buffer("scales", torch.ones(2, len(self.names)))
        self.restorer = FlagConditionedAutoencoder(specs, restorer, drop_flagged=drop_flagged, skip=skip)

    def parts(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(N, M) residuals r, or (N, 2, M) residuals and softplus(C) with a classifier; unscaled."""
        r = residuals(self.detector(xs), xs, self.names)
        if self.classifier is None:
            return r
        return torch.stack([r, nn.functional.softplus(self.classifier(xs))], 1)

    def scores(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(N, M) raw failure scores: r_m, or s_m = max(r_m / q^r_m, softplus(C_m) / q^c_m)."""
        p = self.parts(xs)
        if self.classifier is None:
            return p
        return (p / self.scales).amax(1)

    def restore(self, xs: Mapping[str, torch.Tensor], flagged: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gate: flagged modalities rebuilt by R(x̃, f), the others passed through bit for bit."""
        return keep_where(flagged, self.restorer(xs, flagged.float()), xs, self.names)


class DetectRestorePath(nn.Module):
    """Export hook: standardised modalities → raw scores, calibrated flags, restored modalities."""

    def __init__(self, model: DetectRestore, calibrated: nn.Module) -> None:
        super().__init__()
        self.model, self.calibrated = model, calibrated

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        raw = self.model.scores(x)
        fixed = self.model.restore(x, self.calibrated(raw) > 1.0)
        return {"scores": raw, "fixed": tuple(fixed[n] for n in self.model.names)}
