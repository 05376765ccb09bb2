"""slow_drift: a gain and an offset that grow with the rank of the sample's episode (drift age)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from faults_testutil import make_batch

from mmguard.data.model import MultimodalBatch
from mmguard.errors import SpecError
from mmguard.faults import apply_faults, corrupt, get_fault, parse_spec, plan_selection, spec_from_dict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "faults.md"
MODALITY = {"gain_rate": 0.05, "offset_rate": -0.1, "per": "modality"}
SHAPES = {"vector": (5, 64), "timeseries": (5, 6, 64), "image": (5, 64, 3, 3)}


def _reference_rank(labels: torch.Tensor) -> torch.Tensor:
    """Loop reference: rank of each label among the distinct labels, ascending."""
    distinct = sorted(set(labels.tolist()))
    return torch.tensor([distinct.index(v) for v in labels.tolist()], dtype=torch.long)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _channels(v: torch.Tensor, kind: str) -> torch.Tensor:
    """One sample's per-element values → one value per channel, checking they are constant
    along the non-channel axes (T for a time series, H and W for an image)."""
    if kind == "timeseries":
        assert torch.equal(v, v[:1].expand_as(v))
        return v[0]
    if kind == "image":
        assert torch.equal(v, v[:, :1, :1].expand_as(v))
        return v[:, 0, 0]
    return v


def _channel_rates(kind: str, params: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gain rate, offset rate) of every channel, read back from zeros and ones at episodes 0..4."""
    shape = SHAPES[kind]
    episode = torch.arange(shape[0])
    y0 = corrupt(torch.zeros(shape, dtype=torch.float64), "slow_drift", params, seed=seed, episode=episode)
    y1 = corrupt(torch.ones(shape, dtype=torch.float64), "slow_drift", params, seed=seed, episode=episode)
    assert torch.equal(y0[0], torch.zeros_like(y0[0])) and torch.equal(y1[0], torch.ones_like(y1[0]))
    k = _per_sample(episode.double(), y0)
    gain, off = (y1 - y0 - 1.0)[1:] / k[1:], y0[1:] / k[1:]
    # linear in the drift age: the same rates at every age
    torch.testing.assert_close(gain, gain[:1].expand_as(gain), rtol=0, atol=1e-12)
    torch.testing.assert_close(off, off[:1].expand_as(off), rtol=0, atol=1e-12)
    return _channels(gain[0], kind), _channels(off[0], kind)


def test_registered_as_temporal_with_gain_rate_severity():
    f = get_fault("slow_drift")
    assert f.severity == "gain_rate" and f.severity_direction == "increasing" and f.temporal
    assert {k.value for k in f.kinds} == {"vector", "timeseries", "image"}
    assert f.normalize_params(None) == {"gain_rate": 0.02, "offset_rate": 0.02, "per": "channel"}


@pytest.mark.parametrize("shape", [(12, 4), (12, 5, 3), (12, 2, 4, 4)])
def test_per_modality_is_zero_in_earliest_episode_and_linear_in_rank(shape):
    episode = torch.tensor([40, 7, 7, 13, 40, 99, 13, 7, 99, 40, 13, 7])
    k = torch.tensor([2, 0, 0, 1, 2, 3, 1, 0, 3, 2, 1, 0])
    assert torch.equal(_reference_rank(episode), k)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    y = corrupt(x, "slow_drift", MODALITY, episode=episode)
    assert torch.equal(y[k == 0], x[k == 0])  # the earliest episode does not drift
    assert not torch.equal(y[k > 0], x[k > 0])
    kb = _per_sample(k.double(), x)
    expected = x.double() * (1.0 + 0.05 * kb) - 0.1 * kb
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-6)
    # exactly the nominal rates, no random draw: the seed does not matter
    assert torch.equal(corrupt(x, "slow_drift", MODALITY, seed=5, episode=episode), y)


