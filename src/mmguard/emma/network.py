"""EMMA in front of a prediction network (thesis figure 5.2), batched over G members.

``EmmaNetwork`` = one frozen :class:`TiedDAE` per modality (step 1, chapter 4) +
:class:`EmmaAttention` (steps 2-4, chapter 5) + any prediction network (the MMN) that
receives the gated modalities beta_i * x_i (step 5). Inputs are a list of per-modality
tensors of shape (G, B, *shape_m); the predictor receives the same list, gated.
Modalities of any size are flattened for their autoencoder (section 4.4 notes the
shallow DAE's limits on images; the contract still holds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmguard.emma.attention import AttentionOutput, EmmaAttention
from mmguard.emma.potential import TiedDAE
from mmguard.train.ensemble import EnsembleMLP


class ConcatPredictor(nn.Module):
    """Flattens and concatenates the (gated) modalities, then applies an :class:`EnsembleMLP`."""

    def __init__(self, mlp: EnsembleMLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        flat = [x.reshape(x.shape[0], x.shape[1], -1) for x in xs]
        return self.mlp(torch.cat(flat, dim=-1))


def select_dae(dae: TiedDAE, index: torch.Tensor) -> TiedDAE:
    """A frozen copy of ``dae`` holding members ``index`` (maps seeds → grid members), on ``dae``'s device."""
    out = TiedDAE([0] * len(index), dae.W.shape[2], dae.W.shape[1]).to(dae.W.device)
    index = index.to(dae.W.device)
    with torch.no_grad():
        out.W.copy_(dae.W[index])
        out.b_f.copy_(dae.b_f[index])
        out.b_g.copy_(dae.b_g[index])
        out.psi_min.copy_(dae.psi_min[index])
    out.requires_grad_(False)
    return out


class EmmaNetwork(nn.Module):
    """Potentials → attention → gated modalities → predictor, for G members at once."""

    def __init__(self, daes: Sequence[TiedDAE], attention: EmmaAttention, predictor: nn.Module) -> None:
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
        psi_min = torch.stack([d.psi_min for d in self.daes], dim=-1)
        return self.attention(self.potentials(xs), psi_min)

    def gate(self, xs: Sequence[torch.Tensor], beta: torch.Tensor) -> list[torch.Tensor]:
        """beta_i * x_i (step 5 of figure 5.1)."""
        out = []
        for i, x in enumerate(xs):
            b = beta[..., i].reshape(*beta.shape[:2], *([1] * (x.ndim - 2)))
            out.append(x * b)
        return out

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, AttentionOutput]:
        att = self.attend(xs)
        return self.predictor(self.gate(xs, att.beta)), att
