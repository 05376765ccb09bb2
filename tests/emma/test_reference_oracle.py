"""The vectorized EMMA equals the naive per-sample reference (mmguard.emma.reference).

Forward: TiedDAE potentials (eq. 4.7), attention (eqs. 5.1-5.5) and the gated MMN logit,
per member and sample, in float64. Training: Adam steps of the batched ensemble (G = 1)
on eq. 5.10 give the same parameters as :class:`ReferenceEmmaTrainer`.
"""

from __future__ import annotations

import pytest
import torch

from mmguard.emma.attention import EmmaAttention
from mmguard.emma.losses import class_weights, emma_objective
from mmguard.emma.network import ConcatPredictor, EmmaNetwork
from mmguard.emma.potential import TiedDAE
from mmguard.emma.reference import ReferenceEmmaTrainer, reference_attention, reference_potential
from mmguard.train.ensemble import EnsembleMLP

SIZES = {2: [4, 4], 3: [4, 3, 6], 5: [4, 3, 6, 2, 5]}


def make_network(sizes: list[int], seeds: list[int], rho: list[float], *, random_attention: bool,
                 seed: int = 0) -> EmmaNetwork:
    """A float64 EmmaNetwork with random DAEs (nonzero biases) and, optionally, random attention."""
    gen = torch.Generator().manual_seed(seed)
    g, m = len(seeds), len(sizes)
    daes = []
    for i, s in enumerate(sizes):
        dae = TiedDAE(seeds, s, 12, stream=10 + i).double()
        with torch.no_grad():
            dae.b_f.copy_(torch.randn(dae.b_f.shape, generator=gen, dtype=torch.float64) * 0.5)
            dae.b_g.copy_(torch.randn(dae.b_g.shape, generator=gen, dtype=torch.float64) * 0.5)
            clean = torch.randn(g, 64, s, generator=gen, dtype=torch.float64)
            dae.psi_min.copy_(dae.potential(clean).amin(1))
        daes.append(dae)
    att = EmmaAttention(g, m, rho).double()
    if random_attention:
        with torch.no_grad():
            att.w_self.copy_(1 + torch.rand(g, m, generator=gen, dtype=torch.float64))
            att.b_self.copy_(torch.rand(g, m, generator=gen, dtype=torch.float64))
            att.w_shared.copy_(torch.rand(g, m, m, generator=gen, dtype=torch.float64) * 2 - 1)
            att.gamma.copy_(torch.rand(g, m, m, generator=gen, dtype=torch.float64))
            att.g_a.copy_(0.5 + 3 * torch.rand(g, generator=gen, dtype=torch.float64))
            att.b_a.copy_(0.3 * torch.rand(g, generator=gen, dtype=torch.float64))
    mlp = EnsembleMLP(seeds, [sum(sizes), 8, 4, 1]).double()
    return EmmaNetwork(daes, att, ConcatPredictor(mlp))


