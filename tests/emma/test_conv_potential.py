"""Convolutional tied DAE (EMMA on images, issue 12): gradient identity, members, shapes, save/load,
the normalised potential, and the EMMA guard on camera + kinematics."""

from __future__ import annotations

import pytest
import torch

from mmguard.data.splits import make_splits
from mmguard.emma.conv_potential import ConvTiedDAE, conv_geometry
from mmguard.emma.persist import potential_from
from mmguard.emma.potential import TiedDAE, fit_dae
from mmguard.guard import create_guard, load_guard
from support import camera_kinematics


def random_conv(seeds: list[int], shape: tuple[int, int, int], **kw) -> ConvTiedDAE:
    """A float64 ConvTiedDAE with random W and random nonzero b_f, b_g."""
    dae = ConvTiedDAE(seeds, shape, **kw).double()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in (dae.W, dae.b_f, dae.b_g):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5 + 0.1)
    return dae


@pytest.mark.parametrize(("shape", "kw"), [
    ((3, 16, 16), {"channels": 4, "kernel": 4, "stride": 2, "padding": 1}),
    ((1, 11, 9), {"channels": 3, "kernel": 3, "stride": 2, "padding": 0}),  # odd sides: output padding
    ((2, 8, 8), {"channels": 5, "kernel": 3, "stride": 1, "padding": 1}),
])
def test_gradient_identity_holds_for_the_convolution(shape, kw) -> None:
    """dPsi/dx = x - r(x) exactly (eq. 4.3 with W a convolution), for every member and pixel."""
    dae = random_conv([1, 2, 3], shape, **kw)
    l = shape[0] * shape[1] * shape[2]
    x = torch.randn(3, 7, l, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 1.5
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(dae.potential(x).sum(), x)
    with torch.no_grad():
        assert dae.reconstruct(x).shape == x.shape
        # float64: the convolution and its transpose sum in different orders, so ~1e-10 is rounding;
        # a wrong adjoint or bias is off by O(1) (below)
        torch.testing.assert_close(grad, x - dae.reconstruct(x), atol=1e-8, rtol=1e-8)
        untied = dae.reconstruct(x) + 0.5 * dae.b_g.unsqueeze(1)  # any other decoder bias breaks it
        assert float((grad - (x - untied)).abs().max()) > 0.05


def test_members_are_independent_and_match_a_lone_member() -> None:
    """Grouped convolution: member g of an ensemble computes what a one-member DAE with its weights does."""
    together = random_conv([5, 6], (2, 12, 12), channels=3, kernel=4, stride=2, padding=1)
    x = torch.randn(2, 4, 2 * 144, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for g in range(2):
        alone = together.select(torch.tensor([g]))
        torch.testing.assert_close(alone.potential(x[g : g + 1])[0], together.potential(x)[g])
        torch.testing.assert_close(alone.reconstruct(x[g : g + 1])[0], together.reconstruct(x)[g])
        assert not any(p.requires_grad for p in alone.parameters())


def test_conv_geometry_rejects_what_cannot_be_inverted() -> None:
    assert conv_geometry(64, 8, 4, 2) == (16, 0)
    assert conv_geometry(11, 3, 2, 0) == (5, 0)
    with pytest.raises(ValueError, match="does not fit"):
        conv_geometry(3, 8, 4, 0)


def test_fit_lowers_the_denoising_loss_and_sets_psi_min() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 8, 8, generator=gen)
    data = (base + 0.05 * torch.randn(200, 1, 8, 8, generator=gen)).reshape(1, 200, 64)
    dae = ConvTiedDAE([0], (1, 8, 8), channels=4, kernel=4, stride=2, padding=1)
    history = fit_dae(dae, data, [0], epochs=15, batch_size=32, sigma=0.05, lr=1e-2)
    assert history[-1] < 0.5 * history[0]
    with torch.no_grad():
        assert float(dae.psi_min) == pytest.approx(float(dae.potential(data).min()), abs=1e-5)
        # an image far from the clean manifold has a higher potential than every clean one
        far = (base * 0 + 3.0).reshape(1, 1, 64)
        assert float(dae.potential(far).min()) > float(dae.potential(data).max())


@pytest.mark.parametrize("cls", ["tied", "conv"])
def test_normalised_scale_is_the_clean_median_and_survives_description(cls: str) -> None:
    gen = torch.Generator().manual_seed(3)
    dae = TiedDAE([0, 1], 64, 5) if cls == "tied" else ConvTiedDAE([0, 1], (1, 8, 8), 3, 4, 2, 1)
    clean = torch.rand(2, 50, 64, generator=gen)
    with torch.no_grad():
        dae.psi_min.copy_(dae.potential(clean).amin(1))
        scale = dae.calibrate_scale_(clean)
        excess = dae.scaled_excess(clean)
    torch.testing.assert_close(excess.median(1).values, torch.ones(2), atol=1e-5, rtol=0)
    rebuilt = potential_from(dae.describe(), 2)
    torch.testing.assert_close(rebuilt.psi_scale, scale)
    with pytest.raises(ValueError, match="psi_scale"):
        potential_from({**dae.describe(), "psi_scale": [1.0, -2.0]}, 2)


@pytest.mark.parametrize("scale", ["raw", "normalised"])
def test_emma_guard_runs_on_camera_and_kinematics(tmp_path, scale: str) -> None:
    splits = make_splits(camera_kinematics(), seed=0)
    guard = create_guard("emma", {"image_potential": "conv", "image_channels": 3, "image_kernel": 4,
                                  "image_stride": 2, "image_padding": 1, "potential_scale": scale,
                                  "epochs": 3, "dae_epochs": 3, "drift": None})
    guard.fit(splits, seed=0)
    pots = guard.fit_report["potentials"]
    assert pots["camera"]["kind"] == "conv" and pots["kinematics"]["kind"] == "tied"
    if scale == "raw":
        assert pots["camera"]["psi_scale"] == [1.0] and pots["kinematics"]["psi_scale"] == [1.0]
    else:
        assert pots["camera"]["psi_scale"][0] > 0 and pots["camera"]["psi_scale"] != [1.0]
    test = splits.test
    loaded = load_guard(guard.save(tmp_path / "g"))
    torch.testing.assert_close(loaded.score(test), guard.score(test))
    torch.testing.assert_close(loaded.predict(test), guard.predict(test))
    beta = guard.explain(test).beta
    assert beta.shape == (len(test), 2) and bool(((beta >= 0) & (beta <= 1)).all())
