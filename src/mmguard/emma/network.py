"""EMMA in front of a prediction network (thesis figure 5.2), batched over G members.

``EmmaNetwork`` = one frozen :class:`TiedDAE` per modality (step 1, chapter 4) +
:class:`EmmaAttention` (steps 2-4, chapter 5) + any prediction network (the MMN) that
receives the gated modalities beta_i * x_i (step 5). Inputs are a list of per-modality
tensors of shape (G, B, *shape_m); the predictor receives the same list, gated.
Vector modalities use the dense tied DAE; image modalities may use its convolutional form
(:mod:`mmguard.emma.conv_potential`, section 4.4's limit lifted); both take flattened inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmguard.emma.attention import AttentionOutput, EmmaAttention
from mmguard.emma.conv_potential import ConvTiedDAE
from mmguard.emma.potential import TiedDAE
from mmguard.train.ensemble import EnsembleMLP

#: a modality's potential: the dense tied DAE (thesis ch. 4) or its convolutional form for images
Potential = TiedDAE | ConvTiedDAE


class ConcatPredictor(nn.Module):
    """Flattens and concatenates the (gated) modalities, then applies an :class:`EnsembleMLP`."""

    def __init__(self, mlp: EnsembleMLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, xs: Sequence[torch.Tensor], raw: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``xs``: the gated modalities β_i x_i; ``raw`` (the ungated ones) is not used here — the unified
        predictor of :mod:`mmguard.emma.unified` reads it."""
        flat = [x.reshape(x.shape[0], x.shape[1], -1) for x in xs]
        return self.mlp(torch.cat(flat, dim=-1))


def select_dae(dae: Potential, index: torch.Tensor) -> Potential:
    """A frozen copy of ``dae`` holding members ``index`` (maps seeds → grid members), on ``dae``'s device."""
    return dae.select(index)


class EmmaNetwork(nn.Module):
    """Potentials → attention → gated modalities → predictor, for G members at once."""

    def __init__(self, daes: Sequence[Potential], attention: EmmaAttention, predictor: nn.Module) -> None:
        super().__init__()
        if len(daes) != attention.num_modalities:
            raise ValueError(f"{len(daes)} autoencoders for {attention.num_modalities} modalities")
        for d in daes:
            if d.ensemble_size != attention.ensemble_size:
                raise ValueError("autoencoders and attention must have the same ensemble size")
            d.requires_grad_(False)  # stage-1 weights are frozen (section 5.5)
        self.daes = nn.ModuleList(daes)
        self.attention = attention
        self.predictor = predictor

    def potentials(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw potentials Psi_i (eq. 4.7), (G, B, M)."""
        return torch.stack(
            [d.potential(x.reshape(*x.shape[:2], -1)) for d, x in zip(self.daes, xs, strict=True)], dim=-1
        )

    def attend(self, xs: Sequence[torch.Tensor]) -> AttentionOutput:
        """Attention from each modality's potential excess over its training minimum, in units of its
        ``psi_scale`` (1 for the thesis's raw potential; the normalised option sets it, potential.py)."""
        excess = torch.stack(
            [d.scaled_excess(x.reshape(*x.shape[:2], -1)) for d, x in zip(self.daes, xs, strict=True)], dim=-1
        )
        return self.attention(excess, torch.zeros_like(excess[:, 0]))

    def gate(self, xs: Sequence[torch.Tensor], beta: torch.Tensor) -> list[torch.Tensor]:
        """beta_i * x_i (step 5 of figure 5.1)."""
        out = []
        for i, x in enumerate(xs):
            b = beta[..., i].reshape(*beta.shape[:2], *([1] * (x.ndim - 2)))
            out.append(x * b)
        return out

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, AttentionOutput]:
        att = self.attend(xs)
        return self.predictor(self.gate(xs, att.beta), xs), att
