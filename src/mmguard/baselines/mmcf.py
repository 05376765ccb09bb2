"""Multimodal cross-modal fusion autoencoder as a guard (``mmcf``; MMSSL paper table 1, row "MMCF").

The paper names MMCF without defining it. The closest well-defined published mechanism for
"cross-modal fusion" is the **crossmodal attention** of the Multimodal Transformer (MulT; Tsai, Bai,
Liang, Kolter, Morency & Salakhutdinov, "Multimodal Transformer for Unaligned Multimodal Language
Sequences", ACL 2019): the tokens of a target modality α attend to the tokens of a source modality
β, CM_{β→α}(X_α, X_β) = softmax(Q_α K_βᵀ / √d_k) V_β, with Q_α = X_α W_Q, K_β = X_β W_K,
V_β = X_β W_V (MulT eq. 1), inside a pre-LayerNorm residual block with a position-wise
feed-forward layer (MulT eq. 2). Here it sits between the MMAE's per-modality encoders and its
decoders, and the whole autoencoder is trained as a **denoising** autoencoder on the fault mix —
exactly the DAE (:mod:`mmguard.baselines.dae`) but with the plain concatenation fusion replaced by
cross-modal attention, so ``dae`` vs ``mmcf`` isolates the fusion. Decisions in docs/baselines.md.

Model (standardised data):

* modality codes h_m = E_m(x_m) (the MMAE's encoders, :mod:`mmguard.mmssl.autoencoder`), each mapped
  to k tokens of width d: X_m = reshape(W_m relu(h_m)) + P_m (k = ``tokens``, d = ``dim``, P_m a
  learned modality/slot embedding);
* ``layers`` crossmodal blocks on the M·k tokens at once: every token of modality α attends to the
  tokens of *all other* modalities (one attention with the same-modality keys masked out, which is
  MulT's CM_{β→α} for every pair with shared weights):

      X ← X + MHA(LN(X), LN(X); same-modality keys masked),   X ← X + FFN(LN(X))

* fusion: the attended tokens, flattened, ReLU, one Linear to the joint latent z
  (``autoencoder.latent_dim``); the MMAE's decoders map z back to every modality.

Training: inputs a fresh corruption draw of the training split from the fault mix every epoch
(``train_faults``; default :func:`mmguard.faults.scenarios.training_spec`), targets the clean split;
early stopping on one fixed corrupted draw of the validation split. Guard: every sample is
reconstructed (no gate, as the MMAE and the DAE); ``score`` is the per-modality reconstruction
residual, calibrated by the base class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from mmguard.baselines.common import (
    code_size,
    fit_module,
    init_module,
    inputs,
    member,
    modality_decoder,
    modality_encoder,
    mse,
    residuals,
    train_summary,
)
from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.faults import FaultSpec
from mmguard.faults.scenarios import training_mix
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.train.loop import Batch


class AttentionConfig(BaseModel):
    """The crossmodal attention between the modality codes."""

    model_config = ConfigDict(extra="forbid")

    tokens: int = Field(4, ge=1, description="tokens per modality code")
    dim: int = Field(32, ge=1, description="token width d")
    heads: int = Field(4, ge=1, description="attention heads (must divide dim)")
    layers: int = Field(1, ge=1, description="crossmodal blocks")
    ffn: int = Field(64, ge=1, description="hidden width of the feed-forward layer")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> AttentionConfig:
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        return self


class MmcfConfig(GuardConfig):
    """Encoders/decoders and schedule (the MMAE's ``autoencoder`` section), the attention, and the
    training fault mix (a fault-spec dict; None: the default mix)."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    attention: AttentionConfig = Field(default_factory=AttentionConfig)
    train_faults: dict[str, Any] | None = None


class CrossModalBlock(nn.Module):
    """Pre-LayerNorm multi-head attention over tokens with a boolean ``blocked`` (T, T) key mask,
    then a residual feed-forward layer (MulT eq. 1–2)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.reshape(n, length, self.heads, self.head_dim).transpose(1, 2)  # (N, H, T, dh)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        q, kv = self.norm_q(x), self.norm_kv(x)
        logits = self._split(self.q(q)) @ self._split(self.k(kv)).transpose(-1, -2) / self.head_dim**0.5
        weights = torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1)
        attended = (weights @ self._split(self.v(kv))).transpose(1, 2).reshape(x.shape)
        x = x + self.out(attended)
        return x + self.ff(self.norm_ff(x))


class CrossModalFusionAutoencoder(nn.Module):
    """Encoders → code tokens → crossmodal attention → joint latent → decoders."""

    def __init__(self, specs: tuple[ModalitySpec, ...], ae: AutoencoderConfig, att: AttentionConfig) -> None:
        super().__init__()
        self.names = tuple(s.name for s in specs)
        m, k, d = len(specs), att.tokens, att.dim
        self.k, self.d = k, d
        self.encoders = nn.ModuleDict({s.name: modality_encoder(s, ae) for s in specs})
        self.to_tokens = nn.ModuleDict({s.name: nn.Linear(code_size(s, ae), k * d) for s in specs})
        self.embedding = nn.Parameter(torch.randn(m * k, d) * 0.02)
        self.blocks = nn.ModuleList(CrossModalBlock(d, att.heads, att.ffn) for _ in range(att.layers))
        self.fusion = nn.Linear(m * k * d, ae.latent_dim)
        self.decoders = nn.ModuleDict({s.name: modality_decoder(s, ae, ae.latent_dim) for s in specs})
        owner = torch.arange(m).repeat_interleave(k)
        self.register_buffer("blocked", owner[:, None] == owner[None, :], persistent=False)

    def encode(self, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Joint latent z (N, latent_dim)."""
        n = xs[self.names[0]].shape[0]
        tokens = torch.cat(
            [self.to_tokens[m](torch.relu(self.encoders[m](xs[m]))).reshape(n, self.k, self.d) for m in self.names], 1
        ) + self.embedding
        for block in self.blocks:
            tokens = block(tokens, self.blocked)
        return self.fusion(torch.relu(tokens.reshape(n, -1)))

    def forward(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.encode(xs)
        return {n: self.decoders[n](z) for n in self.names}


class MmcfPath(nn.Module):
    """Export hook: standardised modalities → reconstruction residuals and reconstructions."""

    def __init__(self, model: CrossModalFusionAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.model.names, xs, strict=True))
        recon = self.model(x)
        return {"scores": residuals(recon, x, self.model.names), "fixed": tuple(recon[n] for n in self.model.names)}


@register_guard
class MmcfGuard(Guard):
    """Denoising autoencoder with crossmodal attention between the modality codes."""

    name = "mmcf"
    config_class = MmcfConfig
    summary = ("cross-modal fusion autoencoder (paper: MMCF; MulT crossmodal attention between modality codes), "
               "denoising on the fault mix; reconstructs every sample")
    quick_config = {"autoencoder": {"epochs": 8, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})
    min_modalities = 2

    def denoise_spec(self, train: MultimodalBatch) -> FaultSpec:
        return training_mix(self.config.train_faults, train)

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return CrossModalFusionAutoencoder(self.specs, self.config.autoencoder, self.config.attention)

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        names = self.names
        model = init_module(lambda: self._build_model({}), seed, "mmcf", train.modalities[names[0]].device)

        def loss_fn(module: nn.Module, batch: Batch) -> torch.Tensor:
            b = member(batch)
            recon = module(inputs(b, names))
            return sum(mse(recon[n], b[n]).mean() for n in names).reshape(1)  # type: ignore[union-attr]

        result = fit_module(model, loss_fn, train, val, self.config.autoencoder, seed=seed, label="mmcf",
                            spec=self.denoise_spec(train))
        self.model = model
        return {"train": train_summary(result)}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        return residuals(self.model(x.modalities), x.modalities, self.names)  # type: ignore[misc]

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        return self.model(x.modalities)  # type: ignore[misc]

    def _inference_module(self) -> nn.Module:
        return MmcfPath(self.model)  # type: ignore[arg-type]
