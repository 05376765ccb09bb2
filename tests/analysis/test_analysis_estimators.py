"""Known-answer tests for mmguard.analysis.estimators (Lipschitz, Jacobian variation, fault entropy, distances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from mmguard.analysis.estimators import (
    fault_energy_spread,
    frechet_distance,
    jacobian_variation,
    local_lipschitz,
    localized_perturbation,
    mmd_rbf,
    per_layer_lipschitz,
    plot_latent_tsne,
    tsne_embedding,
)
from mmguard.errors import DataError

# torch.func.jvp's first use scripts torch-internal decompositions, which warns on torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _matrix_with_singular_values(rows: int, cols: int, values: list[float], seed: int) -> torch.Tensor:
    """A float64 matrix (rows, cols) with the given singular values (descending)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    k = len(values)
    return u[:, :k] @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v[:, :k].T


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# local_lipschitz / per_layer_lipschitz
# ---------------------------------------------------------------------------------------------


def test_local_lipschitz_linear_map_equals_top_singular_value() -> None:
    w = _matrix_with_singular_values(7, 5, [3.0, 1.5, 1.0, 0.5, 0.1], seed=1)
    x = _randn(9, 5, seed=2)
    lip = local_lipschitz(lambda t: t @ w.T, x, iters=20, seed=0)
    assert lip.shape == (9,)
    top = float(torch.linalg.matrix_norm(w, ord=2))
    assert torch.allclose(lip, torch.full_like(lip, top), atol=1e-3)


def test_local_lipschitz_scaling_map() -> None:
    x = _randn(4, 6, seed=3)
    lip = local_lipschitz(lambda t: 0.5 * t, x, iters=5)
    assert torch.allclose(lip, torch.full((4,), 0.5, dtype=torch.float64), atol=1e-6)


def test_local_lipschitz_conv_matches_explicit_jacobian() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh()).double().eval()
    x = _randn(2, 2, 5, 5, seed=4)
    lip = local_lipschitz(conv, x, iters=60, seed=1)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(conv, x[i : i + 1]).reshape(3 * 25, 2 * 25)
        expected = float(torch.linalg.matrix_norm(jac, ord=2))
        assert lip[i].item() == pytest.approx(expected, rel=1e-3)


def test_local_lipschitz_no_grad_context_and_no_side_effects() -> None:
    lin = torch.nn.Linear(4, 3).double()
    x = _randn(5, 4, seed=5)
    with torch.no_grad():
        lip = local_lipschitz(lin, x, iters=10)
    assert not x.requires_grad
    assert lip.grad_fn is None and not lip.requires_grad
    assert lin.weight.grad is None
    expected = float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2))
    assert torch.allclose(lip, torch.full_like(lip, expected), atol=1e-3)


def test_local_lipschitz_is_seeded() -> None:
    x = _randn(3, 4, seed=6)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(3.0 * t)

    assert torch.equal(local_lipschitz(fn, x, iters=2, seed=7), local_lipschitz(fn, x, iters=2, seed=7))


def test_per_layer_lipschitz_two_linear_layers() -> None:
    w1 = _matrix_with_singular_values(6, 5, [2.0, 1.0, 0.5], seed=8)
    w2 = _matrix_with_singular_values(4, 6, [1.5, 0.7, 0.2], seed=9)
    x = _randn(8, 5, seed=10)
    res = per_layer_lipschitz([("enc", lambda t: t @ w1.T), ("head", lambda t: t @ w2.T)], x, iters=30)
    assert set(res) == {"enc", "head", "total"}
    assert res["enc"]["mean"] == pytest.approx(2.0, abs=1e-3)
    assert res["head"]["mean"] == pytest.approx(1.5, abs=1e-3)
    assert res["enc"]["std"] == pytest.approx(0.0, abs=1e-3)
    assert set(res["total"]) == {"mean", "std", "max"}
    assert res["total"]["max"] <= res["enc"]["max"] * res["head"]["max"] + 1e-6
    expected_total = float(torch.linalg.matrix_norm(w2 @ w1, ord=2))
    assert res["total"]["mean"] == pytest.approx(expected_total, abs=1e-3)


def test_per_layer_lipschitz_rejects_reserved_name() -> None:
    with pytest.raises(DataError):
        per_layer_lipschitz([("total", lambda t: t)], _randn(2, 3))


# ---------------------------------------------------------------------------------------------
# jacobian_variation (lemma 3.7)
# ---------------------------------------------------------------------------------------------