def inputs(sizes: list[int], g: int, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(g, n, s, generator=gen, dtype=torch.float64) for s in sizes]
    xs[0][:, : n // 3] += 3.0  # some samples with a clearly failing first modality
    return xs


@pytest.mark.parametrize("m", [2, 3, 5])
def test_forward_matches_reference(m: int) -> None:
    sizes = SIZES[m]
    g, n = 2, 7
    net = make_network(sizes, [3, 4], rho=[0.05, 0.3], random_attention=True, seed=m)
    xs = inputs(sizes, g, n, seed=10 + m)
    with torch.no_grad():
        logits, out = net(xs)
        psi_raw = net.potentials(xs)
    att = net.attention
    for gi in range(g):
        ref = ReferenceEmmaTrainer.from_network(net, gi, lambda_c=0.0, lambda_e=0.0)
        for s in range(n):
            sample = [x[gi, s] for x in xs]
            for i, d in enumerate(net.daes):
                p = reference_potential(d.W[gi], d.b_f[gi], d.b_g[gi], sample[i])
                torch.testing.assert_close(psi_raw[gi, s, i], p, atol=1e-9, rtol=0)
            r = reference_attention(psi_raw[gi, s], torch.stack([d.psi_min[gi] for d in net.daes]),
                                    att.w_self[gi], att.b_self[gi], att.w_shared[gi], att.gamma[gi],
                                    att.g_a[gi], att.b_a[gi], float(att.rho[gi]))
            torch.testing.assert_close(out.psi[gi, s], r.psi.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.self_energy[gi, s], r.e.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.shared_energy[gi, s], r.e_ij.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.modal_energy[gi, s], r.E.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.alpha[gi, s], r.alpha.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.log_alpha[gi, s], r.log_alpha.detach(), atol=1e-9, rtol=0)
            torch.testing.assert_close(out.beta[gi, s], r.beta.detach(), atol=1e-9, rtol=0)
            with torch.no_grad():
                logit, _, raw = ref.forward_sample(sample)
            torch.testing.assert_close(raw, psi_raw[gi, s], atol=1e-9, rtol=0)
            torch.testing.assert_close(logits[gi, s], logit, atol=1e-9, rtol=0)
    # the failing modality really was attended to less (the comparison is not vacuous)
    assert float(out.beta[:, : n // 3, 0].mean()) < float(out.beta[:, n // 3:, 0].mean())


def vectorized_state(net: EmmaNetwork) -> dict[str, torch.Tensor]:
    att = net.attention
    state = {name: getattr(att, name).detach()[0].clone() for name in ReferenceEmmaTrainer.ATTENTION_NAMES}
    for i, layer in enumerate(net.predictor.mlp.layers):
        state[f"mlp.{i}.weight"] = layer.weight.detach()[0].clone()
        state[f"mlp.{i}.bias"] = layer.bias.detach()[0].clone()
    return state


@pytest.mark.parametrize("random_attention", [False, True])
def test_training_steps_match_reference(random_attention: bool) -> None:
    """Three Adam steps (batch 16, HTRU2 shape: 2 x 4) of the ensemble (G = 1) = the reference."""
    sizes, b, steps = [4, 4], 16, 3
    lr, lambda_c, lambda_e = 1e-2, 0.05, 0.5
    net = make_network(sizes, [11], rho=[0.2], random_attention=random_attention, seed=21)
    gen = torch.Generator().manual_seed(22)
    y_all = (torch.rand(steps, b, generator=gen) < 0.3).long()
    y_all[:, 0], y_all[:, 1] = 0, 1
    weights = class_weights(y_all.reshape(-1), 2).double()
    ref = ReferenceEmmaTrainer.from_network(net, 0, lambda_c=lambda_c, lambda_e=lambda_e,
                                            class_weights=weights.tolist(), lr=lr)
    start = vectorized_state(net)
    params = [p for p in net.parameters() if p.requires_grad]
    assert len(params) == 6 + 2 * 3  # attention + MLP; the DAEs are frozen
    opt = torch.optim.Adam(params, lr=lr)
    att = net.attention
    for t in range(steps):
        xs = [torch.randn(1, b, s, generator=gen, dtype=torch.float64) for s in sizes]
        mask = torch.zeros(b, 2, dtype=torch.bool)
        mask[: b // 4, 0] = True  # IP corrupted
        mask[b // 4: b // 2, 1] = True  # DM corrupted
        mask[b // 2: b // 2 + 2] = True  # both corrupted: the regulariser must skip these
        for i in range(2):
            noise = torch.randn(int(mask[:, i].sum()), 4, generator=gen, dtype=torch.float64)
            xs[i][0, mask[:, i]] += 2.0 * noise
        y = y_all[t]
        logits, out = net(xs)
        loss = emma_objective(logits, y.unsqueeze(0), weights, out, mask.unsqueeze(0), att.g_a, att.b_a,
                              torch.tensor([lambda_c], dtype=torch.float64),
                              torch.tensor([lambda_e], dtype=torch.float64))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        att.project_()
        ref_loss = ref.step([x[0] for x in xs], y, mask)
        assert abs(float(loss.detach()[0]) - ref_loss) < 1e-9
        got, want = vectorized_state(net), ref.state()
        for name, value in want.items():
            # observed agreement ~1e-10 (float64); 1e-8 leaves room for the float32 BCE above
            torch.testing.assert_close(got[name], value, atol=1e-8, rtol=0, msg=f"step {t + 1}: {name}")
    moved = max(float((vectorized_state(net)[k] - v).abs().max()) for k, v in start.items())
    assert moved > 1e-3  # the parameters really changed
    if not random_attention:  # from the neutral start the projection was active (w_i = 1, b_i = 0, b_a = 0)
        assert float(att.w_self.detach().min()) == 1.0 or float(att.b_self.detach().min()) == 0.0
