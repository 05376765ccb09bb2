"""Core MMSSL invariants: gradient modulation, contraction corrector, exact routing bypass,
persistence, autoencoder shapes, detector loss, variant settings, configs, stage-2 training."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from mmguard.data.model import ModalitySpec, MultimodalBatch
from mmguard.errors import CheckpointError, DataError, SpecError
from mmguard.experiments.mmssl.config import MmsslRunConfig
from mmguard.faults.scenarios import training_spec
from mmguard.mmssl.autoencoder import MultimodalAutoencoder, VectorEncoder
from mmguard.mmssl.compute import ComputeBlock, Corrector
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.gate import calibrate_threshold, route, sample_scores
from mmguard.mmssl.losses import contrastive_detector_loss
from mmguard.mmssl.modulation import modulate_gradients
from mmguard.mmssl.pipeline import MmsslModels
from mmguard.mmssl.stages import (
    VARIANTS,
    LatentScale,
    decode,
    encode,
    train_autoencoder,
    train_compute_block,
    variant_settings,
)

INF = float("inf")
SPECS = (ModalitySpec("camera", "image", (3, 16, 16)), ModalitySpec("kinematics", "vector", (5,)))
TINY_AE = dict(image_channels=[4, 8], image_code=8, image_hidden=16, sensor_hidden=16, sensor_code=4,
               latent_dim=8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# 1. modulate_gradients
# ---------------------------------------------------------------------------------------------

G = 3


def _block(seeds: tuple[int, ...] = (0, 1, 2)) -> ComputeBlock:
    return ComputeBlock(list(seeds), 8, 2, detector_hidden=12, embedding=4, corrector_hidden=[10, 10],
                        bound=0.9)


def _raw_grads(block: ComputeBlock, det_scale: float = 1.0, corr_scale: float = 1.0, seed: int = 0,
               member_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Gradients of a random per-member loss (each member its own inputs and targets)."""
    g = block.ensemble_size
    z = torch.randn(g, 16, 8, generator=_gen(seed))
    target = torch.randn(g, 16, 8, generator=_gen(seed + 1))
    scores, corrected = block(z)
    per_member = det_scale * scores.sum((1, 2)) + corr_scale * (corrected - target).pow(2).sum((1, 2))
    if member_weight is not None:
        per_member = per_member * member_weight
    block.zero_grad(set_to_none=True)
    per_member.sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in block.named_parameters()}
    block.zero_grad(set_to_none=True)
    return grads