def test_jacobian_variation_linear_is_zero() -> None:
    w = _matrix_with_singular_values(5, 4, [2.0, 1.0, 0.5, 0.25], seed=11)
    x = _randn(6, 4, seed=12)
    res = jacobian_variation(lambda t: t @ w.T, x, sigma=0.5, draws=3, iters=20, seed=1)
    assert res["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert res["jacobian_variation"] == pytest.approx(0.0, abs=1e-10)
    assert res["relative_variation"] == pytest.approx(0.0, abs=1e-10)
    assert res["lipschitz_clean"] == pytest.approx(2.0, abs=1e-3)
    assert res["lipschitz_noisy"] == pytest.approx(2.0, abs=1e-3)


def test_jacobian_variation_nonlinear_is_positive_and_seeded() -> None:
    w = 4.0 * _randn(5, 4, seed=13)
    x = _randn(6, 4, seed=14)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(t @ w.T)

    res = jacobian_variation(fn, x, sigma=0.3, draws=2, iters=10, seed=2)
    assert res["jacobian_variation"] > 0.1
    assert res["relative_variation"] > 0.05
    assert res["ratio"] != pytest.approx(1.0, abs=1e-3)
    assert res == jacobian_variation(fn, x, sigma=0.3, draws=2, iters=10, seed=2)


# ---------------------------------------------------------------------------------------------
# localized_perturbation
# ---------------------------------------------------------------------------------------------


def test_localized_perturbation_images() -> None:
    x = _randn(5, 3, 8, 8, seed=15)
    out = localized_perturbation(x, size=3, amplitude=2.0, seed=4)
    diff = out - x
    changed = diff.abs() > 1e-9
    assert changed.reshape(5, -1).sum(dim=1).tolist() == [27] * 5
    assert torch.allclose(diff[changed], torch.full((135,), 2.0, dtype=torch.float64))
    for i in range(5):
        plane = changed[i, 0]
        assert torch.equal(changed[i], plane.expand(3, 8, 8))  # same patch in every channel
        rows = plane.any(dim=1).nonzero().flatten()
        cols = plane.any(dim=0).nonzero().flatten()
        assert rows.numel() == 3 and int(rows[-1] - rows[0]) == 2
        assert cols.numel() == 3 and int(cols[-1] - cols[0]) == 2
    assert torch.equal(out, localized_perturbation(x, size=3, amplitude=2.0, seed=4))
    assert not torch.equal(out, localized_perturbation(x, size=3, amplitude=2.0, seed=5))


def test_localized_perturbation_vectors() -> None:
    x = torch.zeros(6, 20)
    out = localized_perturbation(x, size=4, amplitude=-1.5, seed=0)
    assert torch.equal(x, torch.zeros(6, 20))  # input untouched
    for row in out:
        idx = row.nonzero().flatten()
        assert idx.numel() == 4 and int(idx[-1] - idx[0]) == 3
        assert torch.all(row[idx] == -1.5)
    assert torch.equal(out, localized_perturbation(x, size=4, amplitude=-1.5, seed=0))
    assert not torch.equal(out, localized_perturbation(x, size=4, amplitude=-1.5, seed=1))


def test_localized_perturbation_bad_size() -> None:
    with pytest.raises(DataError):
        localized_perturbation(torch.zeros(2, 3, 4, 4), size=5, amplitude=1.0)
    with pytest.raises(DataError):
        localized_perturbation(torch.zeros(2, 3, 4), size=1, amplitude=1.0)


# ---------------------------------------------------------------------------------------------
# fault_energy_spread (lemmas 3.1 / 3.2)
# ---------------------------------------------------------------------------------------------


def test_fault_energy_spread_identity_is_concentrated() -> None:
    d = 16
    x = _randn(10, d, seed=16)
    xp = localized_perturbation(x, size=1, amplitude=1.0, seed=3)
    res = fault_energy_spread(lambda t: t, x, xp, top_k=(1, 5))
    assert res["dim"] == d and res["samples"] == 10 and res["skipped"] == 0
    assert res["entropy"][0] == pytest.approx(0.0, abs=1e-9)
    assert res["gini"][0] == pytest.approx(1.0 - 1.0 / d, abs=1e-9)
    assert res["top1_share"] == pytest.approx([1.0, 0.0], abs=1e-9)
    assert res["top5_share"][0] == pytest.approx(1.0, abs=1e-9)
    assert res["participation_ratio"][0] == pytest.approx(1.0 / d, abs=1e-9)
    assert res["energy"] == pytest.approx(1.0, abs=1e-9)


def test_fault_energy_spread_dense_orthogonal_is_entropic() -> None:
    d = 32
    q, _ = torch.linalg.qr(_randn(d, d, seed=17))
    x = _randn(20, d, seed=18)
    xp = localized_perturbation(x, size=1, amplitude=1.0, seed=3)
    dense = fault_energy_spread(lambda t: t @ q.T, x, xp)
    ident = fault_energy_spread(lambda t: t, x, xp)
    assert dense["entropy"][0] > 0.7
    assert dense["entropy"][0] > ident["entropy"][0] + 0.6
    assert dense["gini"][0] < ident["gini"][0]
    assert dense["energy"] == pytest.approx(1.0, abs=1e-9)  # orthogonal maps keep the energy


def test_fault_energy_spread_uniform_and_zero_energy() -> None:
    d = 8
    x = _randn(5, d, seed=19)
    xp = x.clone()
    xp[:3] = localized_perturbation(x[:3], size=2, amplitude=1.0, seed=0)  # last two samples untouched

    def spread(t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=1, keepdim=True).expand(-1, d)

    res = fault_energy_spread(spread, x, xp, top_k=(1,))
    assert res["samples"] == 3 and res["skipped"] == 2
    assert res["entropy"][0] == pytest.approx(1.0, abs=1e-9)
    assert res["gini"][0] == pytest.approx(0.0, abs=1e-9)
    assert res["top1_share"][0] == pytest.approx(1.0 / d, abs=1e-9)
    assert res["participation_ratio"][0] == pytest.approx(1.0, abs=1e-9)
    assert res["energy"] == pytest.approx(3 * 4.0 * d / 5, abs=1e-9)  # δz = 2 per coordinate


def test_fault_energy_spread_conv_image() -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1).double().eval()
    x = _randn(4, 1, 12, 12, seed=20)
    xp = localized_perturbation(x, size=2, amplitude=1.0, seed=1)
    res = fault_energy_spread(conv, x, xp)
    assert res["dim"] == 2 * 12 * 12
    assert 0.0 < res["entropy"][0] < 1.0
    assert res["participation_ratio"][0] < 0.2  # local receptive fields keep the fault compact


