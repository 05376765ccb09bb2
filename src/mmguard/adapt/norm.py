"""Test-time adaptation of normalisation layers: AdaBN and TENT.

* **AdaBN** (Li, Wang, Shi, Liu, Hou, "Revisiting Batch Normalization For Practical Domain
  Adaptation", ICLR workshop 2017): every batch-normalisation layer's running mean and
  variance are replaced by the statistics of recent unlabeled target data; weights unchanged.
* **TENT** (Wang, Shelhamer, Liu, Olshausen, Darrell, "Tent: Fully Test-Time Adaptation by
  Entropy Minimization", ICLR 2021, eq. 1–2): the Shannon entropy of the model's predictions on
  each incoming test batch is minimised with respect to the normalisation layers' affine
  parameters only; the layers normalise with the test batch's statistics. Online: the
  optimiser state carries over from batch to batch.

Both act in place on a copy the caller owns (:func:`copy_for_adaptation`), never on the saved
model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from mmguard.errors import SpecError

Forward = Callable[[nn.Module], torch.Tensor]
_NORM = (nn.modules.batchnorm._BatchNorm,)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _NORM)]


def require_norm_layers(model: nn.Module, what: str) -> list[nn.Module]:
    layers = norm_layers(model)
    if not layers:
        raise SpecError(f"{what} has no batch-normalisation layers: AdaBN and TENT need them "
                        "(e.g. the downstream model with norm: batch)")
    return layers


def copy_for_adaptation(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


@torch.no_grad()
def adabn(model: nn.Module, forward: Forward) -> None:
    """Re-estimate every BN layer's running statistics from one forward pass (``forward(model)``
    runs the model on the recent unlabeled window)."""
    layers = require_norm_layers(model, "the model")
    saved = [(m.momentum, m.training) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: exactly the window's statistics after one pass
        m.train()
    try:
        forward(model)
    finally:
        for m, (momentum, training) in zip(layers, saved, strict=True):
            m.momentum = momentum
            m.train(training)


class Tent:
    """Online entropy minimisation on the BN affine parameters of ``model`` (modified in place)."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, steps: int = 1) -> None:
        self.model, self.steps = model, steps
        layers = require_norm_layers(model, "the model")
        for p in model.parameters():
            p.requires_grad_(False)
        params = []
        for m in layers:
            m.train()  # normalise with the test batch's statistics
            m.track_running_stats = False
            m.running_mean, m.running_var = None, None
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)
                    params.append(p)
        if not params:
            raise SpecError("TENT needs affine normalisation layers")
        self.optimizer = torch.optim.Adam(params, lr=lr)

    def step(self, forward: Forward) -> torch.Tensor:
        """Adapt on one test batch, then return its logits (as TENT predicts: after the update)."""
        for _ in range(self.steps):
            with torch.enable_grad():
                logits = forward(self.model)
                loss = entropy(logits).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        with torch.no_grad():
            return forward(self.model)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N,) Shannon entropy of softmax(logits) (TENT eq. 1)."""
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)