def _modulate(block: ComputeBlock, grads: dict[str, torch.Tensor], gamma, renormalize, clip_tau
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    for n, p in block.named_parameters():
        p.grad = grads[n].clone()
    info = modulate_gradients(block.detection_parameters(), block.correction_parameters(),
                              gamma=torch.tensor(gamma, dtype=torch.float64),
                              renormalize=torch.tensor(renormalize),
                              clip_tau=torch.tensor(clip_tau, dtype=torch.float64))
    out = {n: p.grad.detach().clone() for n, p in block.named_parameters()}
    block.zero_grad(set_to_none=True)
    return out, info


def _sq(grads: dict[str, torch.Tensor], prefix: str = "", members: int = G) -> torch.Tensor:
    """Per-member squared norm (float64) over the gradients whose name starts with prefix."""
    total = torch.zeros(members, dtype=torch.float64)
    for n, t in grads.items():
        if n.startswith(prefix):
            total += t.double().pow(2).reshape(members, -1).sum(1)
    return total


def _member(grads: dict[str, torch.Tensor], g: int) -> dict[str, torch.Tensor]:
    return {n: t[g] for n, t in grads.items()}


def test_block_parameter_groups_partition_the_block() -> None:
    block = _block()
    det = {id(p) for p in block.detection_parameters()}
    cor = {id(p) for p in block.correction_parameters()}
    assert det and cor and not det & cor
    assert det | cor == {id(p) for p in block.parameters()}
    names = dict(block.named_parameters())
    assert all(id(names[n]) in det for n in names if n.startswith("detector."))
    assert all(id(names[n]) in cor for n in names if n.startswith("corrector."))


def test_renormalization_preserves_total_norm_and_shifts_share_to_detection() -> None:
    block = _block()
    raw = _raw_grads(block)
    a0, r0 = _sq(raw, "detector."), _sq(raw, "corrector.")
    before = (a0 + r0).sqrt()
    assert bool((a0 > 0).all() and (r0 > 0).all())
    gamma = [3.0, 3.0, 1.0]
    out, info = _modulate(block, raw, gamma, [True, True, True], [INF, INF, INF])
    a1, r1 = _sq(out, "detector."), _sq(out, "corrector.")
    after = (a1 + r1).sqrt()
    torch.testing.assert_close(after, before, rtol=1e-6, atol=0)
    torch.testing.assert_close(info["before"], before, rtol=1e-6, atol=0)
    torch.testing.assert_close(info["final"], before, rtol=1e-6, atol=0)
    share0, share1 = a0 / (a0 + r0), a1 / (a1 + r1)
    assert bool((share1[:2] > share0[:2]).all())
    g = torch.tensor(gamma, dtype=torch.float64)
    torch.testing.assert_close(share1, g**2 * a0 / (g**2 * a0 + r0), rtol=1e-5, atol=0)
    # the step is re-allocated, not re-directed: A scaled by γ·f, the rest by f
    f = before / (g**2 * a0 + r0).sqrt()
    for n, t in out.items():
        fac = f * (g if n.startswith("detector.") else 1.0)
        expected = raw[n].double() * fac.view(-1, *([1] * (t.ndim - 1)))
        torch.testing.assert_close(t.double(), expected, rtol=1e-5, atol=1e-9)
    # the γ = 1 member is untouched, bit for bit
    for n in out:
        assert torch.equal(out[n][2], raw[n][2]), n


def test_without_renormalization_norm_grows_as_amplified() -> None:
    block = _block()
    raw = _raw_grads(block, seed=5)
    a0, r0 = _sq(raw, "detector."), _sq(raw, "corrector.")
    gamma = [3.0, 1.5, 1.0]
    out, info = _modulate(block, raw, gamma, [False, False, False], [INF, INF, INF])
    g = torch.tensor(gamma, dtype=torch.float64)
    expected = (g**2 * a0 + r0).sqrt()
    torch.testing.assert_close(_sq(out).sqrt(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(info["amplified"], expected, rtol=1e-6, atol=0)
    for n, t in out.items():
        if n.startswith("corrector."):
            assert torch.equal(t, raw[n]), n
    for n in out:
        assert torch.equal(out[n][2], raw[n][2]), n


def test_clipping_bounds_corrector_group_and_leaves_detector_untouched() -> None:
    block = _block()
    raw = _raw_grads(block, corr_scale=10.0, seed=11)
    gamma, renorm = [3.0, 2.0, 1.0], [True, False, True]
    unclipped, _ = _modulate(block, raw, gamma, renorm, [INF, INF, INF])
    c_norm = _sq(unclipped, "corrector.").sqrt()
    tau = [0.5 * float(c_norm[0]), 2.0 * float(c_norm[1]), 0.1 * float(c_norm[2])]
    out, info = _modulate(block, raw, gamma, renorm, tau)
    torch.testing.assert_close(info["corrector"], c_norm, rtol=1e-6, atol=0)
    after = _sq(out, "corrector.").sqrt()
    tau_t = torch.tensor(tau, dtype=torch.float64)
    assert bool((after <= tau_t * (1 + 1e-6)).all()), (after, tau_t)
    torch.testing.assert_close(after[[0, 2]], tau_t[[0, 2]], rtol=1e-6, atol=0)
    for n, t in out.items():
        if n.startswith("detector."):
            assert torch.equal(t, unclipped[n]), n  # the clip never touches the detection group
        else:
            assert torch.equal(t[1], unclipped[n][1]), n  # member 1 is below τ: no clip
            for g in (0, 2):
                expected = unclipped[n][g].double() * tau[g] / float(c_norm[g])
                torch.testing.assert_close(t[g].double(), expected, rtol=1e-5, atol=1e-12)


def test_members_never_interact() -> None:
    block = _block()
    raw = _raw_grads(block, seed=3)
    c = _sq(raw, "corrector.").sqrt()
    tau = [float(c[0]) / 4, float(c[1]) / 4, INF]
    ref, _ = _modulate(block, raw, [3.0, 3.0, 1.0], [True, True, True], tau)
    alt, _ = _modulate(block, raw, [7.0, 3.0, 1.0], [False, True, True], [1e-3, tau[1], tau[2]])
    for n in ref:
        assert not torch.equal(ref[n][0], alt[n][0]) or not raw[n][0].any(), n
        assert torch.equal(ref[n][1], alt[n][1]), n
        assert torch.equal(ref[n][2], alt[n][2]), n
    # a member's result does not depend on which other members share the ensemble
    other = _raw_grads(block, seed=3)
    other = {n: t.clone() for n, t in other.items()}
    for t in other.values():
        t[0] *= 1e4
    mod, _ = _modulate(block, other, [3.0, 3.0, 1.0], [True, True, True], tau)
    for n in ref:
        assert torch.equal(ref[n][1], mod[n][1]) and torch.equal(ref[n][2], mod[n][2]), n


def test_zero_gradient_member_stays_zero_and_finite() -> None:
    block = _block()
    raw = _raw_grads(block, member_weight=torch.tensor([1.0, 0.0, 1.0]))
    assert float(_sq(raw)[1]) == 0.0
    out, info = _modulate(block, raw, [4.0, 4.0, 4.0], [True, True, True], [1.0, 1.0, 1.0])
    for n, t in out.items():
        assert bool(torch.isfinite(t).all()), n
        assert not t[1].any(), n
    assert bool(torch.isfinite(info["final"]).all())


@settings(max_examples=15, deadline=None)
@given(
    gamma=st.lists(st.one_of(st.just(1.0), st.floats(1.0, 30.0)), min_size=G, max_size=G),
    renorm=st.lists(st.booleans(), min_size=G, max_size=G),
    det_scale=st.floats(1e-3, 1e3),
    corr_scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 1000),
)
def test_modulation_property(gamma, renorm, det_scale, corr_scale, seed) -> None:
    block = _block()
    raw = _raw_grads(block, det_scale=det_scale, corr_scale=corr_scale, seed=seed)
    a0, r0 = _sq(raw, "detector."), _sq(raw, "corrector.")
    out, _ = _modulate(block, raw, gamma, renorm, [INF] * G)
    a1, r1 = _sq(out, "detector."), _sq(out, "corrector.")
    g = torch.tensor(gamma, dtype=torch.float64)
    rn = torch.tensor(renorm)
    expected = torch.where(rn, (a0 + r0).sqrt(), (g**2 * a0 + r0).sqrt())
    torch.testing.assert_close((a1 + r1).sqrt(), expected, rtol=1e-6, atol=0)
    # the detection share is γ²a / (γ²a + r) whether or not the member is renormalized
    torch.testing.assert_close(a1 / (a1 + r1), g**2 * a0 / (g**2 * a0 + r0), rtol=1e-5, atol=0)
    for k in range(G):
        if gamma[k] == 1.0:
            for n in out:
                assert torch.equal(out[n][k], raw[n][k]), (k, n)


def test_shrink_only_takes_the_full_members_step_size_without_reallocation() -> None:
    """Member 2 (γ = 1, no renormalization of its own) borrows member 0's renormalization factor: its
    gradient is its raw gradient times that factor — the full model's step-size schedule, with the
    detection/correction split of the unamplified gradient."""
    block = _block()
    raw = _raw_grads(block, det_scale=3.0, seed=4)
    for n, p in block.named_parameters():
        p.grad = raw[n].clone()
    info = modulate_gradients(block.detection_parameters(), block.correction_parameters(),
                              gamma=torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64),
                              renormalize=torch.tensor([True, True, False]),
                              clip_tau=torch.tensor([INF] * G, dtype=torch.float64),
                              borrow=torch.tensor([-1, -1, 0]))
    out = {n: p.grad.detach().clone() for n, p in block.named_parameters()}
    a0, r0 = _sq(raw, "detector."), _sq(raw, "corrector.")
    f_full = ((a0[0] + r0[0]) / (16.0 * a0[0] + r0[0])).sqrt()  # the full member's factor, < 1
    assert float(f_full) < 1.0
    torch.testing.assert_close(info["factor"], torch.stack([f_full, torch.ones((), dtype=torch.float64),
                                                             f_full]), rtol=1e-6, atol=0)
    for n in raw:
        torch.testing.assert_close(out[n][2].double(), raw[n][2].double() * f_full, rtol=1e-5, atol=1e-12)
        assert torch.equal(out[n][1], raw[n][1])  # gamma 1 and renormalized: unchanged
    # no re-allocation: member 2's detection share is that of its raw gradient
    torch.testing.assert_close(_sq(out, "detector.")[2] / (_sq(out, "detector.")[2] + _sq(out, "corrector.")[2]),
                               a0[2] / (a0[2] + r0[2]), rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------------
# 2. contraction corrector
# ---------------------------------------------------------------------------------------------

BOUND = 0.9
CONTRACT = torch.tensor([True, True, True, False])


def _corrector(contract: torch.Tensor | None = CONTRACT) -> Corrector:
    return Corrector([0, 1, 2, 3], 8, [16, 16], BOUND, contract)


def _empirical_ratios(corr: Corrector, seed: int = 0) -> torch.Tensor:
    """||C(a) − C(b)|| / ||a − b|| on random pairs at many scales and distances, per member (G, P)."""
    c64 = copy.deepcopy(corr).double()
    g = c64.layers[0].weight.shape[0]
    gen = _gen(seed)
    ratios = []
    for scale in (0.01, 1.0, 100.0):
        for eps in (1e-6, 1e-3, 0.1, 1.0, 10.0):
            a = torch.randn(g, 250, 8, generator=gen, dtype=torch.float64) * scale
            d = torch.randn(g, 250, 8, generator=gen, dtype=torch.float64)
            b = a + eps * scale * d / d.norm(dim=-1, keepdim=True)
            with torch.no_grad():
                num = (c64(a) - c64(b)).norm(dim=-1)
            ratios.append(num / (a - b).norm(dim=-1))
    return torch.cat(ratios, 1)


def test_projection_enforces_exact_bound_at_init_and_after_blowup() -> None:
    corr = _corrector(contract=None)
    assert bool(corr.contract.all())
    assert bool((corr.lipschitz_upper_bound() <= BOUND + 1e-5).all())
    with torch.no_grad():
        for layer in corr.layers:
            layer.weight.mul_(50.0)
    assert bool((corr.lipschitz_upper_bound() > 1.0).all())
    corr.project()
    assert bool((corr.lipschitz_upper_bound() <= BOUND + 1e-5).all())
    # every blown-up layer lands on the per-layer bound c = (bound - a)^(1/L), a = skip coefficient
    a = corr.skip().detach()
    assert bool(((a > 0) & (a < BOUND)).all())
    c = (BOUND - a) ** (1 / 3)
    torch.testing.assert_close(corr.spectral_norms(), c.expand(3, 4), rtol=1e-5, atol=0)
    torch.testing.assert_close(corr.per_layer_bound(), c)


def test_spectral_norm_is_exact() -> None:
    corr = _corrector()
    for layer, norms in zip(corr.layers, corr.spectral_norms(), strict=True):
        for g in range(4):
            sv = torch.linalg.svdvals(layer.weight.detach()[g].double())
            assert float(norms[g]) == pytest.approx(float(sv[0]), rel=1e-5)


def test_contract_false_member_is_left_unprojected() -> None:
    free = _corrector(contract=torch.zeros(4, dtype=torch.bool))
    corr = _corrector()
    for a, b in zip(free.layers, corr.layers, strict=True):  # same init, member 3 never projected
        assert torch.equal(a.weight[3], b.weight[3])
    with torch.no_grad():
        for layer in corr.layers:
            layer.weight.mul_(50.0)
    before = [layer.weight.detach().clone() for layer in corr.layers]
    biases = [layer.bias.detach().clone() for layer in corr.layers]
    corr.project()
    bounds = corr.lipschitz_upper_bound()
    assert bool((bounds[:3] <= BOUND + 1e-5).all())
    assert float(bounds[3]) > 1.0
    for layer, w, b in zip(corr.layers, before, biases, strict=True):
        assert torch.equal(layer.weight[3], w[3])
        assert not torch.equal(layer.weight[:3], w[:3])
        assert torch.equal(layer.bias, b)  # biases do not change the Lipschitz constant


def test_empirical_contraction_on_random_pairs() -> None:
    corr = _corrector()
    r = _empirical_ratios(corr)
    assert r.shape[1] >= 3000
    assert bool((r[:3] <= BOUND * (1 + 1e-5)).all()), float(r[:3].max())
    with torch.no_grad():
        for layer in corr.layers:
            layer.weight.mul_(50.0)
    corr.project()
    r = _empirical_ratios(corr, seed=1)
    assert bool((r[:3] <= BOUND * (1 + 1e-5)).all()), float(r[:3].max())
    assert float(r[3].max()) > 1.0  # the unprojected member is no contraction: the check discriminates


@settings(max_examples=10, deadline=None)
@given(blowup=st.floats(0.1, 1e3), seed=st.integers(0, 10_000))
def test_projection_property(blowup, seed) -> None:
    corr = _corrector()
    with torch.no_grad():
        for i, layer in enumerate(corr.layers):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=_gen(seed + i)) * blowup)
    corr.project()
    assert bool((corr.lipschitz_upper_bound()[:3] <= BOUND + 1e-5).all())
    r = _empirical_ratios(corr, seed=seed)
    assert bool((r[:3] <= BOUND * (1 + 1e-5)).all())


