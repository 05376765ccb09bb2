"""Batched ensembles: G independent models trained as one.

Every parameter carries a leading ensemble axis G. Members never interact: the training
loss is the *sum* of member losses, so each member's gradient is exactly its own, and
Adam — an element-wise optimizer — then behaves exactly as G separate Adam optimizers.
This is how a 125-configuration × 5-seed grid trains in one pass (issue #3, Performance).

Member initialisation is drawn from a generator seeded by the member's own seed, so a
member's numbers do not depend on which other members share the ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def member_generator(seed: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one member and one named stream (init, data order, ...)."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(stream) * 7_919) % (2**63 - 1))
    return g


class EnsembleLinear(nn.Module):
    """G independent affine maps: y[g] = x[g] @ W[g] + b[g], x of shape (G, B, in).

    Initialised like ``torch.nn.Linear`` (uniform ±1/sqrt(in) for weight and bias), per
    member from ``member_generator(seed, stream)``.
    """

    def __init__(self, seeds: Sequence[int], in_features: int, out_features: int, stream: int = 0) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        ws, bs = [], []
        for s in seeds:
            g = member_generator(s, stream)
            ws.append((torch.rand(in_features, out_features, generator=g) * 2 - 1) * bound)
            bs.append((torch.rand(out_features, generator=g) * 2 - 1) * bound)
        self.weight = nn.Parameter(torch.stack(ws))
        self.bias = nn.Parameter(torch.stack(bs))

    @property
    def ensemble_size(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class EnsembleMLP(nn.Module):
    """G independent MLPs with ReLU hidden layers and a linear output layer.

    ``sizes=(8, 8, 4, 1)`` is the thesis's prediction network for HTRU2 (issue #3: "MLP
    8-8-4-1 on the concatenated modes").
    """

    def __init__(self, seeds: Sequence[int], sizes: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {tuple(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.layers = nn.ModuleList(
            EnsembleLinear(seeds, a, b, stream=100 + i)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def select_members(module: nn.Module, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """State dict of the members ``index`` (leading axis of every tensor)."""
    return {k: v.detach()[index].clone() for k, v in module.state_dict().items()}


def where_members(
    improved: torch.Tensor, new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-member choice between two state dicts: ``new[g]`` where ``improved[g]`` else ``old[g]``."""
    out = {}
    g = improved.shape[0]
    if g == 1:  # a single (non-ensemble) model: its tensors need no leading member axis
        src = new if bool(improved[0]) else old
        return {k: v.clone() for k, v in src.items()}
    for k, v in new.items():
        if v.ndim == 0 or v.shape[0] != g:  # shared buffers without an ensemble axis
            out[k] = v.clone()
            continue
        m = improved.view(-1, *([1] * (v.ndim - 1)))
        out[k] = torch.where(m, v, old[k])
    return out