def test_rank_counts_only_the_selected_episodes():
    batch = make_batch(60, seed=4, episodes=12)
    spec = {"faults": [{"modality": "vec", "type": "slow_drift", "params": MODALITY, "rate": 0.3}]}
    out = apply_faults(batch, spec, seed=2)
    (sel,) = plan_selection(spec_from_dict(spec), 60, 2)
    ep = batch.meta["episode"][sel]
    k = _reference_rank(ep)
    assert len(set(ep.tolist())) < 12  # some episodes have no selected sample: ranks skip them
    x = batch.modalities["vec"][sel]
    kb = _per_sample(k.double(), x)
    torch.testing.assert_close(out.modalities["vec"][sel].double(), x.double() * (1 + 0.05 * kb) - 0.1 * kb,
                               rtol=0, atol=1e-6)
    assert torch.equal(out.modalities["vec"][sel][k == 0], x[k == 0])


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_per_channel_rates_differ_within_half_to_one_and_a_half_times_nominal(kind):
    gain, off = _channel_rates(kind, {"gain_rate": 0.04, "offset_rate": 0.1}, seed=3)
    assert gain.shape == off.shape == (64,)
    assert ((gain >= 0.04 * 0.5 - 1e-12) & (gain <= 0.04 * 1.5 + 1e-12)).all()
    assert ((off.abs() >= 0.1 * 0.5 - 1e-12) & (off.abs() <= 0.1 * 1.5 + 1e-12)).all()
    assert gain.unique().numel() == 64 and off.abs().unique().numel() == 64
    assert (off > 0).any() and (off < 0).any()  # random offset signs
    assert gain.std() > 0.004 and off.abs().std() > 0.01  # spread over the range, not clustered
    # per="modality" on the same data: every channel exactly at the nominal rates
    g_m, o_m = _channel_rates(kind, {"gain_rate": 0.04, "offset_rate": 0.1, "per": "modality"}, seed=3)
    torch.testing.assert_close(g_m, torch.full((64,), 0.04, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(o_m, torch.full((64,), 0.1, dtype=torch.float64), rtol=0, atol=1e-12)


def test_same_seed_bit_identical_and_different_seed_different_rates():
    batch = make_batch(50, seed=1)
    spec = {"faults": [{"modality": m, "type": "slow_drift", "params": {"gain_rate": 0.1}, "rate": 0.8}
                       for m in ("vec", "ts", "img")]}
    a, b = apply_faults(batch, spec, seed=7), apply_faults(batch, spec, seed=7)
    for m in ("vec", "ts", "img"):
        assert torch.equal(a.modalities[m], b.modalities[m])
    assert torch.equal(a.fault_mask, b.fault_mask)
    for kind in SHAPES:
        g1, o1 = _channel_rates(kind, {"gain_rate": 0.1}, seed=1)
        g1b, o1b = _channel_rates(kind, {"gain_rate": 0.1}, seed=1)
        g2, o2 = _channel_rates(kind, {"gain_rate": 0.1}, seed=2)
        assert torch.equal(g1, g1b) and torch.equal(o1, o1b)
        assert not torch.allclose(g1, g2) and not torch.allclose(o1, o2)


def _common_cause_batch(n: int = 30) -> MultimodalBatch:
    """Every sample holds 0 and 1 in each modality, so its gain and offset can be read back."""
    g = torch.Generator().manual_seed(3)
    zero_one = torch.tensor([0.0, 1.0])
    return MultimodalBatch.from_arrays(
        {"vec": zero_one.expand(n, 2).clone(),
         "ts": zero_one.expand(n, 4, 2).clone(),
         "img": zero_one.reshape(1, 2, 1, 1).expand(n, 2, 3, 3).clone()},
        meta={"episode": torch.randint(0, 6, (n,), generator=g), "t": torch.arange(n)})


def _gain_offset(out: MultimodalBatch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-sample (gain, offset) of every modality of a :func:`_common_cause_batch`."""
    y = {"vec": out.modalities["vec"], "ts": out.modalities["ts"][:, 0], "img": out.modalities["img"][:, :, 0, 0]}
    return {m: (v[:, 1] - v[:, 0], v[:, 0]) for m, v in y.items()}


def test_common_cause_group_per_modality_drifts_every_modality_identically():
    batch = _common_cause_batch()
    params = {"gain_rate": 0.05, "offset_rate": 0.1, "per": "modality"}
    spec = {"scenario": {"name": "temperature"},
            "faults": [{"modality": m, "type": "slow_drift", "params": params, "rate": 0.6, "group": "heat"}
                       for m in ("vec", "ts", "img")]}
    out = apply_faults(batch, spec, seed=5)
    sel = plan_selection(spec_from_dict(spec), len(batch), 5)
    assert all(torch.equal(s, sel[0]) for s in sel)  # a group hits the same samples
    go = _gain_offset(out)
    for m in ("ts", "img"):  # bit-identical relative change in every modality
        assert torch.equal(go[m][0], go["vec"][0]) and torch.equal(go[m][1], go["vec"][1])
    k = _reference_rank(batch.meta["episode"][sel[0]]).float()
    assert k.max() >= 2
    torch.testing.assert_close(go["vec"][0][sel[0]], 1 + 0.05 * k, rtol=0, atol=1e-6)
    torch.testing.assert_close(go["vec"][1][sel[0]], 0.1 * k, rtol=0, atol=1e-6)
    # per="channel" in the same group: each entry draws its own channel rates
    for e in spec["faults"]:
        e["params"] = {**params, "per": "channel"}
    go_c = _gain_offset(apply_faults(batch, spec, seed=5))
    assert not torch.allclose(go_c["ts"][0], go_c["vec"][0])


def test_unselected_samples_untouched_and_mask_is_the_selection():
    batch = make_batch(50, seed=2, episodes=5)
    spec = spec_from_dict({"faults": [
        {"modality": m, "type": "slow_drift", "params": {"gain_rate": 0.3, "offset_rate": 0.5}, "rate": 0.4}
        for m in ("vec", "ts", "img")]})
    out = apply_faults(batch, spec, seed=9)
    for i, (m, sel) in enumerate(zip(("vec", "ts", "img"), plan_selection(spec, 50, 9), strict=True)):
        hit = torch.zeros(50, dtype=torch.bool)
        hit[sel] = True
        assert torch.equal(out.fault_mask[:, i], hit)
        assert torch.equal(out.modalities[m][~hit], batch.modalities[m][~hit])
        changed = (out.modalities[m] != batch.modalities[m]).flatten(1).any(dim=1)
        assert changed[hit].sum() > 0 and not changed[~hit].any()
    assert out.fault_vocab == ("slow_drift",)


def test_apply_through_json_and_the_docs_yaml_example():
    batch = make_batch(40, seed=6, episodes=4)
    doc = {"scenario": {"name": "drift", "seed": 3},
           "faults": [{"modality": "ts", "type": "slow_drift", "params": {"gain_rate": 0.1, "per": "modality"}}]}
    from_json = apply_faults(batch, parse_spec(json.dumps(doc), "json"))
    from_dict = apply_faults(batch, doc)
    assert torch.equal(from_json.modalities["ts"], from_dict.modalities["ts"])
    assert from_json.fault_mask[:, 1].all()
    k = _per_sample(_reference_rank(batch.meta["episode"]).double(), batch.modalities["ts"])
    torch.testing.assert_close(from_json.modalities["ts"].double(),
                               batch.modalities["ts"].double() * (1 + 0.1 * k) + 0.02 * k, rtol=0, atol=1e-6)

    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
              if "slow_drift" in b]
    assert blocks, "docs/faults.md has no slow_drift YAML example"
    spec = parse_spec(blocks[0])
    assert {e.type for e in spec.faults} == {"slow_drift"}
    g = torch.Generator().manual_seed(0)
    n = 24
    twin = MultimodalBatch.from_arrays(
        {"camera": torch.rand(n, 3, 8, 8, generator=g), "joints": torch.randn(n, 10, 6, generator=g),
         "gas": torch.randn(n, 16, generator=g)},
        meta={"episode": torch.arange(n) // 4, "t": torch.arange(n) % 4})
    out = apply_faults(twin, spec)
    assert out.fault_mask.any(dim=0).all()
    assert all(not torch.equal(out.modalities[m], twin.modalities[m]) for m in twin.names)


@pytest.mark.parametrize("params, needles", [
    ({"per": "sensor"}, ["per", "'sensor'"]),
    ({"gain_rate": "fast"}, ["gain_rate", "'fast'"]),
    ({"offset_rate": float("nan")}, ["offset_rate", "nan"]),
    ({"gain_rate": float("inf")}, ["gain_rate", "inf"]),
    ({"rate_gain": 0.1}, ["unknown param", "'rate_gain'"]),
])
def test_bad_params_give_one_line_errors(params, needles):
    doc = {"faults": [{"modality": "vec", "type": "slow_drift", "params": params}]}
    for call in (lambda: spec_from_dict(doc), lambda: corrupt(torch.zeros(3, 2), "slow_drift", params)):
        with pytest.raises(SpecError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and "'slow_drift'" in msg
        for needle in needles:
            assert needle in msg, (needle, msg)


def test_without_episode_meta_every_sample_is_its_own_episode_in_time_order():
    x = torch.randn(4, 3)
    params = {"gain_rate": 0.0, "offset_rate": 1.0, "per": "modality"}
    by_index = corrupt(x, "slow_drift", params)
    torch.testing.assert_close(by_index - x, torch.arange(4.0)[:, None].expand(4, 3), rtol=0, atol=1e-6)
    by_t = corrupt(x, "slow_drift", params, t=torch.tensor([30, 10, 20, 10]))
    torch.testing.assert_close(by_t - x, torch.tensor([2.0, 0.0, 1.0, 0.0])[:, None].expand(4, 3),
                               rtol=0, atol=1e-6)
    one_episode = corrupt(x, "slow_drift", params, t=torch.arange(4), episode=torch.zeros(4, dtype=torch.long))
    assert torch.equal(one_episode, x)
    assert corrupt(torch.zeros(0, 3), "slow_drift").shape == (0, 3)


def test_vectorized_100k_samples():
    n = 100_000
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    episode = torch.randperm(n, generator=torch.Generator().manual_seed(1))  # every sample its own episode
    corrupt(x[:10], "slow_drift", episode=episode[:10])  # warm-up
    start = time.perf_counter()
    y = corrupt(x, "slow_drift", {"gain_rate": 1e-5, "offset_rate": 1e-5}, episode=episode)
    assert time.perf_counter() - start < 2.0
    assert y.shape == x.shape and torch.isfinite(y).all()
    first, last = int(episode.argmin()), int(episode.argmax())
    assert torch.equal(y[first], x[first]) and not torch.equal(y[last], x[last])
