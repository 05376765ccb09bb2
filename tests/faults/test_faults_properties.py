"""Property-based invariants of apply_faults for every fault type and kind."""

from __future__ import annotations

import torch
from faults_testutil import KIND_TO_MODALITY, make_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmguard.faults import (
    apply_faults,
    exact_count,
    fault_names,
    get_fault,
    plan_selection,
    single_fault_spec,
)

FAULT_KIND = [(name, kind.value) for name in fault_names() for kind in sorted(get_fault(name).kinds)]
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _rows_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) == b.flatten(1)).all(dim=1)


@SETTINGS
@given(
    fk=st.sampled_from(FAULT_KIND),
    n=st.integers(0, 30),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    with_meta=st.booleans(),
)
def test_apply_invariants(fk, n, rate, seed, with_meta):
    name, kind = fk
    batch = make_batch(n, seed % 1000, with_meta=with_meta, image_channels=1 + seed % 3)
    before = {k: v.clone() for k, v in batch.modalities.items()}
    mod = KIND_TO_MODALITY[kind]
    spec = single_fault_spec(mod, name, rate=rate)
    out = apply_faults(batch, spec, seed=seed)

    # the input batch is untouched
    for k, v in batch.modalities.items():
        assert torch.equal(v, before[k])
    assert batch.fault_mask is None

    m = out.index_of(mod)
    (selected,) = plan_selection(spec, n, seed)
    expected = torch.zeros(n, dtype=torch.bool)
    expected[selected] = True
    assert selected.numel() == exact_count(rate, n)
    assert torch.equal(out.fault_mask[:, m], expected)
    assert not out.fault_mask[:, [i for i in range(3) if i != m]].any()
    assert torch.equal(out.fault_codes >= 0, out.fault_mask)
    assert out.fault_vocab == (name,)
    if selected.numel():
        assert out.fault_type_of(int(selected[0]), mod) == name

    # unselected samples bit-identical, other modalities untouched
    assert _rows_equal(out.modalities[mod], batch.modalities[mod])[~expected].all()
    for other in out.names:
        if other != mod:
            assert torch.equal(out.modalities[other], batch.modalities[other])
    # shapes/dtypes preserved, no NaN without fill: nan
    assert out.modalities[mod].shape == batch.modalities[mod].shape
    assert out.modalities[mod].dtype == batch.modalities[mod].dtype
    assert torch.isfinite(out.modalities[mod]).all()

    # same seed → bit-identical output
    again = apply_faults(batch, spec, seed=seed)
    assert torch.equal(again.modalities[mod], out.modalities[mod])
    assert torch.equal(again.fault_codes, out.fault_codes)


@SETTINGS
@given(n=st.integers(50, 200), rate=st.floats(0.1, 0.9), seed=st.integers(0, 2**40))
def test_different_seed_different_selection(n, rate, seed):
    spec = single_fault_spec("vec", "offset", rate=rate)
    (a,) = plan_selection(spec, n, seed)
    (b,) = plan_selection(spec, n, seed + 1)
    assert a.numel() == b.numel() == exact_count(rate, n)
    assert not torch.equal(a, b)


def test_different_seed_different_noise():
    batch = make_batch(20)
    spec = single_fault_spec("vec", "gaussian_noise", rate=1.0)
    a = apply_faults(batch, spec, seed=1).modalities["vec"]
    b = apply_faults(batch, spec, seed=2).modalities["vec"]
    assert not torch.equal(a, b)


@SETTINGS
@given(n=st.integers(0, 60), seed=st.integers(0, 10_000), fill=st.sampled_from(["zero", "nan", 3.5]),
       fraction=st.floats(0.05, 1.0))
def test_missing_nan_only_when_requested(n, seed, fill, fraction):
    batch = make_batch(n, seed)
    out = apply_faults(batch, single_fault_spec("ts", "missing", {"fill": fill, "fraction": fraction},
                                                rate=0.5), seed=seed)
    x = out.modalities["ts"]
    nan_rows = torch.isnan(x).flatten(1).any(dim=1)
    if fill == "nan":
        assert torch.equal(nan_rows & ~out.fault_mask[:, 1], torch.zeros(n, dtype=torch.bool))
        if fraction == 1.0:
            assert torch.equal(nan_rows, out.fault_mask[:, 1])
    else:
        assert not nan_rows.any()


def test_missing_whole_modality_and_timestep_units():
    batch = make_batch(30)
    out = apply_faults(batch, single_fault_spec("ts", "dropout", rate=1.0), seed=0)  # alias of missing
    assert out.fault_vocab == ("missing",)
    assert (out.modalities["ts"] == 0).all()
    part = apply_faults(batch, single_fault_spec("ts", "missing", {"fraction": 0.5}), seed=0).modalities["ts"]
    zero_steps = (part == 0).all(dim=2)
    assert torch.equal(zero_steps, (part == 0).any(dim=2))  # a lost time step loses all its channels
    assert 0.3 < zero_steps.float().mean() < 0.7


@SETTINGS
@given(n=st.integers(0, 80), seed=st.integers(0, 10_000), prior_rate=st.floats(0, 1), rate=st.floats(0, 1))
def test_merge_with_existing_mask(n, seed, prior_rate, rate):
    batch = make_batch(n, seed)
    first = apply_faults(batch, single_fault_spec("img", "blur", rate=prior_rate), seed=seed)
    second = apply_faults(first, single_fault_spec("img", "occlusion", rate=rate), seed=seed + 7)
    assert second.fault_vocab == ("blur", "occlusion")
    m = second.index_of("img")
    (hit,) = plan_selection(single_fault_spec("img", "occlusion", rate=rate), n, seed + 7)
    hit_mask = torch.zeros(n, dtype=torch.bool)
    hit_mask[hit] = True
    assert torch.equal(second.fault_mask[:, m], first.fault_mask[:, m] | hit_mask)
    assert (second.fault_codes[hit_mask, m] == 1).all()
    keep = first.fault_mask[:, m] & ~hit_mask
    assert (second.fault_codes[keep, m] == 0).all()
    assert torch.equal(second.fault_codes >= 0, second.fault_mask)