# ---------------------------------------------------------------------------------------------
# 3. gate and exact routing bypass
# ---------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 600), alpha=st.floats(0.001, 0.999), seed=st.integers(0, 10_000),
       ties=st.booleans())
def test_calibrated_threshold_false_alarm_rate(n, alpha, seed, ties) -> None:
    scores = torch.rand(3, n, generator=_gen(seed))
    if ties:
        scores = (scores * 5).floor()
    thr = calibrate_threshold(scores, alpha)
    assert thr.shape == (3,) and thr.dtype == scores.dtype
    above = (scores > thr.unsqueeze(1)).double().mean(1)
    assert bool((above <= alpha).all()), (above, alpha)
    # "higher" interpolation: the threshold is one of the observed scores
    assert bool((scores == thr.unsqueeze(1)).any(1).all())


def test_calibrate_threshold_rejects_bad_rate() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            calibrate_threshold(torch.rand(10), bad)


def test_sample_scores_is_max_over_modalities() -> None:
    s = torch.rand(2, 7, 3, generator=_gen(0))
    assert torch.equal(sample_scores(s), s.max(-1).values)


def test_route_is_exact_bypass() -> None:
    z = torch.randn(2, 9, 8, generator=_gen(0))
    corrected = torch.randn(2, 9, 8, generator=_gen(1))
    flagged = torch.rand(2, 9, generator=_gen(2)) > 0.5
    flagged[:, 0], flagged[:, 1] = True, False
    out = route(z, corrected, flagged)
    assert out.shape == z.shape
    for g in range(2):
        for i in range(9):
            assert torch.equal(out[g, i], corrected[g, i] if flagged[g, i] else z[g, i])
    out2 = route(z[0], corrected[0], flagged[0])
    assert torch.equal(out2, out[0])


