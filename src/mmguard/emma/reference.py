"""A deliberately naive, per-sample EMMA written straight from the thesis equations.

**This module is the test oracle and the benchmark baseline — it is slow by design.**

Everything here works on *one* model (no ensemble axis) and *one* sample at a time, with
explicit Python loops over hidden units, modalities and modality pairs, the way the
thesis's own implementation processed samples one after the other. It shares no code with
the vectorized implementation (:mod:`mmguard.emma.potential`, :mod:`mmguard.emma.attention`,
:mod:`mmguard.emma.network`): the tests in ``tests/emma/test_reference_oracle.py`` compare
the two, and ``benchmarks/bench_emma_throughput.py`` measures how much faster the batched
ensemble trains than this per-sample trainer.

Conventions (single model, plain tensors, any float dtype):

* a tied DAE is ``W`` (U, L), ``b_f`` (U,), ``b_g`` (L,) — section 4.1, W_f = W_g^T = W;
* attention parameters: ``w_self`` (M,), ``b_self`` (M,), ``w_shared`` (M, M),
  ``gamma`` (M, M), scalars ``g_a``, ``b_a`` and the coldness ``rho``;
* the prediction network (MMN) is a list of ``(weight (in, out), bias (out,))`` layers with
  ReLU between layers and a single output logit (binary task, class-weighted BCE).

Inner products over the input features of one unit use :func:`torch.dot`; everything
above that (hidden units, modalities, modality pairs, output units, samples) is a Python
loop over scalars, so autograd records scalar operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

EULER = math.e


# ---------------------------------------------------------------------------- scalar helpers


def _softplus(a: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(a)) for a 0-d tensor, written as max(a, 0) + log1p(exp(-|a|)) (no overflow)."""
    return torch.clamp(a, min=0.0) + torch.log1p(torch.exp(-torch.abs(a)))


def _sigmoid(a: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-a)) for a 0-d tensor, stable on both sides."""
    if float(a) >= 0:
        return 1.0 / (1.0 + torch.exp(-a))
    ea = torch.exp(a)
    return ea / (1.0 + ea)


# ------------------------------------------------------------------------- potentials (ch. 4)


def reference_pre_activation(W: torch.Tensor, b_f: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """a_k = W_k . x + b_f,k for each hidden unit k (a Python list of 0-d tensors)."""
    return [torch.dot(W[k], x) + b_f[k] for k in range(W.shape[0])]


def reference_potential(W: torch.Tensor, b_f: torch.Tensor, b_g: torch.Tensor,
                        x: torch.Tensor) -> torch.Tensor:
    """Psi(x) of eq. 4.7 for one sample x (L,), with the additive constant set to 0.

        Psi(x) = - sum_k log(1 + exp(W_k . x + b_f,k)) + 1/2 ||x - b_g||^2

    Loops over the hidden units k and the input features l.
    """
    total = torch.zeros((), dtype=x.dtype)
    for a_k in reference_pre_activation(W, b_f, x):
        total = total - _softplus(a_k)
    quad = torch.zeros((), dtype=x.dtype)
    for l in range(x.shape[0]):
        quad = quad + (x[l] - b_g[l]) ** 2
    return total + 0.5 * quad


def reference_reconstruct(W: torch.Tensor, b_f: torch.Tensor, b_g: torch.Tensor,
                          x: torch.Tensor) -> torch.Tensor:
    """r(x) = W^T sigmoid(W x + b_f) + b_g (section 4.1, tied weights) for one sample x (L,)."""
    h = [_sigmoid(a_k) for a_k in reference_pre_activation(W, b_f, x)]
    out = []
    for l in range(W.shape[1]):
        r_l = b_g[l]
        for k in range(W.shape[0]):
            r_l = r_l + W[k, l] * h[k]
        out.append(r_l)
    return torch.stack(out)


# -------------------------------------------------------------------------- attention (ch. 5)


@dataclass
class ReferenceAttention:
    """All quantities of one sample's attention pass (tensors of shape (M,) unless noted)."""

    psi: torch.Tensor  # shifted potentials, eq. 5.3
    e: torch.Tensor  # self energies, eq. 5.1
    e_ij: torch.Tensor  # shared energies (M, M), zero diagonal, eq. 5.2
    E: torch.Tensor  # modal energies E_i = e_i + sum_{j != i} e_ij
    alpha: torch.Tensor  # importance, eq. 5.4
    beta: torch.Tensor  # attention, eq. 5.5
    log_alpha: torch.Tensor  # log importance (for the energy regulariser, eq. 5.10)


