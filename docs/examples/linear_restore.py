"""A complete mmguard guard in one file: cross-modal linear restoration (``linear_restore``).

Each modality m is predicted from all the others by ridge regression fitted on the clean
training split (closed form). The failure score of modality m is its mean squared residual
against that prediction; a flagged modality is replaced by the prediction from the others.

Use it without touching mmguard:

    MMGUARD_PLUGINS=docs/examples/linear_restore.py mmguard guards
    MMGUARD_PLUGINS=docs/examples/linear_restore.py mmguard bench --data toy \
        --guards linear_restore,dae --seeds 2 --quick --out runs/lr

The base class supplies standardisation, input checks, calibration of the scores (1.0 = the
threshold), save/load and the registry; this file only writes the hooks.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmguard.data.model import MultimodalBatch
from mmguard.guard import Guard, GuardConfig, register_guard


class LinearRestoreConfig(GuardConfig):
    ridge: float = Field(1e-2, gt=0, description="ridge penalty (standardised units)")


class CrossModalRidge(nn.Module):
    """One weight matrix per modality: [others, 1] (N, D_other + 1) -> modality (N, D_m)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        total = sum(sizes)
        self.sizes = sizes
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(total - d + 1, d), requires_grad=False) for d in sizes]
        )

    def predict(self, flat: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for m, w in enumerate(self.weights):
            others = torch.cat([x for j, x in enumerate(flat) if j != m] + [torch.ones_like(flat[m][:, :1])], 1)
            out.append(others @ w)
        return out


@register_guard
class LinearRestoreGuard(Guard):
    name = "linear_restore"
    config_class = LinearRestoreConfig
    summary = "example: ridge regression of each modality from the others; restores flagged modalities"
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector"})
    min_modalities = 2

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        clean = train.clean_view()
        flat = [clean.flat(n).double() for n in self.names]
        model = CrossModalRidge([x.shape[1] for x in flat])
        for m, w in enumerate(model.weights):
            others = torch.cat([x for j, x in enumerate(flat) if j != m] + [torch.ones_like(flat[m][:, :1])], 1)
            gram = others.T @ others + self.config.ridge * len(others) * torch.eye(others.shape[1], dtype=others.dtype)
            w.data.copy_(torch.linalg.solve(gram, others.T @ flat[m]).float())
        pred = model.predict([val.flat(n) for n in self.names])
        val_err = [float((p - val.flat(n)).pow(2).mean()) for p, n in zip(pred, self.names, strict=True)]
        self.model = model
        return {"validation_mse": dict(zip(self.names, val_err, strict=True))}

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        flat = [x.flat(n) for n in self.names]
        pred = self.model.predict(flat)
        return torch.stack([(p - f).pow(2).mean(1) for p, f in zip(pred, flat, strict=True)], 1)

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        flat = [x.flat(n) for n in self.names]
        pred = self.model.predict(flat)
        flagged = self.flags_of_standardised(x)
        return {n: torch.where(flagged[:, m:m + 1], pred[m], flat[m]).reshape(x.modalities[n].shape)
                for m, n in enumerate(self.names)}

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return CrossModalRidge([s.size for s in self.specs])
