"""EMMA as a registered guard (``emma``): one trained attention module + prediction network.

``fit`` runs the thesis's two training stages (section 5.5) with the same code as the
experiments (a one-member ensemble), on the standardised splits the base class prepares:

1. one tied DAE per modality on the clean training split (chapter 4, appendix B);
2. the prediction network on clean data (the base-model), then EMMA in front of it, trained
   end to end with eq. 5.10 on the *corrupted* training split. If ``splits.train`` already
   carries fault annotations, those are used; otherwise the section 6.3.1 schedule
   (``clean_fraction`` clean, the rest evenly "only modality i", Gaussian ``sigma``) is
   applied with the fit seed. Validation is corrupted the same way and used for early
   stopping and for the decision threshold of binary tasks (``threshold_rule``).

Capabilities: **flag** — the raw score is the shifted potential Ψ_i (eq. 5.3; higher = more
likely failing), calibrated by the base class on clean validation data; **predict** — the
class prediction of the gated network (eq. 5.5 → step 5). EMMA does not correct inputs
(it attends away from them), so it has no ``transform``; :meth:`EmmaGuard.explain` returns
every interpretable quantity (Ψ, e, E, α, β).

Precision (docs/devices.md): EMMA always computes in float32 (``mixed_precision = False``) — its
networks are tiny, and both its flag (Ψ against the training minimum) and its binary prediction
(logit against a threshold) are comparisons that bf16 rounding would move.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from mmguard.data.model import MultimodalBatch
from mmguard.emma.attention import AttentionOutput
from mmguard.emma.data import num_classes_of, schedule_spec, to_streams
from mmguard.emma.losses import class_weights
from mmguard.emma.network import EmmaNetwork
from mmguard.emma.persist import build, describe
from mmguard.emma.training import (
    EmmaHyper,
    ImagePotential,
    MLPClassifier,
    StageSettings,
    build_emma,
    mlp_sizes,
    train_classifier,
    train_daes,
    train_with,
)
from mmguard.errors import CheckpointError, DataError
from mmguard.eval.metrics import select_thresholds
from mmguard.faults import apply_faults
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.seeding import derive_seed
from mmguard.train.ensemble import EnsembleMLP


class EmmaGuardConfig(GuardConfig):
    """Hyperparameters of one EMMA guard (defaults: thesis appendix B and section 6.3.1)."""

    rho: float = Field(1e-3, gt=0, description="coldness ρ (eq. 5.4)")
    lambda_c: float = Field(1e-3, ge=0, description="capacity regulariser weight (eq. 5.10)")
    lambda_e: float = Field(1e-2, ge=0, description="energy regulariser weight (eq. 5.10)")
    mmn_hidden: tuple[int, ...] = (8, 4)
    epochs: int = Field(35, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    dae_hidden: int = Field(12, ge=1)
    dae_epochs: int = Field(30, ge=1)
    dae_batch_size: int = Field(64, ge=1)
    dae_sigma: float = Field(0.01, ge=0)
    sigma: float = Field(0.5, gt=0, description="training noise on standardised data (section 6.3.1)")
    clean_fraction: float = Field(0.5, ge=0, lt=1)
    threshold_rule: Literal["roc_distance", "f1_max"] = "roc_distance"
    image_potential: Literal["conv", "flat"] = Field(
        "conv", description="potential of image modalities: conv (convolutional tied DAE, "
        "emma/conv_potential.py) or flat (the thesis's dense DAE on the flattened image)")
    image_channels: int = Field(16, ge=1, description="feature maps of the convolutional potential")
    image_kernel: int = Field(8, ge=1)
    image_stride: int = Field(4, ge=1)
    image_padding: int = Field(2, ge=0)
    unified: bool = Field(False, description="thesis chapter 7: endogenous masks and a cross-modal module "
                          "between EMMA's gating and the prediction network (emma/unified.py)")
    unified_rank: int = Field(8, ge=1, description="rank of the unified module's masks")
    potential_scale: Literal["raw", "normalised"] = Field(
        "raw", description="raw: the thesis's potential; normalised: each modality's Psi - Psi_min divided by "
        "its median on clean validation data (emma/potential.py)")


@register_guard
class EmmaGuard(Guard):
    """Energy-based multi-modal attention in front of an MLP prediction network."""

    name = "emma"
    config_class = EmmaGuardConfig
    summary = "energy-based multi-modal attention (thesis ch. 5): flags by potential, predicts the target"
    quick_config = {"epochs": 8, "dae_epochs": 8}
    flags = True
    predicts = True
    attends = True  # β of eq. 5.5
    # images get a convolutional tied DAE (image_potential="conv"; "flat": the thesis's dense DAE on the
    # flattened image, section 4.4); time series are flattened
    modality_kinds = frozenset({"vector", "image", "timeseries"})
    min_modalities = 2
    needs_target = True
    mixed_precision = False

    def __init__(self, config: EmmaGuardConfig | dict[str, Any] | None = None, *, device: str = "cpu") -> None:
        super().__init__(config, device=device)
        self.threshold: float | None = None
        self.num_classes: int = 2

    # ------------------------------------------------------------------ training
    def _corrupted(self, batch: MultimodalBatch, seed: int, split: str) -> MultimodalBatch:
        if batch.fault_mask is not None:
            return batch
        spec = schedule_spec(batch.names, self.config.sigma, self.config.clean_fraction)
        return apply_faults(batch, spec, seed=derive_seed(seed, "emma-guard", split))

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        cfg = self.config
        self.num_classes = num_classes_of(train)
        if self.num_classes == 2 and torch.unique(val.target).numel() < 2:
            raise DataError("the validation split holds a single class; EMMA chooses its decision threshold "
                            "on validation and needs both (more data, or another --split-by)")
        m = len(self.specs)
        seeds = [seed]
        one = torch.zeros(1, dtype=torch.long)
        clean_tr, clean_va = to_streams([train.clean_view()]), to_streams([val.clean_view()])
        noisy_tr = to_streams([self._corrupted(train, seed, "train")])
        noisy_va = to_streams([self._corrupted(val, seed, "val")])
        weights = class_weights(train.target, self.num_classes)
        stage = StageSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
        image = ImagePotential(cfg.image_potential, cfg.image_channels, cfg.image_kernel, cfg.image_stride,
                               cfg.image_padding)
        daes = train_daes(clean_tr, seeds, m, hidden=cfg.dae_hidden, epochs=cfg.dae_epochs,
                          batch_size=cfg.dae_batch_size, sigma=cfg.dae_sigma, image=image)
        if cfg.potential_scale == "normalised":  # calibrated on clean validation data only
            with torch.no_grad():
                for i, d in enumerate(daes):
                    v = clean_va[f"m{i}"]
                    d.calibrate_scale_(v.reshape(v.shape[0], v.shape[1], -1))
        in_features = sum(s.size for s in self.specs)
        base = MLPClassifier(EnsembleMLP(seeds, mlp_sizes(in_features, cfg.mmn_hidden, self.num_classes)),
                             m).to(self.device)
        base_res = train_classifier(base, clean_tr, clean_va, member_stream=one, stream_seeds=seeds,
                                    weights=weights, settings=stage)
        hyper = EmmaHyper(rho=torch.tensor([cfg.rho]), lambda_c=torch.tensor([cfg.lambda_c]),
                          lambda_e=torch.tensor([cfg.lambda_e]))
        net = build_emma(daes, base, one, hyper.rho, unified_rank=cfg.unified_rank if cfg.unified else None,
                         unified_seeds=[derive_seed(seed, "emma-unified")])
        res = train_with(net, noisy_tr, noisy_va, member_stream=one, stream_seeds=seeds, weights=weights,
                         hyper=hyper, settings=stage)
        self.model = net
        self.threshold = None
        if self.num_classes == 2:
            with torch.no_grad():
                logits, _ = net([noisy_va[f"m{i}"] for i in range(m)])
            self.threshold = float(select_thresholds(logits.squeeze(-1).cpu(), noisy_va["y"][0].cpu(),
                                                     cfg.threshold_rule)[0])
        return {
            "base_best_epoch": int(base_res.best_epoch[0]),
            "best_epoch": int(res.best_epoch[0]),
            "best_val_loss": float(res.best_val[0]),
            "threshold": self.threshold,
            "capacity": float(net.attention.capacity().detach()[0]),
            "potentials": {n: d.describe() for n, d in zip(self.names, daes, strict=True)},
        }

    # ------------------------------------------------------------------ hooks
    def _members(self, x: MultimodalBatch) -> list[torch.Tensor]:
        return [x.modalities[n].unsqueeze(0) for n in self.names]

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return self.model.attend(self._members(x)).psi[0]  # type: ignore[union-attr,operator]

    def _attention(self, x: MultimodalBatch) -> torch.Tensor:
        return self.model.attend(self._members(x)).beta[0]  # type: ignore[union-attr,operator]

    def _logits(self, x: MultimodalBatch) -> torch.Tensor:
        logits, _ = self.model(self._members(x))  # type: ignore[misc]
        return logits[0]

    def _class_probabilities(self, x: MultimodalBatch) -> torch.Tensor:
        logits = self._logits(x)
        if self.num_classes == 2:  # one logit: P(class 1) = sigmoid
            p1 = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1 - p1, p1], 1)
        return torch.softmax(logits, -1)

    def _predict(self, x: MultimodalBatch) -> torch.Tensor:
        logits = self._logits(x)
        if self.num_classes == 2:
            return (logits.squeeze(-1) >= self.threshold).long()
        return logits.argmax(-1)

    def _inference_module(self) -> nn.Module:
        return EmmaPath(self.model, self.threshold, self.num_classes)  # type: ignore[arg-type]

    def _extra_state(self) -> dict[str, Any]:
        return {"architecture": describe(self.model), "threshold": self.threshold, "num_classes": self.num_classes}

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.threshold = None if state["threshold"] is None else float(state["threshold"])
        self.num_classes = int(state["num_classes"])

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        model = build(state["architecture"])
        if not isinstance(model, EmmaNetwork) or model.attention.num_modalities != len(self.specs):
            raise CheckpointError("the saved architecture is not an EMMA network for these modalities")
        return model

    # ------------------------------------------------------------------ extras
    def explain(self, batch: MultimodalBatch) -> AttentionOutput:
        """Ψ, e, e_ij, E, α, β for each sample of a raw batch (member axis removed)."""
        x = self._prepare(batch)

        def attend(chunk: MultimodalBatch) -> dict[str, torch.Tensor]:
            out = self.model.attend(self._members(chunk))  # type: ignore[union-attr,operator]
            return {f: getattr(out, f)[0] for f in out.__dataclass_fields__}

        parts = self._chunked(x, attend)
        return AttentionOutput(**parts)

    def predict_logits(self, batch: MultimodalBatch) -> torch.Tensor:
        """Network outputs (N, K) (one logit for binary tasks) of a raw batch."""
        self._require_capability(self.predicts, "predict")
        return self._chunked(self._prepare(batch), self._logits)


class EmmaPath(nn.Module):
    """Export hook of EMMA: standardised modalities → the shifted potentials Ψ (``_score``) and the
    gated network's class prediction (``_predict``), from one forward pass."""

    def __init__(self, net: EmmaNetwork, threshold: float | None, num_classes: int) -> None:
        super().__init__()
        self.net, self.threshold, self.binary = net, threshold, num_classes == 2

    def forward(self, *xs: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, att = self.net([x.unsqueeze(0) for x in xs])
        logits = logits[0]
        pred = (logits.squeeze(-1) >= self.threshold).long() if self.binary else logits.argmax(-1)
        return {"scores": att.psi[0], "prediction": pred}
