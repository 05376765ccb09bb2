"""Fault scenarios (trained mix, trained/unseen families, severity sweeps) on every modality kind."""

from __future__ import annotations

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import TRAINED, UNSEEN, family_specs, sweep_specs, training_spec


def _batch(n: int = 60) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    return MultimodalBatch.from_arrays(
        {"vec": torch.randn(n, 3, generator=g), "ts": torch.randn(n, 8, 2, generator=g),
         "img": torch.rand(n, 1, 32, 32, generator=g)},
        target=torch.randint(0, 2, (n,), generator=g),
    )


def test_time_series_get_the_vector_families() -> None:
    batch = _batch()
    fams = family_specs(batch)
    for table, origin in ((TRAINED, "trained"), (UNSEEN, "unseen")):
        for t, _ in table["vector"]:
            assert fams[f"ts:{t}"][0] == origin and fams[f"vec:{t}"][0] == origin
        for t, _ in table["image"]:
            assert f"img:{t}" in fams
    vector_types = {t for table in (TRAINED, UNSEEN) for t, _ in table["vector"]}
    assert {k.split(":", 1)[1] for k in fams if k.startswith("ts:")} == vector_types
    sweeps = sweep_specs(batch)
    ts_sweeps = {k for k in sweeps if k.startswith("ts:")}
    assert ts_sweeps == {k.replace("vec:", "ts:") for k in sweeps if k.startswith("vec:")}


def test_every_scenario_applies_to_time_series() -> None:
    batch = _batch()
    specs = [training_spec(batch)] + [s for _, s in family_specs(batch).values()]
    specs += [s for rows in sweep_specs(batch).values() for _, s in rows]
    for spec in specs:
        out = apply_faults(batch, spec, seed=3)
        for n in batch.names:
            assert out.modalities[n].shape == batch.modalities[n].shape
            assert bool(torch.isfinite(out.modalities[n]).all())
    # every time-series family hitting every sample changes the series
    for label, (_, spec) in family_specs(batch).items():
        if label.startswith("ts:"):
            out = apply_faults(batch, spec, seed=3)
            assert not torch.equal(out.modalities["ts"], batch.modalities["ts"]), label
            assert torch.equal(out.modalities["vec"], batch.modalities["vec"]), label