# ---------------------------------------------------------------------------------------------
# distribution distances
# ---------------------------------------------------------------------------------------------


def test_mmd_rbf_same_and_shifted() -> None:
    a = _randn(500, 4, seed=21)
    b = _randn(500, 4, seed=22)
    assert abs(mmd_rbf(a, b)) < 0.02
    shifted = mmd_rbf(a, b + 1.0)
    assert shifted > 0.1
    assert mmd_rbf(a, b + 1.0, bandwidth=2.0) > 0.1
    assert mmd_rbf(a.float(), b.float()) == pytest.approx(mmd_rbf(a, b), abs=1e-5)


def test_frechet_identical_and_exact_gaussians() -> None:
    raw = _randn(200, 3, seed=23)
    raw = raw - raw.mean(dim=0)
    chol = torch.linalg.cholesky(torch.cov(raw.T))
    white = raw @ torch.linalg.inv(chol).T  # sample mean 0, sample covariance exactly I
    assert frechet_distance(white, white) == pytest.approx(0.0, abs=1e-6)
    m = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(white, white + m) == pytest.approx(float(m @ m), abs=1e-8)
    s = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    expected = float(((1.0 - s) ** 2).sum())  # N(0, I) vs N(0, diag(s²))
    assert frechet_distance(white, white * s) == pytest.approx(expected, abs=1e-8)


def test_frechet_matches_sqrtm_and_sampling() -> None:
    a = _randn(300, 3, seed=24) @ _randn(3, 3, seed=25)
    b = _randn(300, 3, seed=26) @ _randn(3, 3, seed=27) + 0.5
    xa, xb = a.numpy(), b.numpy()
    ca, cb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(ca @ cb))
    ref = ((xa.mean(0) - xb.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(float(ref), rel=1e-6)
    m = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    sampled = frechet_distance(_randn(40000, 3, seed=28), _randn(40000, 3, seed=29) + m)
    assert sampled == pytest.approx(2.0, abs=0.06)  # N(0, I) vs N(m, I): ||m||² = 2


# ---------------------------------------------------------------------------------------------
# t-SNE
# ---------------------------------------------------------------------------------------------


def _groups() -> dict[str, torch.Tensor]:
    return {"clean": _randn(30, 5, seed=30), "corrected": _randn(25, 5, seed=31) + 3.0}


def test_tsne_embedding_shapes_and_determinism() -> None:
    coords, labels = tsne_embedding(_groups(), seed=3, max_per_group=20)
    assert coords.shape == (40, 2) and labels.shape == (40,)
    assert np.isfinite(coords).all()
    assert labels.tolist() == ["clean"] * 20 + ["corrected"] * 20
    again, _ = tsne_embedding(_groups(), seed=3, max_per_group=20)
    np.testing.assert_array_equal(coords, again)


def test_plot_latent_tsne_writes_png(tmp_path) -> None:
    out = plot_latent_tsne(_groups(), tmp_path / "sub" / "tsne.png", seed=0, max_per_group=15, title="t")
    assert out.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in out.parent.iterdir()] == ["tsne.png"]  # no temp file left behind


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_raises_data_error() -> None:
    x = _randn(3, 4)
    bad = x.clone()
    bad[1, 2] = math.nan
    with pytest.raises(DataError):
        local_lipschitz(lambda t: t, bad)
    with pytest.raises(DataError):
        local_lipschitz(lambda t: t, x, iters=0)
    with pytest.raises(DataError):
        local_lipschitz(lambda t: t[:1], x)  # not row-wise
    with pytest.raises(DataError):
        jacobian_variation(lambda t: t, x, sigma=-1.0)
    with pytest.raises(DataError):
        mmd_rbf(_randn(5, 3), _randn(5, 4))
    with pytest.raises(DataError):
        frechet_distance(_randn(1, 3), _randn(5, 3))
    with pytest.raises(DataError):
        fault_energy_spread(lambda t: t, x, _randn(3, 5))
    with pytest.raises(DataError):
        tsne_embedding({})