def reference_attention(
    psi_raw: torch.Tensor,
    psi_min: torch.Tensor,
    w_self: torch.Tensor,
    b_self: torch.Tensor,
    w_shared: torch.Tensor,
    gamma: torch.Tensor,
    g_a: torch.Tensor | float,
    b_a: torch.Tensor | float,
    rho: torch.Tensor | float,
) -> ReferenceAttention:
    """EMMA's steps 2-4 for ONE sample with M modalities, loops over i and j.

    * eq. 5.3:  Psi_i <- max(e, Psi_i - Psi_i^(min) + e)
    * eq. 5.1:  e_i = w_i Psi_i + b_i
    * eq. 5.2:  e_ij = w_ij e_i^gamma_ij e_j^(1 - gamma_ij)   (i != j)
    * modal energy E_i = e_i + sum_{j != i} e_ij
    * eq. 5.4:  alpha_i = exp(-rho E_i) / Z — evaluated with the (exact) shift by min_j E_j so
      that exp does not underflow for every modality at once
    * eq. 5.5:  beta_i = max(0, tanh(g_a alpha_i - b_a))
    """
    m = psi_raw.shape[0]
    psi, e = [], []
    for i in range(m):
        p = torch.clamp(psi_raw[i] - psi_min[i] + EULER, min=EULER)
        psi.append(p)
        e.append(w_self[i] * p + b_self[i])
    rows = []
    energies = []
    for i in range(m):
        row = []
        total = e[i]
        for j in range(m):
            if i == j:
                row.append(torch.zeros((), dtype=psi_raw.dtype))
                continue
            e_ij = w_shared[i, j] * e[i] ** gamma[i, j] * e[j] ** (1.0 - gamma[i, j])
            row.append(e_ij)
            total = total + e_ij
        rows.append(torch.stack(row))
        energies.append(total)
    e_min = energies[0]
    for i in range(1, m):
        e_min = torch.minimum(e_min, energies[i])
    z = torch.zeros((), dtype=psi_raw.dtype)
    for i in range(m):
        z = z + torch.exp(-rho * (energies[i] - e_min))
    log_alpha, alpha, beta = [], [], []
    for i in range(m):
        la = -rho * (energies[i] - e_min) - torch.log(z)
        log_alpha.append(la)
        a_i = torch.exp(la)
        alpha.append(a_i)
        beta.append(torch.relu(torch.tanh(g_a * a_i - b_a)))
    return ReferenceAttention(
        psi=torch.stack(psi), e=torch.stack(e), e_ij=torch.stack(rows), E=torch.stack(energies),
        alpha=torch.stack(alpha), beta=torch.stack(beta), log_alpha=torch.stack(log_alpha),
    )


def reference_capacity(g_a: float, b_a: float) -> float:
    """Capacity of eq. 5.9, (1/g_a) log[cosh(g_a - b_a) / cosh(-b_a)], the closed form of eq. 5.7.

    Direct evaluation with :func:`math.cosh`, valid while |g_a - b_a| and |b_a| stay below ~700.
    """
    g_a, b_a = float(g_a), float(b_a)
    return math.log(math.cosh(g_a - b_a) / math.cosh(-b_a)) / g_a


def reference_energy_regularizer(log_alpha: torch.Tensor, corrupted: Sequence[bool]) -> torch.Tensor:
    """Omega = sum_k xi_k log alpha_k (eq. 5.10) for one sample; 0 unless section 5.5's rule holds.

    xi_k = -1 for a corrupted and +1 for a clean modality. Section 5.5 (eqs. 5.16-5.21)
    derives a stable update only for M' = floor((M + 1) / 2) clean modalities, so Omega
    counts only for samples with exactly that many clean modalities.
    """
    m = len(corrupted)
    n_clean = sum(1 for c in corrupted if not c)
    omega = torch.zeros((), dtype=log_alpha.dtype)
    if n_clean != (m + 1) // 2:
        return omega
    for k in range(m):
        xi = -1.0 if corrupted[k] else 1.0
        omega = omega + xi * log_alpha[k]
    return omega


