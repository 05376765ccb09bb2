"""Stage 2 of MMSSL: the compute block — detector and contraction corrector — as a batched
ensemble (leading axis G, :mod:`mmguard.train.ensemble`), so the full model and every
ablation train together as independent members on the same minibatches.

* :class:`Detector` (paper section 3, "Detector"; abstract: contrastive objectives) — a dense
  *detection encoder* (latent → hidden → hidden) and a head giving one embedding per
  modality, e_m ∈ R^k. The anomaly score of modality m is s_m = ||e_m||²: the contrastive
  loss (:func:`mmguard.mmssl.losses.contrastive_detector_loss`) pulls clean embeddings
  together at the origin and pushes corrupted ones beyond a margin.
* :class:`Corrector` (paper section 3, "Corrector: a contraction mapping") — ẑ = a·z̃ + f(z̃)
  with f dense (latent → hidden → … → latent, MaxMin activations, 1-Lipschitz). For each
  member flagged ``contract`` every weight matrix of f is projected after each optimizer step
  onto spectral norm ≤ (bound − a)^(1/L), so Lip(C) ≤ a + Π_l ||W_l||₂ ≤ bound < 1 — a
  contraction, exactly (spectral norms by SVD, not estimated). Biases do not change the constant.

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


def maxmin(h: torch.Tensor) -> torch.Tensor:
    """MaxMin (GroupSort of size 2): (max, min) of feature pairs — 1-Lipschitz and gradient-norm
    preserving, unlike ReLU, which loses norm in spectrally constrained networks."""
    pairs = h.unflatten(-1, (-1, 2))
    return torch.cat([pairs.amax(-1), pairs.amin(-1)], dim=-1)


class Corrector(nn.Module):
    """Dense contraction z̃ ↦ ẑ = a·φ(z̃) + f(φ(z̃)), (G, B, d) → (G, B, d).

    φ(z) = s ⊙ tanh(z / s) is a 1-Lipschitz per-coordinate saturation (s = 1.5x the largest
    clean training |latent| per coordinate): nearly the identity on the clean range, bounded
    far from it, so faults of unseen magnitude (a drift of 10 standard deviations) cannot push
    the corrected latent arbitrarily far. a ∈ (0, bound) is a learnable per-member scalar
    (a = bound·sigmoid(θ), initialised at 0.5) and f an MLP with MaxMin activations.
    ``project()`` scales every weight matrix of f to spectral norm ≤ c = (bound − a)^(1/L), so by
    the triangle inequality
    Lip(C) ≤ a + Π_l ‖W_l‖₂ ≤ bound < 1 for every member flagged ``contract``.

    Design decision: a plain spectrally normalised ReLU MLP (our first version) collapsed to a
    nearly constant output (its realised gain is far below the bound because ReLU discards half
    the signal); the skip term lets the corrector start close to the identity — mapping clean
    latents almost onto themselves — and the MaxMin activation keeps the gain of f (docs/mmssl.md).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        latent: int,
        hidden: Sequence[int],
        bound: float,
        contract: torch.Tensor | None = None,
        activation: str = "maxmin",
    ) -> None:
        super().__init__()
        if activation not in ("maxmin", "relu"):
            raise ValueError(f"unknown corrector activation {activation!r}; use maxmin or relu")
        if activation == "maxmin" and any(int(h) % 2 for h in hidden):
            raise ValueError(f"MaxMin needs even hidden sizes, got {list(hidden)}")
        sizes = [latent, *[int(h) for h in hidden], latent]
        self.layers = nn.ModuleList(
            EnsembleLinear(seeds, a, b, stream=301 + i)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        self.bound = float(bound)
        self.activation = activation
        g = len(seeds)
        # a = bound * sigmoid(theta) = 0.5 at initialisation
        theta0 = torch.logit(torch.tensor(min(0.5 / self.bound, 0.99)))
        self.skip_logit = nn.Parameter(torch.full((g,), float(theta0)))
        flags = torch.ones(g, dtype=torch.bool) if contract is None else contract.to(torch.bool)
        self.register_buffer("contract", flags.clone())
        # per-member, per-coordinate saturation scale s of phi(z) = s * tanh(z / s) (1-Lipschitz)
        self.register_buffer("saturation", torch.full((g, latent), 1e6))
        self.project()

    @torch.no_grad()
    def set_saturation(self, scale: torch.Tensor) -> None:
        """Set s (d,) for every member, e.g. 1.5x the largest |clean latent| per coordinate."""
        self.saturation.copy_(scale.clamp_min(1e-3).expand_as(self.saturation))

    def saturate(self, z: torch.Tensor) -> torch.Tensor:
        """phi(z) = s * tanh(z / s): 1-Lipschitz, ~identity on the clean range, bounded far away."""
        s = self.saturation.unsqueeze(1)
        return s * torch.tanh(z / s)

    def skip(self) -> torch.Tensor:
        """The per-member skip coefficient a (G,)."""
        return self.bound * torch.sigmoid(self.skip_logit)

    def per_layer_bound(self) -> torch.Tensor:
        """c_g = (bound − a_g)^(1/L) (G,)."""
        rest = (self.bound - self.skip().detach()).clamp_min(1e-6)
        return rest ** (1.0 / len(self.layers))

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = maxmin(h) if self.activation == "maxmin" else torch.relu(h)
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = self.saturate(z)
        return self.skip().view(-1, 1, 1) * u + self.residual(u)

    def spectral_norms(self) -> torch.Tensor:
        """Exact ||W_l||₂ per layer and member, shape (L, G)."""
        return torch.stack([torch.linalg.matrix_norm(layer.weight.detach(), ord=2) for layer in self.layers])

    def lipschitz_upper_bound(self) -> torch.Tensor:
        """a + Π_l ||W_l||₂ per member (G,): an upper bound of Lip(C) (activations are 1-Lipschitz)."""
        return self.skip().detach() + self.spectral_norms().prod(0)

    @torch.no_grad()
    def project(self) -> None:
        """Scale W_l[g] by min(1, c_g / ||W_l[g]||₂) for every contracted member g (all at once)."""
        c = self.per_layer_bound()
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
        activation: str = "maxmin",
    ) -> None:
        super().__init__()
        self.detector = Detector(seeds, latent, detector_hidden, modalities, embedding)
        self.corrector = Corrector(seeds, latent, corrector_hidden, bound, contract, activation)

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
