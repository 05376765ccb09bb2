"""Stage 2 of MMSSL: the compute block — detector and contraction corrector — as a batched
ensemble (leading axis G, :mod:`mmguard.train.ensemble`), so the full model and every
ablation train together as independent members on the same minibatches.

* :class:`Detector` (paper section 3, "Detector"; abstract: contrastive objectives) — a dense
  *detection encoder* (latent → hidden → hidden) and a head giving one embedding per
  modality, e_m ∈ R^k. The anomaly score of modality m is s_m = ||e_m||²: the contrastive
  loss (:func:`mmguard.mmssl.losses.contrastive_detector_loss`) pulls clean embeddings
  together at the origin and pushes corrupted ones beyond a margin.
* :class:`Corrector` (paper section 3, "Corrector: a contraction mapping") — dense layers
  latent → hidden → … → latent with ReLU (1-Lipschitz). Each member flagged ``contract`` has
  every weight matrix projected after each optimizer step onto spectral norm ≤ c with
  c = bound^(1/L) for L layers, so Lip(C) ≤ Π_l ||W_l||₂ ≤ bound < 1 — a contraction, exactly
  (the spectral norm is computed by SVD, not estimated). Biases do not change the constant.

Design decision — what "encoder" means in the modulation: the issue freezes the stage-1
encoder in stage 2 (sensitivity preservation), where amplifying its gradients would be a
no-op; the amplified group γ is the detection path of the compute block (its detection
encoder and head). See docs/mmssl.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmguard.train.ensemble import EnsembleLinear


class Detector(nn.Module):
    """Latent z (G, B, d) → per-modality embeddings (G, B, M, k) and scores s_m = ||e_m||² (G, B, M)."""

    def __init__(
        self, seeds: Sequence[int], latent: int, hidden: int, modalities: int, embedding: int
    ) -> None:
        super().__init__()
        self.modalities, self.embedding = int(modalities), int(embedding)
        self.encoder = nn.ModuleList(
            [
                EnsembleLinear(seeds, latent, hidden, stream=201),
                EnsembleLinear(seeds, hidden, hidden, stream=202),
            ]
        )
        self.head = EnsembleLinear(seeds, hidden, modalities * embedding, stream=203)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.encoder:
            h = torch.relu(layer(h))
        e = self.head(h)
        return e.view(*e.shape[:-1], self.modalities, self.embedding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.embed(z).pow(2).sum(-1)


class Corrector(nn.Module):
    """Dense contraction z̃ ↦ ẑ (G, B, d) → (G, B, d); ``project()`` keeps Lip ≤ bound for flagged members."""

    def __init__(
        self,
        seeds: Sequence[int],
        latent: int,
        hidden: Sequence[int],
        bound: float,
        contract: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        sizes = [latent, *[int(h) for h in hidden], latent]
        self.layers = nn.ModuleList(
            EnsembleLinear(seeds, a, b, stream=301 + i)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        self.bound = float(bound)
        g = len(seeds)
        flags = torch.ones(g, dtype=torch.bool) if contract is None else contract.to(torch.bool)
        self.register_buffer("contract", flags.clone())
        self.project()

    @property
    def per_layer_bound(self) -> float:
        return self.bound ** (1.0 / len(self.layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def spectral_norms(self) -> torch.Tensor:
        """Exact ||W_l||₂ per layer and member, shape (L, G)."""
        return torch.stack([torch.linalg.matrix_norm(layer.weight.detach(), ord=2) for layer in self.layers])

    def lipschitz_upper_bound(self) -> torch.Tensor:
        """Π_l ||W_l||₂ per member (G,): an upper bound of Lip(C) (ReLU is 1-Lipschitz)."""
        return self.spectral_norms().prod(0)

    @torch.no_grad()
    def project(self) -> None:
        """Scale W_l[g] by min(1, c / ||W_l[g]||₂) for every contracted member g (all at once)."""
        c = self.per_layer_bound
        for layer in self.layers:
            sigma = torch.linalg.matrix_norm(layer.weight, ord=2)  # (G,)
            scale = torch.where(
                self.contract & (sigma > c), c / sigma.clamp_min(1e-12), torch.ones_like(sigma)
            )
            layer.weight.mul_(scale.view(-1, 1, 1))


class ComputeBlock(nn.Module):
    """Detector + corrector, G members; parameter groups for the Lipschitz modulation."""

    def __init__(
        self,
        seeds: Sequence[int],
        latent: int,
        modalities: int,
        *,
        detector_hidden: int,
        embedding: int,
        corrector_hidden: Sequence[int],
        bound: float,
        contract: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.detector = Detector(seeds, latent, detector_hidden, modalities, embedding)
        self.corrector = Corrector(seeds, latent, corrector_hidden, bound, contract)

    @property
    def ensemble_size(self) -> int:
        return self.corrector.layers[0].weight.shape[0]

    def detection_parameters(self) -> list[nn.Parameter]:
        """The amplified group: detection encoder + head (paper: "encoder and detector layers")."""
        return list(self.detector.parameters())

    def correction_parameters(self) -> list[nn.Parameter]:
        """The clipped group: the corrector (paper: "in the compute block, ... clipping threshold τ")."""
        return list(self.corrector.parameters())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector(z), self.corrector(z)