# --------------------------------------------------------------- prediction network + loss


def reference_mlp(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """Forward pass of the MMN for one sample: unit-by-unit affine maps, ReLU between layers."""
    h = x
    for li, (w, b) in enumerate(layers):
        out = []
        for o in range(w.shape[1]):
            z = torch.dot(h, w[:, o]) + b[o]
            if li < len(layers) - 1:
                z = torch.relu(z)
            out.append(z)
        h = torch.stack(out)
    return h


def reference_bce_with_logit(z: torch.Tensor, y: float) -> torch.Tensor:
    """Binary cross-entropy of one logit z and label y: max(z, 0) - z y + log(1 + exp(-|z|))."""
    return torch.clamp(z, min=0.0) - z * y + torch.log1p(torch.exp(-torch.abs(z)))


# ------------------------------------------------------------------------------- trainer


@dataclass
class ReferenceDAE:
    """One frozen tied DAE of one modality (stage 1), with its training minimum Psi^(min)."""

    W: torch.Tensor
    b_f: torch.Tensor
    b_g: torch.Tensor
    psi_min: float


class ReferenceEmmaTrainer:
    """Per-sample end-to-end training of ONE EMMA + MMN model (stage 2, section 5.5).

    One :meth:`step` on a minibatch of B samples loops over the samples; for each sample it
    computes the potentials of every modality (eq. 4.7, frozen DAEs), the attention (eqs.
    5.1-5.5), the gated input beta_i x_i, the MMN logit and that sample's share of eq. 5.10

        L~ = sum_n w_n BCE_n / sum_n w_n + lambda_c (g_a - b_a) - lambda_e mean_n Omega_n,

    and back-propagates it with autograd (gradients accumulate over samples). Then it makes
    one Adam step (Kingma & Ba: bias-corrected first and second moments, written out here)
    and projects the attention parameters back onto their constraint sets (eqs. 5.1, 5.2,
    5.5): w_i >= 1, b_i >= 0, w_ij in [-1, 1], gamma_ij in [0, 1], g_a >= g_a_min > 0,
    b_a in [0, 1].

    This is the oracle for the vectorized training step and the baseline of the throughput
    benchmark; it is slow by design.
    """

    ATTENTION_NAMES = ("w_self", "b_self", "w_shared", "gamma", "g_a", "b_a")

    def __init__(
        self,
        daes: Sequence[ReferenceDAE],
        attention: dict[str, torch.Tensor],
        mlp: Sequence[tuple[torch.Tensor, torch.Tensor]],
        *,
        rho: float,
        lambda_c: float,
        lambda_e: float,
        class_weights: Sequence[float] = (1.0, 1.0),
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        g_a_min: float = 1e-3,
    ) -> None:
        self.daes = [ReferenceDAE(d.W.detach().clone(), d.b_f.detach().clone(), d.b_g.detach().clone(),
                                  float(d.psi_min)) for d in daes]
        self.params: dict[str, torch.Tensor] = {}
        for name in self.ATTENTION_NAMES:
            self.params[name] = attention[name].detach().clone().requires_grad_(True)
        for i, (w, b) in enumerate(mlp):
            self.params[f"mlp.{i}.weight"] = w.detach().clone().requires_grad_(True)
            self.params[f"mlp.{i}.bias"] = b.detach().clone().requires_grad_(True)
        self.num_layers = len(mlp)
        self.rho = float(rho)
        self.lambda_c = float(lambda_c)
        self.lambda_e = float(lambda_e)
        self.class_weights = [float(w) for w in class_weights]
        self.lr, self.betas, self.eps, self.g_a_min = float(lr), betas, float(eps), float(g_a_min)
        self.t = 0
        self.m1 = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.m2 = {k: torch.zeros_like(v) for k, v in self.params.items()}

    @classmethod
    def from_network(cls, net, member: int = 0, **kwargs) -> ReferenceEmmaTrainer:
        """Copy member ``member`` of a vectorized :class:`~mmguard.emma.network.EmmaNetwork`.

        The network's predictor must be a ``ConcatPredictor`` around an ``EnsembleMLP``; ``rho``
        defaults to the member's coldness.
        """
        g = member
        daes = [ReferenceDAE(d.W[g], d.b_f[g], d.b_g[g], float(d.psi_min[g])) for d in net.daes]
        att = net.attention
        attention = {name: getattr(att, name)[g] for name in cls.ATTENTION_NAMES}
        mlp = [(layer.weight[g], layer.bias[g]) for layer in net.predictor.mlp.layers]
        kwargs.setdefault("rho", float(att.rho[g]))
        return cls(daes, attention, mlp, **kwargs)

    # -- forward

    def mlp_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.params
        return [(p[f"mlp.{i}.weight"], p[f"mlp.{i}.bias"]) for i in range(self.num_layers)]

    def forward_sample(
        self, xs: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, ReferenceAttention, torch.Tensor]:
        """One sample (a list of M flat modality vectors) → (logit (1,), attention, raw potentials (M,))."""
        with torch.no_grad():  # stage-1 autoencoders are frozen (section 5.5)
            psi_raw = torch.stack([reference_potential(d.W, d.b_f, d.b_g, x)
                                   for d, x in zip(self.daes, xs, strict=True)])
        psi_min = torch.tensor([d.psi_min for d in self.daes], dtype=psi_raw.dtype)
        p = self.params
        att = reference_attention(psi_raw, psi_min, p["w_self"], p["b_self"], p["w_shared"], p["gamma"],
                                  p["g_a"], p["b_a"], self.rho)
        gated = []
        for i, x in enumerate(xs):
            for l in range(x.shape[0]):
                gated.append(att.beta[i] * x[l])
        logit = reference_mlp(self.mlp_layers(), torch.stack(gated))
        return logit, att, psi_raw

    # -- training

    def step(self, xs: Sequence[torch.Tensor], y: torch.Tensor, fault_mask: torch.Tensor) -> float:
        """One training step on a minibatch: xs M tensors (B, L_i), y (B,), fault_mask (B, M) bool.

        Returns the value of eq. 5.10 on the minibatch (before the update).
        """
        b = int(y.shape[0])
        labels = [int(v) for v in y.tolist()]
        weight_sum = sum(self.class_weights[c] for c in labels)
        for v in self.params.values():
            v.grad = None
        total = 0.0
        for n in range(b):
            logit, att, _ = self.forward_sample([x[n].reshape(-1) for x in xs])
            w_n = self.class_weights[labels[n]]
            bce = reference_bce_with_logit(logit[0], float(labels[n]))
            omega = reference_energy_regularizer(att.log_alpha, [bool(c) for c in fault_mask[n].tolist()])
            loss_n = w_n * bce / weight_sum - self.lambda_e * omega / b
            loss_n.backward()
            total += float(loss_n.detach())
        capacity_term = self.lambda_c * (self.params["g_a"] - self.params["b_a"])
        capacity_term.backward()
        total += float(capacity_term.detach())
        self._adam()
        self._project()
        return total

    @torch.no_grad()
    def _adam(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        for k, p in self.params.items():
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            self.m1[k] = beta1 * self.m1[k] + (1 - beta1) * grad
            self.m2[k] = beta2 * self.m2[k] + (1 - beta2) * grad * grad
            m_hat = self.m1[k] / (1 - beta1**self.t)
            v_hat = self.m2[k] / (1 - beta2**self.t)
            p -= self.lr * m_hat / (torch.sqrt(v_hat) + self.eps)

    @torch.no_grad()
    def _project(self) -> None:
        p = self.params
        p["w_self"].clamp_(min=1.0)
        p["b_self"].clamp_(min=0.0)
        p["w_shared"].clamp_(-1.0, 1.0)
        p["gamma"].clamp_(0.0, 1.0)
        p["g_a"].clamp_(min=self.g_a_min)
        p["b_a"].clamp_(0.0, 1.0)

    def state(self) -> dict[str, torch.Tensor]:
        """Detached copies of all trainable parameters, keyed by name."""
        return {k: v.detach().clone() for k, v in self.params.items()}
