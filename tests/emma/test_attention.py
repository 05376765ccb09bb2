"""EMMA's attention module (thesis sections 5.2-5.5): constraints, eqs. 5.1-5.9, regulariser."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mmguard.emma.attention import EULER, EmmaAttention, energy_regularizer
from mmguard.emma.network import ConcatPredictor, EmmaNetwork
from mmguard.emma.potential import TiedDAE, fit_dae
from mmguard.emma.reference import reference_capacity
from mmguard.train.ensemble import EnsembleMLP
from mmguard.train.loop import train_ensemble


def assert_constraints(att: EmmaAttention) -> None:
    assert bool((att.w_self >= 1).all())
    assert bool((att.b_self >= 0).all())
    assert bool(((att.w_shared >= -1) & (att.w_shared <= 1)).all())
    assert bool(((att.gamma >= 0) & (att.gamma <= 1)).all())
    assert bool((att.g_a > 0).all())
    assert bool(((att.b_a >= 0) & (att.b_a <= 1)).all())


def out_of_bounds(att: EmmaAttention) -> int:
    """How many parameter entries violate their constraint."""
    return int(
        (att.w_self < 1).sum() + (att.b_self < 0).sum() + (att.w_shared.abs() > 1).sum()
        + ((att.gamma < 0) | (att.gamma > 1)).sum() + (att.g_a <= 0).sum()
        + ((att.b_a < 0) | (att.b_a > 1)).sum()
    )


def randomize(att: EmmaAttention, seed: int, *, g_a_max: float = 4.0) -> EmmaAttention:
    """Random parameters strictly inside the constraint sets."""
    gen = torch.Generator().manual_seed(seed)

    def rand(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=att.w_self.dtype)

    with torch.no_grad():
        att.w_self.copy_(rand(att.w_self.shape, 1.0, 3.0))
        att.b_self.copy_(rand(att.b_self.shape, 0.0, 2.0))
        att.w_shared.copy_(rand(att.w_shared.shape, -1.0, 1.0))
        att.gamma.copy_(rand(att.gamma.shape, 0.0, 1.0))
        att.g_a.copy_(rand(att.g_a.shape, 0.2, g_a_max))
        att.b_a.copy_(rand(att.b_a.shape, 0.0, 1.0))
    return att


def test_projection_after_every_large_step() -> None:
    """A large-lr Adam drives every parameter out of bounds; project_ brings all back."""
    g, m = 3, 4
    att = EmmaAttention(g, m, rho=0.1)
    gen = torch.Generator().manual_seed(0)
    signs = {n: torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1
             for n, p in att.named_parameters()}
    opt = torch.optim.Adam(att.parameters(), lr=5.0)
    for _ in range(6):
        loss = sum((signs[n] * p).sum() for n, p in att.named_parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert out_of_bounds(att) > 0  # the step really left the feasible set
        att.project_()
        assert_constraints(att)
        assert out_of_bounds(att) == 0
    # values inside the feasible set are left unchanged
    before = {n: p.detach().clone() for n, p in att.named_parameters()}
    att.project_()
    for n, p in att.named_parameters():
        assert torch.equal(p, before[n])


def test_projection_after_every_step_of_the_training_loop() -> None:
    """train_ensemble calls project_ after each step: every loss evaluation sees feasible parameters."""
    g, m, n = 2, 3, 64
    att = EmmaAttention(g, m, rho=0.5)
    gen = torch.Generator().manual_seed(1)
    signs = {k: torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1
             for k, p in att.named_parameters()}
    seen = []

    def loss_fn(model: EmmaAttention, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled():  # training steps (validation runs under no_grad)
            seen.append(out_of_bounds(model))
        out = model(batch["psi"], torch.zeros(g, m))
        push = sum((signs[k] * p).sum(tuple(range(1, p.ndim))) for k, p in model.named_parameters())
        return out.modal_energy.mean((1, 2)) + 10.0 * push

    data = {"psi": torch.rand(1, n, m, generator=gen) * 5}
    train_ensemble(att, loss_fn, data, data, member_stream=torch.zeros(g, dtype=torch.long), stream_seeds=[0],
                   epochs=2, batch_size=16, lr=3.0, after_step=att.project_)
    assert len(seen) == 8 and all(v == 0 for v in seen), seen


@pytest.mark.parametrize("rho", [1e-3, 0.1, 10.0])
def test_alpha_sums_to_one_and_beta_in_unit_interval(rho: float) -> None:
    g, m = 4, 5
    att = randomize(EmmaAttention(g, m, rho=rho), seed=2)
    gen = torch.Generator().manual_seed(3)
    psi_raw = torch.randn(g, 50, m, generator=gen) * 20
    out = att(psi_raw, torch.randn(g, m, generator=gen))
    torch.testing.assert_close(out.alpha.sum(-1), torch.ones(g, 50), atol=1e-6, rtol=0)
    assert bool(((out.alpha >= 0) & (out.alpha <= 1)).all())
    assert bool(((out.beta >= 0) & (out.beta < 1)).all())
    torch.testing.assert_close(out.log_alpha.exp(), out.alpha)


def test_shift_eq_5_3() -> None:
    g, m = 2, 3
    att = EmmaAttention(g, m).double()
    gen = torch.Generator().manual_seed(4)
    psi_raw = torch.randn(g, 40, m, generator=gen, dtype=torch.float64) * 3
    psi_min = torch.randn(g, m, generator=gen, dtype=torch.float64)
    out = att(psi_raw, psi_min)
    assert bool((out.psi >= EULER).all())
    below = psi_raw <= psi_min.unsqueeze(1)
    assert bool(below.any()) and bool((~below).any())
    assert bool((out.psi[below] == EULER).all())
    expected = (psi_raw - psi_min.unsqueeze(1) + math.e)[~below]
    torch.testing.assert_close(out.psi[~below], expected, atol=1e-12, rtol=0)
    # eq. 5.1 with w_i >= 1, b_i >= 0 keeps self energies >= e > 0
    randomize(att, seed=5)
    assert bool((att(psi_raw, psi_min).self_energy >= EULER).all())


def test_no_coupling_means_modal_energy_equals_self_energy() -> None:
    g, m = 3, 4
    att = randomize(EmmaAttention(g, m), seed=6)
    with torch.no_grad():
        att.w_shared.zero_()
    gen = torch.Generator().manual_seed(7)
    out = att(torch.randn(g, 30, m, generator=gen) * 4, torch.zeros(g, m))
    assert torch.equal(out.modal_energy, out.self_energy)
    assert bool((out.shared_energy == 0).all())


@pytest.mark.parametrize("g_a,b_a", [(1.0, 0.0), (0.3, 0.9), (2.5, 0.5), (7.0, 1.0), (1e-3, 0.2),
                                     (15.0, 0.0)])
def test_capacity_matches_numerical_integration_eq_5_7(g_a: float, b_a: float) -> None:
    a = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)
    numeric = float(torch.trapezoid(torch.tanh(g_a * a - b_a), a))
    assert math.isclose(reference_capacity(g_a, b_a), numeric, rel_tol=1e-8, abs_tol=1e-9)
    att = EmmaAttention(1, 2).double()
    with torch.no_grad():
        att.g_a.fill_(g_a)
        att.b_a.fill_(b_a)
    assert math.isclose(float(att.capacity().detach()[0]), numeric, rel_tol=1e-8, abs_tol=1e-9)


def test_capacity_is_stable_for_large_gain() -> None:
    att = EmmaAttention(2, 2).double()
    with torch.no_grad():
        att.g_a.copy_(torch.tensor([800.0, 1e6], dtype=torch.float64))
        att.b_a.fill_(0.5)
    cap = att.capacity()
    assert bool(torch.isfinite(cap).all())
    assert bool(((cap > 0.99) & (cap <= 1.0)).all())  # tanh ~ 1 over almost all of [0, 1]


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_energy_regularizer_rule_and_sign(m: int) -> None:
    """Omega = sum_k xi_k log alpha_k only for samples with floor((M+1)/2) clean modalities."""
    masks = torch.tensor(list(itertools.product([False, True], repeat=m)))  # every fault pattern
    n = masks.shape[0]
    g = 2
    gen = torch.Generator().manual_seed(m)
    log_alpha = torch.log_softmax(torch.randn(g, n, m, generator=gen, dtype=torch.float64), dim=-1)
    omega = energy_regularizer(log_alpha, masks)
    assert omega.shape == (g, n)
    m_clean = (m + 1) // 2
    for gi in range(g):
        for s in range(n):
            corrupted = masks[s].tolist()
            if corrupted.count(False) != m_clean:
                assert float(omega[gi, s]) == 0.0
                continue
            expected = sum((-1.0 if c else 1.0) * float(log_alpha[gi, s, k]) for k, c in enumerate(corrupted))
            assert math.isclose(float(omega[gi, s]), expected, rel_tol=1e-12, abs_tol=1e-12)
    # the same with a per-member (G, N, M) mask
    torch.testing.assert_close(energy_regularizer(log_alpha, masks.expand(g, -1, -1)), omega)
    # sign: xi = -1 corrupted, +1 clean — moving importance to clean modalities raises Omega
    applies = masks[(~masks).sum(-1) == m_clean][0]
    low = torch.log_softmax(torch.where(applies, 2.0, -2.0).double(), dim=-1).view(1, 1, m)
    high = torch.log_softmax(torch.where(applies, -2.0, 2.0).double(), dim=-1).view(1, 1, m)
    mask = applies.view(1, m)
    assert float(energy_regularizer(high, mask)) > 0 > float(energy_regularizer(low, mask))


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_noisy_modality_gets_less_attention_after_training(m: int) -> None:
    """Trained DAEs (clean data on a 2-D manifold per modality, sizes differ) give a modality
    corrupted with moderate noise (sigma 1, the data's own scale) a higher potential and hence
    the lowest attention, on held-out samples — an empirical property of the trained energies,
    not of untrained weights and an off-scale corruption."""
    g, n_train, n_test = 2, 400, 200
    sizes = [2 + (3 * i) % 5 + 2 for i in range(m)]  # 4, 7, 5, 8, 6, 4
    seeds = [0, 1]
    gen = torch.Generator().manual_seed(100 + m)
    maps = [torch.randn(2, s, generator=gen) / math.sqrt(2) for s in sizes]

    def sample(n: int) -> list[torch.Tensor]:
        z = torch.randn(g, n, 2, generator=gen)
        return [torch.tanh(z) @ a + 0.05 * torch.randn(g, n, a.shape[1], generator=gen) for a in maps]

    train, clean = sample(n_train), sample(n_test)
    daes = []
    for i, s in enumerate(sizes):
        dae = TiedDAE(seeds, s, 12, stream=10 + i)
        fit_dae(dae, train[i], seeds, epochs=60, sigma=0.1, lr=1e-2, stream=20 + i)
        daes.append(dae)
    att = EmmaAttention(g, m, rho=[0.5, 1.0])
    mlp = EnsembleMLP(seeds, [sum(sizes), 8, 4, 1])
    net = EmmaNetwork(daes, att, ConcatPredictor(mlp))
    for k in range(m):
        xs = [x.clone() for x in clean]
        xs[k] = xs[k] + torch.randn(xs[k].shape, generator=gen)
        with torch.no_grad():
            _, out = net(xs)
        others = [i for i in range(m) if i != k]
        beta = out.beta.mean(1)  # (G, M) mean attention per member
        assert bool((beta[:, k] < beta[:, others].amin(-1)).all()), (k, beta)
        lowest = (out.beta.argmin(-1) == k).float().mean()
        assert float(lowest) > 0.8, (k, float(lowest))
