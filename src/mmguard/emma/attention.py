"""EMMA's attention module: potentials → energies → importance → attention (thesis ch. 5).

For M modalities with potentials Psi_i (G ensemble members, N samples):

* shift  Psi_i <- max(e, Psi_i - Psi_i,min + e)                        (eq. 5.3)
* self energy  e_i = w_i Psi_i + b_i,  w_i >= 1, b_i >= 0              (eq. 5.1)
* shared energy  e_ij = w_ij e_i^gamma_ij e_j^(1 - gamma_ij),
  w_ij in [-1, 1], gamma_ij in [0, 1], asymmetric                       (eq. 5.2)
* modal energy  E_i = e_i + sum_{j != i} e_ij                           (appendix C.3)
* importance  alpha = softmax(-rho E)  (Boltzmann, coldness rho)        (eq. 5.4)
* attention  beta_i = max(0, tanh(g_a alpha_i - b_a)), g_a > 0, b_a in [0, 1]   (eq. 5.5)
* capacity = (1/g_a) log[cosh(g_a - b_a) / cosh(-b_a)]                  (eq. 5.9)

Constraints are kept by *projection* (clamping) after every optimizer step:
:meth:`EmmaAttention.project_`. Decided over reparametrisation because the thesis
parametrises the quantities directly, so λ_c (g_a - b_a) acts on g_a and b_a as printed.
``g_a`` is clamped to at least ``G_A_MIN`` to keep it strictly positive.

Initialisation (the thesis is silent): w_i = 1, b_i = 0, w_ij = 0, gamma_ij = 1/2,
g_a = 1, b_a = 0 — at start E_i = e_i (no coupling) and, for equal energies, beta_i =
tanh(1/M); the neutral start of the chapter-8 annealing schedule uses the same g_a, b_a.
The shared-energy product is computed in log space, e_ij = w_ij exp(gamma log e_i +
(1 - gamma) log e_j), which is exact because e_i >= e > 0 after eq. 5.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EULER = math.e
G_A_MIN = 1e-3


@dataclass
class AttentionOutput:
    """Every interpretable quantity of one forward pass; tensors are (G, N, M) unless noted."""

    psi: torch.Tensor  # shifted potentials (eq. 5.3)
    self_energy: torch.Tensor  # e_i (eq. 5.1)
    shared_energy: torch.Tensor  # e_ij, (G, N, M, M), zero diagonal (eq. 5.2)
    modal_energy: torch.Tensor  # E_i
    log_alpha: torch.Tensor  # log importance
    alpha: torch.Tensor  # importance (eq. 5.4)
    beta: torch.Tensor  # attention (eq. 5.5)

    @property
    def total_energy(self) -> torch.Tensor:
        """sum_i E_i per sample (section 5.6 / figure 6.7), (G, N)."""
        return self.modal_energy.sum(-1)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable log(cosh(x))."""
    ax = x.abs()
    return ax + F.softplus(-2.0 * ax) - math.log(2.0)


class EmmaAttention(nn.Module):
    """G independent EMMA attention modules over M modalities (all parameters (G, ...))."""

    def __init__(self, ensemble_size: int, num_modalities: int, rho: float | Sequence[float] = 1e-3) -> None:
        super().__init__()
        g, m = int(ensemble_size), int(num_modalities)
        if m < 2:
            raise ValueError(f"EMMA needs at least 2 modalities, got {m}")
        self.num_modalities = m
        self.w_self = nn.Parameter(torch.ones(g, m))
        self.b_self = nn.Parameter(torch.zeros(g, m))
        self.w_shared = nn.Parameter(torch.zeros(g, m, m))
        self.gamma = nn.Parameter(torch.full((g, m, m), 0.5))
        self.g_a = nn.Parameter(torch.ones(g))
        self.b_a = nn.Parameter(torch.zeros(g))
        rho_t = torch.as_tensor(rho, dtype=torch.float32).reshape(-1)
        if rho_t.numel() == 1:
            rho_t = rho_t.expand(g).clone()
        if rho_t.numel() != g or bool((rho_t <= 0).any()):
            raise ValueError(f"rho must be positive, one value or one per member ({g}), got {rho_t.tolist()}")
        self.register_buffer("rho", rho_t)
        self.register_buffer("off_diagonal", ~torch.eye(m, dtype=torch.bool))

    @property
    def ensemble_size(self) -> int:
        return self.w_self.shape[0]

    @torch.no_grad()
    def project_(self) -> None:
        """Project every parameter back onto its constraint set (after each optimizer step)."""
        self.w_self.clamp_(min=1.0)
        self.b_self.clamp_(min=0.0)
        self.w_shared.clamp_(-1.0, 1.0)
        self.gamma.clamp_(0.0, 1.0)
        self.g_a.clamp_(min=G_A_MIN)
        self.b_a.clamp_(0.0, 1.0)

    def capacity(self) -> torch.Tensor:
        """Learned capacity, eq. 5.9, per member (G,)."""
        return (log_cosh(self.g_a - self.b_a) - log_cosh(-self.b_a)) / self.g_a

    def forward(self, psi_raw: torch.Tensor, psi_min: torch.Tensor) -> AttentionOutput:
        """psi_raw (G, N, M) raw potentials; psi_min (G, M) training minima."""
        psi = torch.clamp(psi_raw - psi_min.unsqueeze(1) + EULER, min=EULER)  # eq. 5.3
        e = self.w_self.unsqueeze(1) * psi + self.b_self.unsqueeze(1)  # eq. 5.1
        log_e = torch.log(e)
        gam = self.gamma.unsqueeze(1)  # (G, 1, M, M)
        log_shared = gam * log_e.unsqueeze(-1) + (1.0 - gam) * log_e.unsqueeze(-2)
        shared = (self.w_shared * self.off_diagonal).unsqueeze(1) * torch.exp(log_shared)  # eq. 5.2
        energy = e + shared.sum(-1)  # appendix C.3
        logits = -self.rho.view(-1, 1, 1) * energy
        log_alpha = torch.log_softmax(logits, dim=-1)  # eq. 5.4
        alpha = log_alpha.exp()
        beta = torch.relu(torch.tanh(self.g_a.view(-1, 1, 1) * alpha - self.b_a.view(-1, 1, 1)))  # eq. 5.5
        return AttentionOutput(psi, e, shared, energy, log_alpha, alpha, beta)


def energy_regularizer(log_alpha: torch.Tensor, fault_mask: torch.Tensor) -> torch.Tensor:
    """Omega = sum_k xi_k log alpha_k per sample (eq. 5.10), applied per section 5.5's rule.

    xi_k = -1 for a corrupted and +1 for a clean modality (from the fault mask). Section 5.5
    shows the update is stable only when the number of clean modalities is
    M' = floor((M + 1) / 2) (eqs. 5.16-5.21; with M' larger, all energies collapse). **Rule:**
    Omega is computed for every sample but contributes only for samples with exactly M'
    clean modalities; it is 0 elsewhere. For M = 2 that means samples with one corrupted
    and one clean modality.

    log_alpha (G, N, M); fault_mask (N, M) or (G, N, M) bool. Returns (G, N).
    """
    m = log_alpha.shape[-1]
    mask = fault_mask if fault_mask.ndim == 3 else fault_mask.unsqueeze(0)
    xi = 1.0 - 2.0 * mask.to(log_alpha.dtype)
    n_clean = (~mask).sum(-1)
    applies = (n_clean == (m + 1) // 2).to(log_alpha.dtype)
    return (xi * log_alpha).sum(-1) * applies
