"""Re-estimated input statistics (src/mmguard/adapt/stats.py, weighted Standardizer.fit) and
normalisation-layer adaptation (src/mmguard/adapt/norm.py: AdaBN, TENT).

Expectations from the math:

* weighted moments: equal weights give the plain moments; integer weights give the moments of
  the batch with each sample repeated that many times;
* label-shift weights ``w_i = Σ_k p_ik π_k / π̂_k`` with one-hot ``p``: the weighted class
  frequencies are exactly the prior π; when the predicted mix already equals π every weight is 1;
* composing standardisers is composing the maps;
* AdaBN: after one pass with cumulative averaging, a BN layer's running mean/variance are the
  mean and unbiased variance of that layer's input on the window;
* TENT: gradient steps on the mean entropy, with only the BN affine parameters free.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adapt_testutil import channel_means
from torch import nn

from mmguard.adapt.norm import Tent, adabn, copy_for_adaptation, entropy, norm_layers, require_norm_layers
from mmguard.adapt.stats import class_balanced_weights, compose, window_standardizer
from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.downstream.model import DownstreamConfig, MultimodalPredictor
from mmguard.errors import DataError, SpecError
from support import one_line


def mixed_batch(n: int = 30, seed: int = 0) -> MultimodalBatch:
    """Vector (3,), time series (6 steps x 2), image (2 x 8 x 8); non-zero means, unequal spreads."""
    g = torch.Generator().manual_seed(seed)
    return MultimodalBatch.from_arrays({
        "vec": 3.0 * torch.randn(n, 3, generator=g) + torch.tensor([1.0, -5.0, 20.0]),
        "ts": 0.5 * torch.randn(n, 6, 2, generator=g) + torch.tensor([2.0, -1.0]),
        "img": 2.0 * torch.rand(n, 2, 8, 8, generator=g) + torch.tensor([10.0, 0.0])[:, None, None],
    })


def assert_same_stats(a: Standardizer, b: Standardizer, atol: float = 1e-5) -> None:
    assert set(a.mean) == set(b.mean)
    for n in a.mean:
        assert a.mean[n].shape == b.mean[n].shape, n
        assert torch.allclose(a.mean[n], b.mean[n], rtol=1e-5, atol=atol), n
        assert torch.allclose(a.std[n], b.std[n], rtol=1e-5, atol=atol), n


# ============================================================================ weighted Standardizer.fit
def test_equal_weights_equal_the_unweighted_fit() -> None:
    b = mixed_batch()
    plain = Standardizer.fit(b)
    for value in (1.0, 2.5, 1e-3):
        assert_same_stats(Standardizer.fit(b, torch.full((len(b),), value)), plain)
    assert_same_stats(Standardizer.fit(b, [1.0] * len(b)), plain)  # a list is taken as well


def test_integer_weights_equal_repeating_samples() -> None:
    b = mixed_batch(n=25, seed=1)
    w = np.random.default_rng(3).integers(0, 4, size=len(b))
    w[0], w[1] = 0, 3  # some samples dropped, some repeated
    repeated = b.select(torch.as_tensor(np.repeat(np.arange(len(b)), w)))
    weighted = Standardizer.fit(b, torch.as_tensor(w, dtype=torch.float32))
    assert_same_stats(weighted, Standardizer.fit(repeated))
    # and the weighted mean is the independently computed weighted channel mean
    for n in b.names:
        assert torch.allclose(weighted.mean[n].double().flatten(),
                              channel_means(b.modalities[n], torch.as_tensor(w)), atol=1e-4), n


def test_all_weight_on_one_sample_centres_on_it_with_unit_spread() -> None:
    b = mixed_batch(n=10, seed=2)
    w = torch.zeros(len(b))
    w[4] = 1.0
    st = Standardizer.fit(b, w)
    assert torch.allclose(st.mean["vec"], b.modalities["vec"][4], atol=1e-5)
    # a vector feature of one sample has zero spread → std 1 (only centred), never Inf
    assert torch.equal(st.std["vec"], torch.ones(3))
    # time series and images: the statistics of that one sample over time / pixels per channel
    ts, img = b.modalities["ts"][4].double(), b.modalities["img"][4].double()
    assert torch.allclose(st.std["ts"].double().flatten(), ts.std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(st.mean["img"].double().flatten(), img.mean((1, 2)), atol=1e-5)
    assert torch.allclose(st.std["img"].double().flatten(), img.flatten(1).std(1, unbiased=False), atol=1e-5)


@pytest.mark.parametrize("case", ["negative", "too short", "too long", "nan", "inf", "all zero"])
def test_bad_weights_are_a_spec_error(case: str) -> None:
    b = mixed_batch(n=8)
    w = {
        "negative": torch.tensor([1.0, 1, 1, -0.5, 1, 1, 1, 1]),
        "too short": torch.ones(7),
        "too long": torch.ones(9),
        "nan": torch.tensor([1.0, 1, float("nan"), 1, 1, 1, 1, 1]),
        "inf": torch.tensor([1.0, 1, float("inf"), 1, 1, 1, 1, 1]),
        "all zero": torch.zeros(8),
    }[case]
    with pytest.raises(SpecError) as info:
        Standardizer.fit(b, w)
    one_line(info.value, "weights")


# ============================================================================ class-balanced weights
def test_one_hot_class_balanced_weights_reproduce_the_prior() -> None:
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 30 + [1] * 10 + [2] * 20)[order]
    probs = torch.nn.functional.one_hot(labels, 3).float()
    prior = torch.tensor([2.0, 5.0, 3.0])  # not normalised: the function normalises it
    w = class_balanced_weights(probs, prior)
    assert w.shape == (60,) and w.dtype == torch.float32 and bool((w > 0).all())
    assert abs(float(w.double().mean()) - 1.0) < 1e-6
    freq = torch.stack([w[labels == k].double().sum() for k in range(3)]) / w.double().sum()
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), atol=1e-6), freq.tolist()


def test_class_absent_from_the_window_keeps_the_prior_ratio_of_the_others() -> None:
    labels = torch.tensor([0] * 12 + [1] * 4)
    w = class_balanced_weights(torch.nn.functional.one_hot(labels, 3).float(), torch.tensor([0.25, 0.25, 0.5]))
    assert bool(torch.isfinite(w).all())
    freq0 = float(w[labels == 0].double().sum() / w.double().sum())
    assert abs(freq0 - 0.5) < 1e-6  # 0.25 : 0.25 between the two present classes


def test_weights_are_one_when_the_predicted_mix_already_is_the_prior() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(50, 4, generator=g), 1)
    w = class_balanced_weights(probs, probs.mean(0))
    assert torch.allclose(w, torch.ones(50), atol=1e-5)
    other = class_balanced_weights(probs, torch.tensor([0.7, 0.1, 0.1, 0.1]))
    assert abs(float(other.double().mean()) - 1.0) < 1e-6 and not torch.allclose(other, torch.ones(50), atol=1e-2)


def test_class_balanced_weights_refuse_mismatched_shapes() -> None:
    with pytest.raises(DataError):
        class_balanced_weights(torch.ones(5, 3) / 3, torch.ones(4))
    with pytest.raises(DataError):
        class_balanced_weights(torch.ones(5) / 3, torch.ones(5))


def test_window_standardizer_mean_is_the_prior_mixture_of_class_means() -> None:
    """One-hot probabilities: the weighted class frequencies are π, so the weighted mean is
    Σ_k π_k · (mean of class k) — whatever the class mix of the window."""
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0] * 40 + [1] * 10)
    centres = torch.tensor([[0.0, 0.0], [4.0, -2.0]])
    x = centres[labels] + torch.randn(50, 2, generator=g)
    window = MultimodalBatch.from_arrays({"v": x})
    prior = torch.tensor([0.5, 0.5])
    st = window_standardizer(window, torch.nn.functional.one_hot(labels, 2).float(), prior)
    expected = 0.5 * x[labels == 0].double().mean(0) + 0.5 * x[labels == 1].double().mean(0)
    assert torch.allclose(st.mean["v"].double(), expected, atol=1e-5)
    plain = window_standardizer(window)
    assert torch.allclose(plain.mean["v"].double(), x.double().mean(0), atol=1e-5)
    assert_same_stats(window_standardizer(window, None, prior), plain)  # probabilities missing: plain


# ============================================================================ compose
def test_compose_is_the_composition_of_the_maps() -> None:
    b = mixed_batch(n=20, seed=4)
    outer = Standardizer.fit(b)
    g = torch.Generator().manual_seed(5)
    inner = Standardizer(mean={n: torch.randn(outer.mean[n].shape, generator=g) for n in b.names},
                         std={n: 0.5 + torch.rand(outer.std[n].shape, generator=g) for n in b.names})
    x = mixed_batch(n=7, seed=6)
    both = compose(outer, inner).transform(x)
    step = inner.transform(outer.transform(x))
    for n in x.names:
        assert torch.allclose(both.modalities[n], step.modalities[n], rtol=1e-5, atol=1e-5), n
    # the inverse of the composition undoes both
    back = compose(outer, inner).inverse(both)
    for n in x.names:
        assert torch.allclose(back.modalities[n], x.modalities[n], rtol=1e-5, atol=1e-4), n


# ============================================================================ AdaBN
def predictor(norm: str = "batch", classes: int = 3, seed: int = 0) -> tuple[MultimodalPredictor, MultimodalBatch]:
    """A random multimodal predictor over a vector (4,) and an image (2 x 8 x 8) modality."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    batch = MultimodalBatch.from_arrays({"v": torch.randn(48, 4, generator=g) * 2 + 1,
                                         "img": torch.randn(48, 2, 8, 8, generator=g) + 3})
    cfg = DownstreamConfig(norm=norm, hidden=16, code=8, image_channels=[4, 8])
    net = MultimodalPredictor(batch.specs, classes, cfg).eval()
    return net, batch


