"""Tied DAE potential (thesis chapter 4): eq. 4.7, its gradient identity and fit_dae."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmguard.emma.potential import TiedDAE, fit_dae
from mmguard.emma.reference import reference_potential, reference_reconstruct


def random_dae(seeds: list[int], in_features: int, hidden: int, *, scale: float = 1.0) -> TiedDAE:
    """A float64 TiedDAE with random W and random *nonzero* b_f, b_g (so the sign of b_g matters)."""
    dae = TiedDAE(seeds, in_features, hidden).double()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        dae.W.copy_(torch.randn(dae.W.shape, generator=gen, dtype=torch.float64) * scale)
        dae.b_f.copy_(torch.randn(dae.b_f.shape, generator=gen, dtype=torch.float64))
        dae.b_g.copy_(torch.randn(dae.b_g.shape, generator=gen, dtype=torch.float64) + 0.5)
    return dae


def potential_gradient(dae: TiedDAE, x: torch.Tensor, potential) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(potential(x).sum(), x)
    return grad


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 4, 12), (4, 8, 3)])
def test_gradient_identity_eq_4_7(shape: tuple[int, int, int]) -> None:
    """dPsi/dx = -(r(x) - x) (section 4.2) for every member, sample and feature."""
    g, l, u = shape
    dae = random_dae(list(range(10, 10 + g)), l, u)
    x = torch.randn(g, 25, l, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2.0
    grad = potential_gradient(dae, x, dae.potential)
    with torch.no_grad():
        field = dae.reconstruct(x) - x
    torch.testing.assert_close(grad, -field, atol=1e-12, rtol=1e-10)


def test_eq_4_6_sign_breaks_the_identity() -> None:
    """Eq. 4.6 prints +1/2||x + b_g||^2; its gradient misses -(r - x) by exactly 2 b_g."""
    dae = random_dae([0, 1], 4, 6)
    assert float(dae.b_g.detach().abs().min()) > 1e-3  # the sign only matters when b_g != 0
    x = torch.randn(2, 30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def potential_eq_4_6(z: torch.Tensor) -> torch.Tensor:
        a = dae.pre_activation(z)
        return -F.softplus(a).sum(-1) + 0.5 * ((z + dae.b_g.unsqueeze(1)) ** 2).sum(-1)

    grad_46 = potential_gradient(dae, x, potential_eq_4_6)
    with torch.no_grad():
        target = -(dae.reconstruct(x) - x)
    mismatch = (grad_46 - target).abs().max()
    assert float(mismatch) > 0.1, "eq. 4.6's sign unexpectedly satisfies the identity"
    torch.testing.assert_close(grad_46 - target, (2 * dae.b_g).unsqueeze(1).expand_as(x), atol=1e-12, rtol=0)
    # ...while eq. 4.7 (the implemented one) satisfies it
    torch.testing.assert_close(potential_gradient(dae, x, dae.potential), target, atol=1e-12, rtol=1e-10)


def test_potential_matches_reference_loops() -> None:
    dae = random_dae([3, 4], 5, 9)
    x = torch.randn(2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    pot = dae.potential(x).detach()
    rec = dae.reconstruct(x).detach()
    for g in range(2):
        for n in range(6):
            params = (dae.W[g].detach(), dae.b_f[g].detach(), dae.b_g[g].detach())
            ref = reference_potential(*params, x[g, n])
            assert math.isclose(float(pot[g, n]), float(ref), rel_tol=1e-12, abs_tol=1e-12)
            ref_r = reference_reconstruct(*params, x[g, n])
            torch.testing.assert_close(rec[g, n], ref_r, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("magnitude", [1e2, 1e4])
def test_numerically_stable_for_large_inputs(magnitude: float) -> None:
    """No overflow for |x| ~ 1e4 in float32: finite potential, reconstruction and gradient."""
    dae = TiedDAE([0, 1], 4, 12)
    with torch.no_grad():
        dae.b_f.fill_(0.3)
        dae.b_g.fill_(-0.2)
    gen = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, (2, 16, 4), generator=gen).float() * 2 - 1
    x = signs * magnitude * (1 + torch.rand(2, 16, 4, generator=gen))
    naive_overflows = bool(torch.isinf(torch.log(1 + torch.exp(dae.pre_activation(x)))).any())
    assert naive_overflows or magnitude < 1e3  # the naive log(1 + exp(a)) would overflow here
    xg = x.clone().requires_grad_(True)
    psi = dae.potential(xg)
    assert bool(torch.isfinite(psi).all())
    (grad,) = torch.autograd.grad(psi.sum(), xg)
    assert bool(torch.isfinite(grad).all())
    assert bool(torch.isfinite(dae.reconstruct(x)).all())
    assert bool(torch.isfinite(dae.reconstruction_error(x)).all())
    # same values as the stable float64 reference
    d64 = TiedDAE([0, 1], 4, 12).double()
    d64.load_state_dict({k: v.double() for k, v in dae.state_dict().items()})
    expected = torch.stack([
        torch.stack([reference_potential(d64.W[g].detach(), d64.b_f[g].detach(), d64.b_g[g].detach(),
                                         x[g, n].double()) for n in range(x.shape[1])])
        for g in range(2)
    ])
    torch.testing.assert_close(psi.detach().double(), expected, rtol=1e-5, atol=0)


def circle(n: int, seed: int, noise: float = 0.02) -> torch.Tensor:
    """Points on the unit circle (section 4.3's manifold) with a little radial noise, (N, 2)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=gen) * 2 * math.pi
    r = 1 + noise * torch.randn(n, generator=gen)
    return torch.stack([r * torch.cos(t), r * torch.sin(t)], dim=1)


def denoising_loss(dae: TiedDAE, x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Eq. 4.1 per member on a fixed corruption draw, (G,)."""
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    with torch.no_grad():
        return ((dae.reconstruct(x + eps) - x) ** 2).sum(-1).mean(-1)


def test_fit_dae_learns_the_manifold_and_sets_psi_min() -> None:
    seeds = [0, 1]
    data = circle(512, seed=0)
    dae = TiedDAE(seeds, 2, 12)
    xg = data.unsqueeze(0).expand(2, -1, -1)
    before = denoising_loss(dae, xg, 0.1, seed=9)
    history = fit_dae(dae, data, seeds, epochs=40, batch_size=64, sigma=0.1, lr=1e-2)
    after = denoising_loss(dae, xg, 0.1, seed=9)
    assert len(history) == 40
    assert history[-1] < 0.5 * history[0]
    assert bool((after < 0.5 * before).all()), (before, after)

    # psi_min is each member's minimum potential over the training data (eq. 5.3)
    for g in range(2):
        params = (dae.W[g].detach(), dae.b_f[g].detach(), dae.b_g[g].detach())
        pots = torch.stack([reference_potential(*params, x) for x in data])
        assert math.isclose(float(dae.psi_min[g]), float(pots.min()), rel_tol=1e-5, abs_tol=1e-5)
    assert bool((dae.potential(xg) >= dae.psi_min.unsqueeze(1) - 1e-6).all())

    # the manifold is a sink: far-away points have a higher potential than points on it
    with torch.no_grad():
        on = dae.potential(circle(200, seed=1).unsqueeze(0).expand(2, -1, -1)).mean(1)
        off = dae.potential(3 * circle(200, seed=1).unsqueeze(0).expand(2, -1, -1)).mean(1)
    assert bool((off > on + 0.2).all())


def test_members_are_independent() -> None:
    """Training 2 members together = training each alone with the same seed (to ~1e-6)."""
    data = circle(256, seed=2)
    kwargs = dict(epochs=5, batch_size=32, sigma=0.05, lr=5e-3)
    together = TiedDAE([3, 7], 2, 12)
    fit_dae(together, data, [3, 7], **kwargs)
    for g, seed in enumerate([3, 7]):
        alone = TiedDAE([seed], 2, 12)
        fit_dae(alone, data, [seed], **kwargs)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(together.state_dict()[name][g], value[0], atol=1e-6, rtol=0)
