"""MMSSL as a registered guard (``mmssl``): the paper's section 6 pipeline on one seed.

``fit`` runs the same stage code as the experiments (:mod:`mmguard.mmssl.stages`) on the
standardised splits the base class prepares: the MMAE on the clean training split (stage 1),
then the compute block — contrastive detector + contraction corrector under layer-specific
Lipschitz modulation — on the frozen MMAE's latents of the corrupted mix (``train_faults``,
default :func:`mmguard.faults.scenarios.training_spec`).

* **flag** — the raw score of modality m is the detector's s_m = ‖e_m‖² (paper section 3,
  "Detector"); the base class calibrates it on clean validation data (1.0 = threshold).
* **correct** — the routing gate (paper section 6, "Intelligent Routing"): a sample flagged
  in any modality is decoded from the corrected latent C(z); every other sample from its own
  latent z, bit for bit (exact bypass of the corrector).

Decision (docs/mmssl.md): the guard's gate is the base class's calibrated rule — "some
modality's normalised score above 1", at most ``false_alarm_rate`` of clean validation
samples flagged. The protocol (``mmguard mmssl run``) keeps the paper's literal gate
(max_m s_m against one quantile); both calibrate to the same false-alarm rate and coincide
when the modalities' detector scores share a scale.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.faults import load_spec
from mmguard.faults.scenarios import training_spec
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.compute import ComputeBlock
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.gate import route
from mmguard.mmssl.stages import decode, encode, summary, train_autoencoder, train_compute_block


class MmsslConfig(GuardConfig):
    """Stage-1 and stage-2 settings (docs/mmssl.md) and the training fault mix (None: the default)."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    train_faults: dict[str, Any] | None = None
    #: ``full``: the strict contraction (spectral projection + clipping, docs/mmssl.md); ``clip_only``:
    #: the paper's literal corrector, gradient clipping only (issue #11)
    corrector: Literal["full", "clip_only"] = "full"


class MmsslModule(nn.Module):
    """Stage-1 MMAE + one-member compute block + the scalar latent normalisation (a plain module)."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, cc: ComputeConfig) -> None:
        super().__init__()
        self.mmae = MultimodalAutoencoder(specs, ae)
        self.block = ComputeBlock([0], self.mmae.latent_dim, len(specs), detector_hidden=cc.detector_hidden,
                                  embedding=cc.embedding_dim, corrector_hidden=cc.corrector_hidden,
                                  bound=cc.lipschitz_bound, activation=cc.corrector_activation)
        self.register_buffer("scale_mean", torch.zeros(self.mmae.latent_dim))
        self.register_buffer("scale_std", torch.ones(()))

    def detect(self, xs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent z (N, d), detector scores (N, M) and the corrected latent C(z) (N, d)."""
        z = encode(self.mmae, xs)
        return (z, *self.detect_latent(z))

    def detect_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Detector scores (N, M) and the corrected latent C(z) (N, d) of latents z (N, d)."""
        scores, corrected = self.block(((z - self.scale_mean) / self.scale_std).unsqueeze(0))
        return scores[0], corrected[0] * self.scale_std + self.scale_mean


class MmsslPath(nn.Module):
    """Export hook of MMSSL: encode → detect → calibrated gate → correct → decode, with the exact
    bypass (``route``: a torch.where) — ``_score`` and ``_transform`` in one traceable pass."""

    def __init__(self, module: MmsslModule, names: tuple[str, ...], calibrated: nn.Module) -> None:
        super().__init__()
        self.module, self.names, self.calibrated = module, names, calibrated

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        z = self.module.mmae.encode(dict(zip(self.names, xs, strict=True)))
        raw, corrected = self.module.detect_latent(z)
        flagged = (self.calibrated(raw) > 1.0).any(1)
        fixed = self.module.mmae.decode(route(z, corrected, flagged))
        return {"scores": raw, "fixed": tuple(fixed[n] for n in self.names)}


@register_guard
class MmsslGuard(Guard):
    """Detect-and-correct guard (paper section 6 pipeline)."""

    name = "mmssl"
    config_class = MmsslConfig
    summary = "MMSSL (paper): clean-trained MMAE, contrastive detector, contraction corrector, routing gate"
    quick_config = {"autoencoder": {"epochs": 8, "patience": None},
                    "compute": {"epochs": 15, "corruption_draws": 2, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config
        spec = load_spec(cfg.train_faults) if cfg.train_faults is not None else training_spec(train)
        compute = cfg.compute.model_copy(update={"false_alarm_rate": cfg.false_alarm_rate})
        mmae, r1 = train_autoencoder(train, val, cfg.autoencoder, seed=seed)
        comp = train_compute_block(mmae, train, val, spec, compute, seed=seed, variants=(cfg.corrector,))
        module = MmsslModule(self.specs, cfg.autoencoder, compute)
        module.mmae.load_state_dict(mmae.state_dict())
        module.block.load_state_dict(comp.block.state_dict())
        with torch.no_grad():
            module.scale_mean.copy_(comp.scale.mean)
            module.scale_std.copy_(comp.scale.std.reshape(()))
        self.model = module
        return {"mmae": summary(r1), "compute": summary(comp.train)}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return self.model.detect(x.modalities)[1]  # type: ignore[union-attr,operator]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        z, raw, corrected = self.model.detect(x.modalities)  # type: ignore[union-attr,operator]
        flagged = self.flags_of_raw(raw).any(1)  # the gate on the same pass's scores (one encode)
        return decode(self.model.mmae, route(z, corrected, flagged))  # type: ignore[union-attr,arg-type]

    def _inference_module(self) -> nn.Module:
        return MmsslPath(self.model, self.names, self.calibrated_module())  # type: ignore[arg-type]

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return MmsslModule(self.specs, self.config.autoencoder, self.config.compute)