def forward_of(batch: MultimodalBatch):
    return lambda model: model(dict(batch.modalities))


def test_adabn_running_stats_are_the_window_statistics_of_each_bn_input() -> None:
    net, batch = predictor()
    # give the original non-default running statistics, to see that they are replaced
    with torch.no_grad():
        net.train()
        net(dict(predictor(seed=9)[1].modalities))
        net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapted = copy_for_adaptation(net)
    layers = norm_layers(adapted)
    assert len(layers) == 3  # one BN1d (vector encoder), two BN2d (image encoder)
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].detach().clone()))
             for i, m in enumerate(layers)]
    adabn(adapted, forward_of(batch))
    for h in hooks:
        h.remove()
    for i, m in enumerate(layers):
        x = seen[i].double()
        dims = (0,) if x.ndim == 2 else (0, 2, 3)
        count = x.numel() // x.shape[1]
        mean = x.mean(dims)
        var = ((x - mean.reshape(1, -1, *([1] * (x.ndim - 2)))) ** 2).sum(dims) / (count - 1)  # unbiased
        assert torch.allclose(m.running_mean.double(), mean, atol=1e-5), i
        assert torch.allclose(m.running_var.double(), var, rtol=1e-4, atol=1e-5), i
        assert m.momentum == 0.1 and not m.training  # settings restored
    # weights untouched, the original model untouched
    for k, v in adapted.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not net.training


