"""Temporal faults act along time: drift grows with t, stuck-at hold and frozen frames repeat
the first selected value (time series: along T; vector/image: along meta t within an episode)."""

from __future__ import annotations

import torch
from faults_testutil import make_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmguard.faults import apply_faults, corrupt, plan_selection, single_fault_spec
from mmguard.faults.temporal import first_in_episode

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _reference_first(t: torch.Tensor, ep: torch.Tensor) -> torch.Tensor:
    """Loop reference: position of the earliest (t, then position) element of the same episode."""
    out = torch.empty(len(t), dtype=torch.long)
    for i in range(len(t)):
        same = [j for j in range(len(t)) if ep[j] == ep[i]]
        out[i] = min(same, key=lambda j: (float(t[j]), j))
    return out


@SETTINGS
@given(data=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), max_size=25))
def test_first_in_episode_matches_reference(data):
    ep = torch.tensor([d[0] for d in data], dtype=torch.long)
    t = torch.tensor([d[1] for d in data], dtype=torch.long)
    assert torch.equal(first_in_episode(t, ep), _reference_first(t, ep))


def test_timeseries_drift_is_a_ramp_along_t():
    x = torch.randn(5, 20, 3)
    y = corrupt(x, "drift", {"slope": 0.1, "onset": 4})
    ramp = (torch.arange(20, dtype=torch.float32) - 4).clamp_min(0) * 0.1
    assert torch.allclose(y - x, ramp[None, :, None].expand_as(x), atol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 1000), rate=st.floats(0.2, 1.0), slope=st.floats(0.01, 1.0))
def test_vector_drift_grows_with_meta_t_within_episode(seed, rate, slope):
    batch = make_batch(30, seed)
    spec = single_fault_spec("vec", "drift", {"slope": slope}, rate=rate)
    out = apply_faults(batch, spec, seed=seed)
    (sel,) = plan_selection(spec, 30, seed)
    delta = (out.modalities["vec"] - batch.modalities["vec"])[sel]
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-5)  # same offset on every feature
    t, ep = batch.meta["t"][sel], batch.meta["episode"][sel]
    first = _reference_first(t, ep)
    expected = slope * (t - t[first]).float()
    assert torch.allclose(delta[:, 0], expected, atol=1e-4)
    for e in ep.unique():  # within an episode the drift is non-decreasing in t
        idx = (ep == e).nonzero().flatten()
        order = idx[torch.argsort(t[idx])]
        assert (delta[order, 0].diff() >= -1e-5).all()


def test_timeseries_stuck_hold_equals_value_at_onset():
    x = torch.randn(6, 12, 2)
    y = corrupt(x, "stuck_at", {"mode": "hold", "onset": 5})
    assert torch.equal(y[:, :5], x[:, :5])
    assert torch.equal(y[:, 5:], x[:, 5:6].expand(6, 7, 2))
    late = corrupt(x, "stuck_at", {"mode": "hold", "onset": 99})  # clamped to T-1
    assert torch.equal(late, x)
    const = corrupt(x, "stuck_at", {"value": 2.5, "onset": 3})
    assert torch.equal(const[:, :3], x[:, :3]) and (const[:, 3:] == 2.5).all()


@SETTINGS
@given(seed=st.integers(0, 1000), rate=st.floats(0.1, 1.0), kind=st.sampled_from(["vec", "img"]),
       fault=st.sampled_from(["stuck_hold", "frozen_frame"]), with_meta=st.booleans())
def test_hold_and_frozen_repeat_first_selected_sample_of_episode(seed, rate, kind, fault, with_meta):
    if fault == "frozen_frame" and kind == "vec":
        kind = "img"
    batch = make_batch(25, seed, with_meta=with_meta)
    spec = (single_fault_spec(kind, "stuck_at", {"mode": "hold"}, rate=rate) if fault == "stuck_hold"
            else single_fault_spec(kind, "frozen_frame", rate=rate))
    out = apply_faults(batch, spec, seed=seed)
    (sel,) = plan_selection(spec, 25, seed)
    if with_meta:
        t, ep = batch.meta["t"][sel], batch.meta["episode"][sel]
    else:  # no meta: one episode, the batch index is the time
        t, ep = sel, torch.zeros_like(sel)
    src = sel[_reference_first(t, ep)]
    assert torch.equal(out.modalities[kind][sel], batch.modalities[kind][src])


def test_frozen_frame_without_meta_holds_first_selected_frame():
    batch = make_batch(10, with_meta=False)
    out = apply_faults(batch, single_fault_spec("img", "frozen_frame", rate=0.5), seed=4)
    sel = out.fault_mask[:, out.index_of("img")].nonzero().flatten()
    assert torch.equal(out.modalities["img"][sel], batch.modalities["img"][sel[:1]].expand(len(sel), 3, 6, 7))