def _xs(n: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = _gen(seed)
    return {"camera": torch.randn(n, 3, 16, 16, generator=gen),
            "kinematics": torch.randn(n, 5, generator=gen)}


def _frozen_ae(seed: int, **overrides) -> MultimodalAutoencoder:
    torch.manual_seed(seed)
    ae = MultimodalAutoencoder(SPECS, AutoencoderConfig(**{**TINY_AE, **overrides}))
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae


def _models(xs: dict[str, torch.Tensor]) -> MmsslModels:
    mmae = _frozen_ae(0)
    dae = _frozen_ae(1)
    ccfg = ComputeConfig(detector_hidden=16, embedding_dim=4, corrector_hidden=[16], lipschitz_bound=0.9)
    settings_ = variant_settings(VARIANTS, ccfg)
    block = ComputeBlock(list(range(3, 3 + len(VARIANTS))), 8, 2, detector_hidden=16, embedding=4,
                         corrector_hidden=[16], bound=0.9, contract=settings_["contract"])
    block.eval()
    for p in block.parameters():
        p.requires_grad_(False)
    z = encode(mmae, xs)
    scale = LatentScale(mean=z.mean(0), std=z.std().clamp_min(1e-6))
    g = len(VARIANTS)
    models = MmsslModels(mmae=mmae, dae=dae, block=block, variants=VARIANTS, scale=scale,
                         thresholds=torch.zeros(g), modality_thresholds=torch.zeros(g, 2), compute_cfg=ccfg)
    _, scores, _ = models.detect(xs)
    s = sample_scores(scores)  # (G, N)
    n = s.shape[1]
    # a threshold equal to an observed score: that sample sits on the boundary and must bypass
    models.thresholds = s.sort(1).values[:, n // 2].clone()
    models.modality_thresholds = scores.amax(1).clone()
    return models


def test_end_to_end_exact_bypass_and_routing() -> None:
    xs = _xs()
    models = _models(xs)
    oracle = torch.rand(24, generator=_gen(9)) > 0.5
    out, det = models.outputs(xs, oracle=oracle)
    z, scores, corr = models.detect(xs)
    s = sample_scores(scores)
    flagged = s > models.thresholds.unsqueeze(1)
    assert torch.equal(det["flagged"], flagged)
    assert bool(flagged.any(1).all()) and bool((~flagged).any(1).all())
    assert bool((s == models.thresholds.unsqueeze(1)).any(1).all())  # boundary samples exist
    assert torch.equal(det["scores"], scores[0]) and torch.equal(det["sample_score"], s[0])
    assert set(out) == {"mmae", "dae", "mmssl", "mmssl_no_amplification", "mmssl_no_renormalization",
                        "mmssl_no_contraction", "mmssl_clip_only", "mmssl_shrink_only", "mmssl_no_routing",
                        "mmssl_oracle_routing"}
    for n, x in xs.items():
        for model in out:
            assert out[model][n].shape == x.shape
    corrected_dec = [decode(models.mmae, corr[g]) for g in range(len(VARIANTS))]
    for g, v in enumerate(VARIANTS):
        name = "mmssl" if v == "full" else f"mmssl_{v}"
        for i in range(24):
            ref = corrected_dec[g] if flagged[g, i] else out["mmae"]
            for n in xs:
                assert torch.equal(out[name][n][i], ref[n][i]), (v, i, n, bool(flagged[g, i]))
    for n in xs:
        assert torch.equal(out["mmssl_no_routing"][n], corrected_dec[0][n])
        for i in range(24):
            ref = corrected_dec[0] if oracle[i] else out["mmae"]
            assert torch.equal(out["mmssl_oracle_routing"][n][i], ref[n][i])
    # bypassed latents are the encoder's latent itself; corrected ones really differ
    mmae_direct = decode(models.mmae, z)
    for n in xs:
        assert torch.equal(out["mmae"][n], mmae_direct[n])
    assert not torch.equal(corr[0], z)


def test_outputs_without_oracle_and_dae() -> None:
    xs = _xs(10, seed=4)
    models = _models(xs)
    models.dae = None
    out, _ = models.outputs(xs)
    assert "dae" not in out and "mmssl_oracle_routing" not in out
    assert models.full == 0 and models.names == ("camera", "kinematics")


# ---------------------------------------------------------------------------------------------
# 4. persistence
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, MmsslModels, dict[str, torch.Tensor]]:
    xs = _xs(16, seed=2)
    models = _models(xs)
    d = tmp_path_factory.mktemp("mmssl") / "seed0"
    models.save(d, SPECS)
    return d, models, xs


def test_save_load_round_trip(saved) -> None:
    d, models, xs = saved
    for sub in ("mmae", "dae", "compute"):
        assert (d / sub / "weights.safetensors").is_file() and (d / sub / "config.json").is_file()
    loaded = MmsslModels.load(d)
    assert loaded.variants == models.variants
    assert torch.equal(loaded.thresholds, models.thresholds)
    assert torch.equal(loaded.modality_thresholds, models.modality_thresholds)
    assert torch.equal(loaded.block.corrector.contract, models.block.corrector.contract)
    assert loaded.compute_cfg == models.compute_cfg
    oracle = torch.arange(16) % 3 == 0
    out_a, det_a = models.outputs(xs, oracle=oracle)
    out_b, det_b = loaded.outputs(xs, oracle=oracle)
    assert set(out_a) == set(out_b)
    for m in out_a:
        for n in out_a[m]:
            assert torch.equal(out_a[m][n], out_b[m][n]), (m, n)
    for k in det_a:
        assert torch.equal(det_a[k], det_b[k]), k


def _copy(saved, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(saved[0], d)
    return d


def _edit_config(path: Path, fn) -> None:
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def _drop_tensor(path: Path, key: str) -> None:
    tensors = load_file(str(path))
    del tensors[key]
    save_file(tensors, str(path))


def _set(key: str, value):
    def fn(cfg: dict) -> None:
        cfg[key] = value
    return fn


CORRUPTIONS = {
    "garbage_weights": lambda d: (d / "compute" / "weights.safetensors").write_bytes(b"not safetensors"),
    "truncated_weights": lambda d: (d / "mmae" / "weights.safetensors").write_bytes(
        (d / "mmae" / "weights.safetensors").read_bytes()[:200]),
    "missing_weights": lambda d: (d / "mmae" / "weights.safetensors").unlink(),
    "missing_compute_dir": lambda d: shutil.rmtree(d / "compute"),
    "malformed_json": lambda d: (d / "compute" / "config.json").write_text("{not json"),
    "json_not_object": lambda d: (d / "mmae" / "config.json").write_text("[1, 2]"),
    "missing_config": lambda d: (d / "dae" / "config.json").unlink(),
    "bad_compute_config": lambda d: _edit_config(
        d / "compute" / "config.json", lambda c: c["compute"].update(lipschitz_bound=1.5)),
    "missing_variants": lambda d: _edit_config(d / "compute" / "config.json", lambda c: c.pop("variants")),
    "no_full_variant": lambda d: _edit_config(d / "compute" / "config.json",
                                              _set("variants", ["no_amplification"] * 4)),
    "unknown_variant": lambda d: _edit_config(d / "compute" / "config.json",
                                              _set("variants", ["full", "a", "b", "c"])),
    "architecture_mismatch": lambda d: _edit_config(
        d / "compute" / "config.json", lambda c: c["compute"].update(corrector_hidden=[12])),
    "ae_architecture_mismatch": lambda d: _edit_config(
        d / "mmae" / "config.json", lambda c: c["autoencoder"].update(latent_dim=6)),
    "bad_autoencoder_config": lambda d: _edit_config(
        d / "mmae" / "config.json", lambda c: c["autoencoder"].update(bogus=1)),
    "missing_gate_tensor": lambda d: _drop_tensor(d / "compute" / "weights.safetensors", "gate.thresholds"),
    "missing_block_tensor": lambda d: _drop_tensor(d / "compute" / "weights.safetensors",
                                                   "block.corrector.layers.0.weight"),
    "modality_spec_missing_shape": lambda d: _edit_config(
        d / "mmae" / "config.json", lambda c: c["modalities"][0].pop("shape")),
    "modality_spec_bad_kind": lambda d: _edit_config(
        d / "mmae" / "config.json", lambda c: c["modalities"][1].update(kind="audio")),
    "modality_spec_not_object": lambda d: _edit_config(
        d / "mmae" / "config.json", _set("modalities", ["camera", "kinematics"])),
    "modalities_null": lambda d: _edit_config(d / "dae" / "config.json", _set("modalities", None)),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_checkpoint_raises_checkpoint_error(saved, tmp_path, case) -> None:
    d = _copy(saved, tmp_path)
    CORRUPTIONS[case](d)
    with pytest.raises(CheckpointError) as exc:
        MmsslModels.load(d)
    msg = str(exc.value)
    assert msg and "\n" not in msg


def test_load_missing_directory(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        MmsslModels.load(tmp_path / "nothing-here")


# ---------------------------------------------------------------------------------------------
# 5. autoencoder shapes and errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_encoder", ["conv", "dense"])
@pytest.mark.parametrize("sensor_encoder", ["dense", "conv1d"])
def test_autoencoder_shapes_and_layers(image_encoder, sensor_encoder) -> None:
    ae = _frozen_ae(0, image_encoder=image_encoder, sensor_encoder=sensor_encoder)
    xs = _xs(6, seed=1)
    z = ae.encode(xs)
    assert z.shape == (6, 8) and ae.latent_dim == 8
    assert ae.codes(xs).shape == (6, 8 + 4)
    out = ae(xs)
    assert set(out) == set(xs)
    for n, x in xs.items():
        assert out[n].shape == x.shape
    assert set(ae.decode(z)) == {"camera", "kinematics"}
    for name, code in (("camera", 8), ("kinematics", 4)):
        steps = ae.layers_of(name)
        assert steps and all(isinstance(label, str) for label, _ in steps)
        h = xs[name]
        for _, module in steps:
            h = module(h)
        direct = ae.encoders[name](xs[name])
        assert direct.shape == (6, code)
        torch.testing.assert_close(h, direct)


def test_autoencoder_input_errors() -> None:
    ae = _frozen_ae(0)
    xs = _xs(4)
    with pytest.raises(DataError):
        ae({"camera": xs["camera"]})
    with pytest.raises(DataError):
        ae.encode({"kinematics": xs["kinematics"]})
    with pytest.raises(DataError):
        ae({"camera": torch.randn(4, 3, 16, 8), "kinematics": xs["kinematics"]})
    with pytest.raises(DataError):
        ae({"camera": xs["camera"], "kinematics": torch.randn(4, 6)})
    with pytest.raises(DataError):
        ae.codes({"camera": torch.randn(4, 16, 16, 3), "kinematics": xs["kinematics"]})


@pytest.mark.parametrize("image_encoder", ["conv", "dense"])
@pytest.mark.parametrize("shape,channels", [((3, 18, 18), [4, 8]), ((3, 12, 12), [4, 8, 16]),
                                            ((3, 16, 12), [4, 8, 16])])
def test_indivisible_image_size_raises_spec_error(image_encoder, shape, channels) -> None:
    # the decoder is convolutional for either encoder, so the size constraint holds for both
    specs = (ModalitySpec("camera", "image", shape), ModalitySpec("kinematics", "vector", (5,)))
    with pytest.raises(SpecError):
        MultimodalAutoencoder(specs, AutoencoderConfig(**{**TINY_AE, "image_channels": channels,
                                                          "image_encoder": image_encoder}))


def test_unsupported_modality_and_sensor_encoder() -> None:
    specs = (ModalitySpec("camera", "image", (3, 16, 16)), ModalitySpec("ts", "timeseries", (4, 3)))
    with pytest.raises(SpecError):
        MultimodalAutoencoder(specs, AutoencoderConfig(**TINY_AE))
    with pytest.raises(SpecError):
        VectorEncoder(5, 16, 4, "lstm")


# ---------------------------------------------------------------------------------------------
# 6. contrastive detector loss
# ---------------------------------------------------------------------------------------------


def test_contrastive_loss_zero_when_separated() -> None:
    faulty = torch.tensor([[False, True], [True, False], [False, False], [True, True]])
    scores = torch.where(faulty, torch.tensor(9.0), torch.tensor(0.0)).expand(2, -1, -1).clone()
    loss = contrastive_detector_loss(scores, faulty, margin=2.0)
    assert loss.shape == (2,)
    assert torch.equal(loss, torch.zeros(2))
    # faulty far beyond the margin also costs nothing
    scores2 = torch.where(faulty, torch.tensor(100.0), torch.tensor(0.0)).unsqueeze(0)
    assert float(contrastive_detector_loss(scores2, faulty, 2.0)[0]) == 0.0


def test_contrastive_loss_positive_and_gradient_signs() -> None:
    faulty = torch.tensor([[False, True], [True, False], [False, False], [True, True]])
    scores = (torch.rand(3, 4, 2, generator=_gen(0)) * 3 + 0.05).requires_grad_(True)  # dist < margin 2
    loss = contrastive_detector_loss(scores, faulty, margin=2.0)
    assert bool((loss > 0).all())
    loss.sum().backward()
    grad = scores.grad
    f = faulty.expand_as(grad)
    assert bool((grad[~f] > 0).all())  # descent pulls clean scores down
    assert bool((grad[f] < 0).all())  # descent pushes faulty scores up
    # the exact gradients of ½ mean_clean(s) + ½ mean_faulty(max(0, m − √s)²)
    n_clean, n_faulty = float((~faulty).sum()), float(faulty.sum())
    s = scores.detach()
    d = s.sqrt()
    expected = torch.where(f, -0.5 * (2.0 - d) / d / n_faulty, torch.full_like(s, 0.5 / n_clean))
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)


def test_contrastive_loss_faulty_beyond_margin_has_no_gradient_and_member_mask() -> None:
    faulty = torch.tensor([[True, False], [False, True]])
    scores = torch.tensor([[[9.0, 0.5], [0.3, 1.0]]]).requires_grad_(True)
    loss = contrastive_detector_loss(scores, faulty, margin=2.0)
    loss.sum().backward()
    assert float(scores.grad[0, 0, 0]) == 0.0 and float(scores.grad[0, 1, 1]) < 0
    # per-member masks (G, B, M) and all-clean members stay finite
    masks = torch.stack([faulty, torch.zeros_like(faulty)])
    s2 = torch.rand(2, 2, 2, generator=_gen(1))
    out = contrastive_detector_loss(s2, masks, 2.0)
    assert bool(torch.isfinite(out).all())
    assert float(out[1]) == pytest.approx(0.5 * float(s2[1].mean()), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# 7. variant settings
# ---------------------------------------------------------------------------------------------


def test_variant_settings() -> None:
    cfg = ComputeConfig(gamma=4.0, renormalize=True, clip_tau=1.5)
    s = variant_settings(VARIANTS, cfg)
    assert VARIANTS == ("full", "no_amplification", "no_renormalization", "no_contraction", "clip_only",
                        "shrink_only")
    assert s["gamma"].dtype == torch.float64 and s["clip_tau"].dtype == torch.float64
    assert s["renormalize"].dtype == torch.bool and s["contract"].dtype == torch.bool
    assert s["gamma"].tolist() == [4.0, 1.0, 4.0, 4.0, 4.0, 1.0]
    assert s["renormalize"].tolist() == [True, True, False, True, True, False]
    # clip_only (the paper's literal corrector): clipped at tau, but no spectral projection
    assert s["clip_tau"].tolist() == [1.5, 1.5, 1.5, INF, 1.5, 1.5]
    assert s["contract"].tolist() == [True, True, True, False, False, True]
    # shrink_only borrows the full member's step factor (the full model sits at index 0 here)
    assert s["borrow"].tolist() == [-1, -1, -1, -1, -1, 0]
    assert variant_settings(["no_amplification", "shrink_only", "full"], cfg)["borrow"].tolist() == [-1, 2, -1]
    with pytest.raises(ValueError, match="beside 'full'"):
        variant_settings(["no_amplification", "shrink_only"], cfg)
    s2 = variant_settings(["no_contraction", "full"], ComputeConfig(renormalize=False, clip_tau=None))
    assert s2["renormalize"].tolist() == [False, False]
    assert s2["clip_tau"].tolist() == [INF, INF]
    assert s2["contract"].tolist() == [False, True]
    with pytest.raises(ValueError, match="unknown MMSSL variant"):
        variant_settings(["full", "no_detector"], cfg)


# ---------------------------------------------------------------------------------------------
# 8. config validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(lipschitz_bound=1.0), dict(lipschitz_bound=1.5),
                                    dict(lipschitz_bound=0.0), dict(gamma=0.5), dict(clip_tau=0.0),
                                    dict(false_alarm_rate=1.0),
                                    dict(optimizer="rmsprop"), dict(unknown=1)])
def test_compute_config_rejects(kwargs) -> None:
    with pytest.raises(ValidationError):
        ComputeConfig(**kwargs)


def test_configs_accept_and_reject() -> None:
    assert ComputeConfig(lipschitz_bound=0.999).lipschitz_bound == 0.999
    for bad in (["camera"], ["camera", "camera"], []):
        with pytest.raises(ValidationError):
            MmsslRunConfig(data="x", modalities=bad)
    with pytest.raises(ValidationError):
        MmsslRunConfig(data="x", seeds=[])
    with pytest.raises(ValidationError):
        MmsslRunConfig(data="x", ablations=["no_contraction", "no_contraction"])
    with pytest.raises(ValidationError):
        AutoencoderConfig(image_encoder="vit")
    cfg = MmsslRunConfig.quick_config(data="x")
    assert cfg.quick and cfg.modalities == ["camera", "kinematics"] and len(cfg.seeds) == 2


# ---------------------------------------------------------------------------------------------
# 9. stage-2 training smoke
# ---------------------------------------------------------------------------------------------


def _synthetic_batch(n: int = 120, seed: int = 0) -> MultimodalBatch:
    gen = _gen(seed)
    t = torch.arange(n) % 20
    episode = torch.arange(n) // 20
    base = torch.randn(n, 1, 1, 1, generator=gen)
    camera = base + 0.3 * torch.randn(n, 3, 16, 16, generator=gen)
    kin = torch.sin(t[:, None] / 3.0 + torch.arange(5)[None]).float() + 0.1 * torch.randn(n, 5, generator=gen)
    return MultimodalBatch.from_arrays({"camera": camera, "kinematics": kin},
                                       meta={"episode": episode, "t": t})


@pytest.fixture(scope="module")
def stage2():
    batch = _synthetic_batch()
    train, val = batch.select(slice(0, 80)), batch.select(slice(80, 120))
    ae_cfg = AutoencoderConfig(epochs=1, batch_size=32,
                               **{k: v for k, v in TINY_AE.items() if k != "image_hidden"})
    ae, res = train_autoencoder(train, val, ae_cfg, seed=0)
    spec = training_spec(train)
    cfg = ComputeConfig(epochs=2, corruption_draws=1, detector_hidden=16, corrector_hidden=[16],
                        recon_samples=4, batch_size=32, patience=None)
    ae_state = {k: v.clone() for k, v in ae.state_dict().items()}
    r1 = train_compute_block(ae, train, val, spec, cfg, seed=0)
    r2 = train_compute_block(ae, train, val, spec, cfg, seed=0)
    return dict(ae=ae, ae_result=res, ae_state=ae_state, train=train, val=val, spec=spec, cfg=cfg,
                r1=r1, r2=r2)


def test_train_compute_block_smoke(stage2) -> None:
    r = stage2["r1"]
    g = len(VARIANTS)
    assert r.variants == VARIANTS
    assert r.thresholds.shape == (g,) and r.modality_thresholds.shape == (g, 2)
    assert bool(torch.isfinite(r.thresholds).all())
    assert r.train.epochs_run == 2 and r.train.best_val.shape == (g,)
    bounds = r.block.corrector.lipschitz_upper_bound()
    contract = r.settings["contract"]
    assert torch.equal(r.block.corrector.contract, contract)
    assert bool((bounds[contract] <= stage2["cfg"].lipschitz_bound + 1e-5).all()), bounds
    assert not any(p.requires_grad for p in r.block.parameters())
    # the frozen stage-1 autoencoder is not modified by stage 2
    for k, v in stage2["ae"].state_dict().items():
        assert torch.equal(v, stage2["ae_state"][k]), k
    # the gate equals the calibration of the clean validation scores
    zv = r.scale.to_unit(encode(stage2["ae"], stage2["val"].modalities))
    with torch.no_grad():
        clean = r.block.detector(zv.unsqueeze(0).expand(g, -1, -1))
    far = stage2["cfg"].false_alarm_rate
    assert torch.equal(r.thresholds, calibrate_threshold(sample_scores(clean), far))
    frac = (sample_scores(clean) > r.thresholds.unsqueeze(1)).double().mean(1)
    assert bool((frac <= stage2["cfg"].false_alarm_rate).all())


def test_train_compute_block_is_deterministic(stage2) -> None:
    r1, r2 = stage2["r1"], stage2["r2"]
    assert torch.equal(r1.thresholds, r2.thresholds)
    assert torch.equal(r1.modality_thresholds, r2.modality_thresholds)
    s1, s2 = r1.block.state_dict(), r2.block.state_dict()
    assert set(s1) == set(s2)
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert torch.equal(r1.scale.mean, r2.scale.mean) and torch.equal(r1.scale.std, r2.scale.std)


def test_bound_holds_for_any_skip_coefficient() -> None:
    """Lip(C) <= a + prod ||W_l|| <= bound whatever the learnt skip coefficient a is."""
    corr = _corrector(contract=None)
    with torch.no_grad():
        corr.skip_logit.copy_(torch.tensor([-5.0, 0.0, 3.0, 10.0]))
        for layer in corr.layers:
            layer.weight.mul_(20.0)
    corr.project()
    assert bool((corr.lipschitz_upper_bound() <= BOUND + 1e-5).all())
    assert bool((_empirical_ratios(corr) <= BOUND * (1 + 1e-6)).all())


def test_saturation_bounds_the_output_and_keeps_the_contraction() -> None:
    """phi(z) = s tanh(z / s) keeps Lip(C) <= bound and bounds C on inputs of unseen magnitude."""
    corr = _corrector(contract=None)
    corr.set_saturation(torch.full((8,), 2.0))
    assert bool((_empirical_ratios(corr) <= BOUND * (1 + 1e-6)).all())
    with torch.no_grad():
        small = corr(torch.full((4, 1, 8), 1e3))
        huge = corr(torch.full((4, 1, 8), 1e6))
    torch.testing.assert_close(small, huge)  # both saturated: far-away inputs map to the same point
    assert bool((small.abs() < 100).all())