def test_adabn_restores_layer_settings_when_the_forward_fails() -> None:
    net, _ = predictor()
    adapted = copy_for_adaptation(net)

    def broken(model: nn.Module) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        adabn(adapted, broken)
    assert all(m.momentum == 0.1 and not m.training for m in norm_layers(adapted))


def test_models_without_batch_norm_are_refused() -> None:
    plain, _ = predictor(norm="none")
    for model in (plain, nn.Sequential(nn.Linear(3, 2))):
        with pytest.raises(SpecError) as info:
            require_norm_layers(model, "the model")
        one_line(info.value, "batch-normalisation")
        with pytest.raises(SpecError):
            adabn(copy_for_adaptation(model), lambda m: m(torch.zeros(2, 3)))
        with pytest.raises(SpecError):
            Tent(copy_for_adaptation(model))
    with pytest.raises(SpecError):  # BN without affine parameters: nothing for TENT to adapt
        Tent(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2)))


# ============================================================================ TENT
def test_entropy_values() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.5, -1.0]])
    h = entropy(logits)
    p = torch.softmax(logits[2].double(), 0)
    assert h.shape == (3,)
    assert abs(float(h[0]) - float(np.log(4))) < 1e-6
    assert abs(float(h[1])) < 1e-6
    assert abs(float(h[2]) - float(-(p * p.log()).sum())) < 1e-6


def test_tent_lowers_entropy_and_changes_only_bn_affine_parameters() -> None:
    net, batch = predictor(classes=4)
    original = {k: v.clone() for k, v in net.state_dict().items()}
    tent = Tent(copy_for_adaptation(net), lr=1e-2, steps=1)
    fwd = forward_of(batch)
    with torch.no_grad():
        start = float(entropy(fwd(tent.model)).mean())
    params0 = {k: v.detach().clone() for k, v in tent.model.named_parameters()}
    history = [start]
    for _ in range(8):
        logits = tent.step(fwd)
        assert logits.shape == (len(batch), 4)
        history.append(float(entropy(logits).mean()))
    assert history[-1] < start - 1e-3, history
    bn_params = {f"{name}.{p}" for name, m in tent.model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")}
    assert len(bn_params) == 6
    for k, v in tent.model.named_parameters():
        if k in bn_params:
            assert not torch.equal(v, params0[k]), k  # adapted
        else:
            assert torch.equal(v, params0[k]), k  # frozen
    for k, v in net.state_dict().items():  # the saved model is untouched
        assert torch.equal(v, original[k]), k
