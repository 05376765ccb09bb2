"""Unified multi-modal attention (thesis chapter 7, figure 7.1), batched over G ensemble members.

Chapter 7 sketches, without equations, three attention components in one module in front of the
MMN:

1. **exogenous** attention β_i — EMMA itself (chapter 5), a scalar per modality that reacts to
   an abnormal input;
2. **endogenous** attention m_i — "a block of M self-attentions, where each self-attention is
   dedicated to one specific mode": a mask over the features of modality i computed from
   modality i alone;
3. **cross-modal** attention — the masked input β_i m_i ⊙ x_i "is passed through the cross-modal
   module" that uses information from all modes; its output x'_i goes to the MMN.

Decisions where the chapter is a sketch (docs/emma.md, "Unified attention"):

* **Endogenous mask** m_i = 2 sigmoid(U_i tanh(V_i x_i) + c_i), a per-feature mask in (0, 2)
  through a rank-r bottleneck (r = ``rank``, default 8). A full L_i x L_i map would need 1.5 x 10^8
  weights for a 3x64x64 camera; the bottleneck needs 2 r L_i. It is computed from the *raw*
  modality, as in figure 7.1 (the masks combine as β_i m_i).
* **Cross-modal module** x'_i = g_i ⊙ x̃_i with x̃_i = β_i m_i ⊙ x_i and the gain
  g_i = 2 sigmoid(Q_i tanh(Σ_{j≠i} P_j x̃_j) + d_i): each modality is re-weighted feature by
  feature from a rank-r summary of the *other* masked modalities (cross-modal attention uses the
  other modes as context).
* **Neutral start.** U_i, c_i, Q_i and d_i start at zero, so m_i = g_i = 1 and the unified model
  is exactly plain EMMA at initialisation (tested). The MMN starts from the base model's weights
  (section 6.3.1), which then see the same inputs as in plain EMMA.
* **No feedback loop.** The chapter says the module "can further be refined" by feeding the
  previous prediction back; mmguard's tasks are per-sample predictions with no previous output,
  so this is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmguard.train.ensemble import EnsembleLinear, EnsembleMLP


class LowRankGate(nn.Module):
    """G members of 2 sigmoid(Q tanh(z) + d) over ``out_features``; Q and d start at 0 (gate = 1)."""

    def __init__(self, seeds: Sequence[int], rank: int, out_features: int, stream: int) -> None:
        super().__init__()
        self.up = EnsembleLinear(seeds, rank, out_features, stream=stream)
        with torch.no_grad():
            for p in self.up.parameters():
                p.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.up(torch.tanh(z)))


class UnifiedPredictor(nn.Module):
    """Endogenous masks and a cross-modal module between EMMA's gating and the MMN (figure 7.1).

    Called as ``predictor(gated, raw)``: ``gated`` = [β_i x_i], ``raw`` = [x_i], each (G, B, *shape_i).
    """

    def __init__(self, mlp: EnsembleMLP, sizes: Sequence[int], seeds: Sequence[int], rank: int = 8) -> None:
        super().__init__()
        self.mlp, self.sizes, self.rank = mlp, [int(s) for s in sizes], int(rank)
        m = len(self.sizes)
        self.endo_down = nn.ModuleList(EnsembleLinear(seeds, s, rank, stream=300 + i) for i, s in enumerate(sizes))
        self.endo_gate = nn.ModuleList(LowRankGate(seeds, rank, s, stream=310 + i) for i, s in enumerate(sizes))
        self.cross_down = nn.ModuleList(EnsembleLinear(seeds, s, rank, stream=320 + i) for i, s in enumerate(sizes))
        self.cross_gate = nn.ModuleList(LowRankGate(seeds, rank, s, stream=330 + i) for i, s in enumerate(sizes))
        if m < 2:
            raise ValueError("unified attention needs at least 2 modalities")

    def masks(self, gated: Sequence[torch.Tensor], raw: Sequence[torch.Tensor]
              ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(endogenous masks m_i, cross-modal gains g_i, outputs x'_i), each flattened (G, B, L_i)."""
        flat_raw = [x.reshape(*x.shape[:2], -1) for x in raw]
        flat_gated = [x.reshape(*x.shape[:2], -1) for x in gated]
        endo = [gate(down(x)) for gate, down, x in zip(self.endo_gate, self.endo_down, flat_raw, strict=True)]
        masked = [mi * x for mi, x in zip(endo, flat_gated, strict=True)]  # β_i m_i ⊙ x_i
        summaries = torch.stack([down(x) for down, x in zip(self.cross_down, masked, strict=True)])  # (M, G, B, r)
        others = summaries.sum(0).unsqueeze(0) - summaries  # Σ_{j≠i} P_j x̃_j
        gains = [gate(others[i]) for i, gate in enumerate(self.cross_gate)]
        return endo, gains, [g * x for g, x in zip(gains, masked, strict=True)]

    def forward(self, gated: Sequence[torch.Tensor], raw: Sequence[torch.Tensor]) -> torch.Tensor:
        _, _, out = self.masks(gated, raw)
        return self.mlp(torch.cat(out, dim=-1))
