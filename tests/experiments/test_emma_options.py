"""Chapter-8 annealing, resampled/graded training corruption and the zero-input diagnostic."""

from __future__ import annotations

import math

import pytest
import torch

from mmguard.data.registry import load_dataset
from mmguard.data.splits import stratified_three_way
from mmguard.emma.data import to_streams
from mmguard.emma.training import (
    AnnealSettings,
    EmmaHyper,
    MLPClassifier,
    StageSettings,
    build_emma,
    mlp_sizes,
    train_daes,
    train_with,
)
from mmguard.errors import SpecError
from mmguard.experiments.emma.config import EmmaRunConfig
from mmguard.experiments.emma.experiment import EmmaExperiment
from mmguard.train.ensemble import EnsembleMLP


@pytest.fixture(scope="module")
def splits():
    return stratified_three_way(load_dataset("toy?n=600", seed=0), seed=0).standardize()


def _experiment(splits, **overrides) -> EmmaExperiment:
    cfg = EmmaRunConfig.quick_config(dataset="toy?n=600", seeds=[0, 1], epochs=2, dae_epochs=2, **overrides)
    exp = EmmaExperiment(cfg, splits=splits)
    exp.prepare()
    return exp


@pytest.mark.parametrize("m", [2, 3, 5])
def test_neutral_start_reproduces_the_base_model(m):
    """Chapter 8: g_a = 1, b_a = 0, first layer / tanh(1/M), rho -> 0  =>  EMMA + MMN == base-model."""
    torch.manual_seed(0)
    dims = [3, 4, 2, 5, 1][:m]
    data = {f"m{i}": torch.randn(1, 64, d) for i, d in enumerate(dims)}
    data.update(y=torch.randint(0, 2, (1, 64)), mask=torch.zeros(1, 64, m, dtype=torch.bool))
    daes = train_daes(data, [0], m, hidden=4, epochs=1)
    base = MLPClassifier(EnsembleMLP([0], mlp_sizes(sum(dims), [8, 4], 2)), m)
    net = build_emma(daes, base, torch.zeros(1, dtype=torch.long), torch.tensor([1e-9]), neutral_start=True)
    xs = [data[f"m{i}"] for i in range(m)]
    with torch.no_grad():
        logits, att = net(xs)
        expected = base(xs)
    assert torch.allclose(att.alpha, torch.full_like(att.alpha, 1.0 / m), atol=1e-6)
    assert torch.allclose(att.beta, torch.full_like(att.beta, math.tanh(1.0 / m)), atol=1e-6)
    assert torch.allclose(logits, expected, atol=1e-4)
    # without the neutral start the same module changes the network's output
    plain = build_emma(daes, base, torch.zeros(1, dtype=torch.long), torch.tensor([1e-9]))
    with torch.no_grad():
        assert not torch.allclose(plain(xs)[0], expected, atol=1e-3)


def test_annealing_cools_rho_to_the_target(splits):
    exp = _experiment(splits)
    exp.train_stage1()
    hyper = EmmaHyper(rho=torch.tensor([0.1, 0.1]), lambda_c=torch.zeros(2), lambda_e=torch.zeros(2))
    net = build_emma(exp.daes, exp.models["base"], torch.arange(2), hyper.rho, neutral_start=True)
    seen = []
    train_with(net, exp.noisy["train"], exp.noisy["val"], member_stream=torch.arange(2), stream_seeds=[0, 1],
               weights=exp.weights, hyper=hyper, settings=StageSettings(epochs=4),
               anneal=AnnealSettings(rho_start=1e-6, cool_epochs=3, patience=None),
               progress=lambda epoch, val: seen.append(net.attention.rho.clone()))
    assert torch.allclose(seen[0], torch.full((2,), 1e-6))  # epoch 1 starts hot
    assert bool((seen[1] > seen[0]).all()) and bool((seen[2] > seen[1]).all())  # geometric cooling
    assert torch.allclose(seen[-1], torch.full((2,), 0.1))  # reaches the target


def test_fixed_training_corruption_is_the_thesis_single_draw(splits):
    exp = _experiment(splits)
    before = {k: v.clone() for k, v in exp.noisy["train"].items()}
    assert exp._refresh() is None
    again = to_streams(exp.corrupt(splits.train, "train"))
    for k in before:
        assert torch.equal(before[k], again[k])


def test_resampled_corruption_draws_anew_each_epoch_and_restarts_at_epoch_one(splits):
    exp = _experiment(splits, train_noise="resampled")
    first = {k: v.clone() for k, v in exp.noisy["train"].items()}
    refresh = exp._refresh()
    refresh(2)
    second = {k: v.clone() for k, v in exp.noisy["train"].items()}
    assert not torch.equal(first["m0"], second["m0"])  # a new draw
    refresh(1)
    for k in first:  # epoch 1 restores the initial draw, so every stage sees the same sequence
        assert torch.equal(first[k], exp.noisy["train"][k])
    # the schedule's proportions hold for every draw: 50 % clean, the rest one modality
    n_bad = second["mask"].sum(-1)
    assert bool((n_bad <= 1).all())
    assert abs(float((n_bad == 0).double().mean()) - 0.5) < 0.01


def test_sigma_range_scales_the_noise_per_sample_within_bounds(splits):
    """The ranged draw is the unit-sigma draw of the same seed, rescaled per sample by a factor in [lo,hi]."""
    lo, hi = 0.25, 1.5
    ranged = _experiment(splits, sigma_range=(lo, hi))
    unit = _experiment(splits, sigma=1.0)
    clean = ranged.clean["train"]
    assert torch.equal(ranged.noisy["train"]["mask"], unit.noisy["train"]["mask"])
    mask = ranged.noisy["train"]["mask"]
    factors = []
    for i in range(len(splits.train.names)):
        d = ranged.noisy["train"][f"m{i}"] - clean[f"m{i}"]
        d_unit = unit.noisy["train"][f"m{i}"] - clean[f"m{i}"]
        rows = mask[..., i]
        assert torch.equal(d[~rows], torch.zeros_like(d[~rows]))  # clean rows untouched
        ratio = d[rows] / d_unit[rows]  # (n_corrupted, D): one factor per sample
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
        factors.append(ratio[:, 0])
    f = torch.cat(factors)
    assert float(f.min()) >= lo - 1e-4 and float(f.max()) <= hi + 1e-4
    assert float(f.max() - f.min()) > 0.8 * (hi - lo)  # spread over the range, not a constant
    # validation and test keep the thesis's constant sigma
    d_val = ranged.noisy["val"]["m0"] - ranged.clean["val"]["m0"]
    rms_val = d_val[ranged.noisy["val"]["mask"][..., 0]].pow(2).mean(-1).sqrt()
    assert abs(float(rms_val.mean()) - 0.5) < 0.15


def test_sigma_range_is_validated():
    with pytest.raises(ValueError):
        EmmaRunConfig(sigma_range=(2.0, 1.0))
    from mmguard.cli.emma_cmd import _parse_range

    with pytest.raises(SpecError):
        _parse_range("1.0")


def test_zero_input_percentile_is_a_share_per_modality(splits):
    exp = _experiment(splits)
    exp.train_stage1()
    configs, member_seed, hyper = exp.grid_members()
    net = build_emma(exp.daes, exp.models["base"], member_seed[:2], hyper.rho[:2])
    res = exp.zero_input_percentile(net)
    assert set(res) == set(splits.train.names)
    for mean, std in res.values():
        assert 0.0 <= mean <= 1.0 and std >= 0.0
