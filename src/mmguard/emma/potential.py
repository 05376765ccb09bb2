"""Potential energy of a tied-weight denoising autoencoder (thesis chapter 4).

Reconstruction (section 4.1 with tied weights W_f = W_g^T = W, sigmoid h):

    r(x) = W^T sigmoid(W x + b_f) + b_g

trained as a *denoising* autoencoder, ``||r(x + eps) - x||^2`` with eps ~ N(0, sigma^2 I)
(eq. 4.1). Its reconstruction-error field is integrable (eq. 4.3), and the potential

    Psi(x) = - sum_k softplus(W_k . x + b_f,k) + 1/2 ||x - b_g||^2 + const      (eq. 4.7)

satisfies  dPsi/dx = -(r(x) - x)  exactly. **Sign decision:** eq. 4.6 prints
``+1/2 ||x + b_g||^2``; differentiating gives ``x + b_g`` instead of ``x - b_g`` and breaks
the identity whenever b_g != 0, so eq. 4.7's ``x - b_g`` is the correct one. The identity is
tested with autograd on random inputs (tests/emma/test_potential.py). The constant is 0.

All tensors carry a leading ensemble axis G (one autoencoder per seed, trained together,
see :mod:`mmguard.train.ensemble`); inputs are (G, N, L).

**Normalised potential** (issue 12; not in the thesis): Psi depends on a modality's dimension and
scale, so the shifted potentials of eq. 5.3 of a 31-d and a 12,288-d modality are not comparable.
Every potential carries a per-member scale ``psi_scale`` (1 = the thesis's raw potential).
:meth:`PotentialScale.calibrate_scale_` sets it to the median of ``Psi - Psi_min`` over clean
*validation* data, so that a typical clean sample sits one unit above the training minimum in
every modality. EMMA's attention reads ``(Psi - Psi_min) / psi_scale`` (:meth:`scaled_excess`);
the scale is a positive constant per modality, so the ordering of samples within a modality, and
the gradient identity up to that factor, are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmguard.train.ensemble import member_generator


class PotentialScale:
    """What every tied DAE shares (the dense one below and the convolutional one of
    :mod:`mmguard.emma.conv_potential`): the buffers ``psi_min`` (eq. 5.3) and ``psi_scale`` (the
    normalisation of the module docstring), the ensemble size, member selection and the scale's
    calibration. A subclass is an ``nn.Module`` with a parameter ``W`` whose first axis is the
    member, and implements ``potential``, ``describe`` and ``_empty`` (an untrained copy of ``n``
    members)."""

    W: torch.Tensor
    psi_min: torch.Tensor
    psi_scale: torch.Tensor

    def _register_potential_buffers(self, members: int) -> None:
        # lowest potential over the clean training set, per member (eq. 5.3)
        self.register_buffer("psi_min", torch.zeros(members))  # type: ignore[attr-defined]
        # not in the weights file: saved in describe() (so files of the raw potential still load)
        self.register_buffer("psi_scale", torch.ones(members), persistent=False)  # type: ignore[attr-defined]

    @property
    def ensemble_size(self) -> int:
        return self.W.shape[0]

    def potential(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - implemented by the DAE
        raise NotImplementedError

    def _empty(self, members: int) -> Any:  # pragma: no cover - implemented by the DAE
        raise NotImplementedError

    def select(self, index: torch.Tensor) -> Any:
        """A frozen copy holding members ``index`` (maps seeds → grid members), on this module's device
        and dtype."""
        out = self._empty(len(index)).to(self.W.device, self.W.dtype)
        index = index.to(self.W.device)
        out.load_state_dict({k: v[index] for k, v in self.state_dict().items()})  # type: ignore[attr-defined]
        out.psi_scale.copy_(self.psi_scale[index])
        return out.requires_grad_(False)

    def scaled_excess(self, x: torch.Tensor) -> torch.Tensor:
        """(Psi(x) - Psi_min) / psi_scale, (G, N): what eq. 5.3 shifts, in units of the clean spread."""
        return (self.potential(x) - self.psi_min.unsqueeze(1)) / self.psi_scale.unsqueeze(1)

    @torch.no_grad()
    def calibrate_scale_(self, clean: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
        """Set ``psi_scale`` to the median of Psi - Psi_min over ``clean`` (G, N, L) data; returns it."""
        excess = self.potential(clean) - self.psi_min.unsqueeze(1)
        self.psi_scale.copy_(excess.median(dim=1).values.clamp(min=floor))
        return self.psi_scale


class TiedDAE(PotentialScale, nn.Module):
    """G tied-weight sigmoid denoising autoencoders with L inputs and U hidden units."""

    def __init__(self, seeds: Sequence[int], in_features: int, hidden: int = 12, stream: int = 0) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (in_features + hidden))  # Glorot-uniform (the thesis is silent)
        ws = [
            (torch.rand(hidden, in_features, generator=member_generator(s, stream)) * 2 - 1) * bound
            for s in seeds
        ]
        g = len(ws)
        self.W = nn.Parameter(torch.stack(ws))  # (G, U, L)
        self.b_f = nn.Parameter(torch.zeros(g, hidden))
        self.b_g = nn.Parameter(torch.zeros(g, in_features))
        self._register_potential_buffers(g)

    @property
    def in_features(self) -> int:
        return self.W.shape[2]

    def describe(self) -> dict[str, Any]:
        return {"kind": "tied", "in_features": self.W.shape[2], "hidden": self.W.shape[1],
                "psi_scale": self.psi_scale.tolist()}

    def _empty(self, members: int) -> TiedDAE:
        return TiedDAE([0] * members, self.W.shape[2], self.W.shape[1])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b_f for x of shape (G, N, L) → (G, N, U)."""
        return torch.baddbmm(self.b_f.unsqueeze(1), x, self.W.transpose(1, 2))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """r(x) = W^T sigmoid(W x + b_f) + b_g (section 4.1, tied weights)."""
        h = torch.sigmoid(self.pre_activation(x))
        return torch.baddbmm(self.b_g.unsqueeze(1), h, self.W)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Psi(x) of eq. 4.7 per sample: (G, N, L) → (G, N). Softplus keeps it stable."""
        a = self.pre_activation(x)
        return -F.softplus(a).sum(-1) + 0.5 * ((x - self.b_g.unsqueeze(1)) ** 2).sum(-1)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """||r(x) - x||^2 per sample (the usual outlier score the thesis compares against)."""
        return ((self.reconstruct(x) - x) ** 2).sum(-1)


def fit_dae(
    dae: TiedDAE | Any,
    data: torch.Tensor,
    seeds: Sequence[int],
    *,
    epochs: int = 30,
    batch_size: int = 64,
    sigma: float = 0.01,
    lr: float = 1e-3,
    stream: int = 1,
) -> list[float]:
    """Train all G members on the same clean data (G, N, L) or (N, L); appendix B defaults.

    Each member has its own data order and corruption noise, drawn from its seed. The loss
    is eq. 4.1, ``||r(x~) - x||^2`` summed over features, averaged over the batch, summed
    over members (members stay independent). Afterwards ``psi_min`` is set to each member's
    minimum potential over ``data`` (eq. 5.3). Returns the mean loss per epoch.

    Runs on ``data``'s device (``dae`` must be there); orders and noise are drawn on the CPU and
    moved, so every device sees the same draws. Always float32: the tied DAEs are tiny and their
    potentials are compared with ``psi_min`` (docs/devices.md).
    """
    g_count = dae.ensemble_size
    if data.ndim == 2:
        data = data.unsqueeze(0).expand(g_count, -1, -1)
    n, device = data.shape[1], data.device
    gens = [member_generator(s, stream) for s in seeds]
    opt = torch.optim.Adam(dae.parameters(), lr=lr)
    history = []
    ar = torch.arange(g_count, device=device).unsqueeze(1)
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (G, N)
        noise = (torch.stack([torch.randn(n, data.shape[2], generator=g) for g in gens]) * sigma).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
        for start in range(0, n, batch_size):
            idx = orders[:, start : start + batch_size]
            x = data[ar, idx]
            x_noisy = x + noise[ar, idx]
            loss = ((dae.reconstruct(x_noisy) - x) ** 2).sum(-1).mean(-1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * idx.shape[1]
        history.append(float(total) / (n * g_count))
    with torch.no_grad():
        dae.psi_min.copy_(dae.potential(data).amin(dim=1))
    return history
