"""Builders: thesis schedule (exact 50/25/25), common-cause groups, per-modality rates, sweeps."""

from __future__ import annotations

import pytest
import torch
from faults_testutil import make_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmguard.errors import SpecError
from mmguard.faults import (
    apply_faults,
    common_cause,
    exact_count,
    per_modality_rates,
    plan_selection,
    severity_sweep,
    single_fault_spec,
    thesis_schedule,
)

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)


def test_thesis_schedule_exact_counts_on_1000():
    batch = make_batch(1000)
    out = apply_faults(batch, thesis_schedule("vec", "ts"), seed=0)
    mask = out.fault_mask
    assert int(mask[:, 0].sum()) == 250 and int(mask[:, 1].sum()) == 250
    assert not (mask[:, 0] & mask[:, 1]).any()
    assert int((~mask.any(dim=1)).sum()) == 500
    assert not mask[:, 2].any()
    assert out.fault_vocab == ("gaussian_noise",)
    spec = thesis_schedule("vec", "ts")
    assert spec.faults[0].params["sigma"] == 0.5 and spec.scenario.selection == "exclusive"


@SETTINGS
@given(n=st.integers(0, 500), seed=st.integers(0, 10**6))
def test_thesis_schedule_partitions_any_n(n, seed):
    a, b = plan_selection(thesis_schedule("vec", "ts"), n, seed)
    assert a.numel() == exact_count(0.25, n)
    assert a.numel() + b.numel() == exact_count(0.5, n)
    assert abs(b.numel() - 0.25 * n) <= 1
    assert not set(a.tolist()) & set(b.tolist())


@SETTINGS
@given(n=st.integers(0, 200), seed=st.integers(0, 10**6), rate=st.floats(0, 1),
       selection=st.sampled_from(["independent", "exclusive"]))
def test_common_cause_hits_the_same_samples(n, seed, rate, selection):
    batch = make_batch(n, seed % 50)
    spec = common_cause(["vec", "ts"], "gaussian_noise", {"sigma": 1.0}, rate=rate, selection=selection)
    out = apply_faults(batch, spec, seed=seed)
    assert torch.equal(out.fault_mask[:, 0], out.fault_mask[:, 1])
    assert int(out.fault_mask[:, 0].sum()) == exact_count(rate, n)


def test_common_cause_mixed_types_and_independent_noise():
    batch = make_batch(200)
    spec = common_cause({"img": ("blur", {"sigma": 1.5}), "vec": ("drift", {"slope": 0.1})}, rate=0.3,
                        group="heat")
    out = apply_faults(batch, spec, seed=3)
    assert torch.equal(out.fault_mask[:, out.index_of("img")], out.fault_mask[:, out.index_of("vec")])
    assert set(out.fault_vocab) == {"blur", "drift"}
    with pytest.raises(SpecError):
        common_cause([], rate=0.2)


def test_group_and_ungrouped_entries_mix_in_exclusive_mode():
    doc = {"scenario": {"selection": "exclusive"},
           "faults": [{"modality": "vec", "type": "offset", "rate": 0.2, "group": "g"},
                      {"modality": "ts", "type": "offset", "rate": 0.2, "group": "g"},
                      {"modality": "img", "type": "blur", "rate": 0.3}]}
    g1, g2, solo = plan_selection(doc, 100, 0)
    assert torch.equal(g1, g2) and g1.numel() == 20 and solo.numel() == 30
    assert not set(g1.tolist()) & set(solo.tolist())


def test_independent_entries_use_independent_streams():
    spec = per_modality_rates({"vec": 0.5, "ts": 0.5, "img": 0.5}, "offset")
    a, b, c = plan_selection(spec, 400, 0)
    assert a.numel() == b.numel() == c.numel() == 200
    overlap = len(set(a.tolist()) & set(b.tolist()))
    assert 60 < overlap < 140  # about 100 if independent


def test_composition_in_list_order_code_records_last():
    batch = make_batch(50)
    doc = {"faults": [{"modality": "vec", "type": "offset", "params": {"value": 1.0}},
                      {"modality": "vec", "type": "gain", "params": {"factor": 3.0}}]}
    out = apply_faults(batch, doc, seed=0)
    assert torch.allclose(out.modalities["vec"], (batch.modalities["vec"] + 1.0) * 3.0)
    assert out.fault_vocab == ("offset", "gain")
    assert (out.fault_codes[:, 0] == 1).all()


def test_single_fault_and_sweep_errors():
    spec = single_fault_spec("img", "occlusion", {"size": 3}, rate=0.4)
    assert spec.faults[0].params == {"size": 3, "count": 1, "fill": 0.0}
    sweep = severity_sweep(spec, [1, 2, 4])
    assert [s.faults[0].params["size"] for s in sweep] == [1, 2, 4]
    with pytest.raises(SpecError, match="no fault in the spec has a severity"):
        severity_sweep(single_fault_spec("img", "frozen_frame"), [1.0])
    with pytest.raises(SpecError, match="size"):
        severity_sweep(spec, [0])
    with pytest.raises(SpecError, match="out of range"):
        severity_sweep(spec, [1], entries=[3])
    with pytest.raises(SpecError, match="at least one value"):
        severity_sweep(spec, [])
    mixed = severity_sweep({"faults": [{"modality": "img", "type": "frozen_frame", "rate": 0.5},
                                       {"modality": "vec", "type": "offset", "rate": 0.5}]}, [2.0])
    assert mixed[0].faults[1].params["value"] == 2.0 and mixed[0].faults[0].params == {}
    with pytest.raises(SpecError, match="non-empty"):
        per_modality_rates({})


def test_scenario_seed_is_the_default():
    batch = make_batch(100)
    doc = {"scenario": {"seed": 9}, "faults": [{"modality": "vec", "type": "offset", "rate": 0.3}]}
    assert torch.equal(apply_faults(batch, doc).fault_mask, apply_faults(batch, doc, seed=9).fault_mask)
    assert not torch.equal(apply_faults(batch, doc).fault_mask, apply_faults(batch, doc, seed=0).fault_mask)
