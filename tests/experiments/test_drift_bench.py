"""`mmguard bench --adapt`: a drifting dataset with known ground truth (later groups get a large
per-feature gain and offset) is detected, statistics adaptation recovers most of the loss, the
in-distribution part is untouched by the gated adaptation, the dev-selected option is reported,
and a rerun resumes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from mmguard.data.splits import make_splits
from mmguard.data.synthetic import make_shared_latent
from mmguard.experiments.drift_eval import DriftSettings, build_streams
from mmguard.experiments.harness import BenchConfig, run_bench


def drifting_groups(n_per_group: int = 400) -> object:
    """Groups 0,1 in distribution; group 2 mildly and group 3 strongly drifted (gain and offset per feature)."""
    from mmguard.data.model import concat_batches

    parts = []
    for g in range(4):
        b = make_shared_latent(n_per_group, (4, 4, 3), num_classes=3, redundancy=0.8, noise=0.05, seed=g)
        shift = {0: 0.0, 1: 0.0, 2: 1.0, 3: 3.0}[g]
        gen = torch.Generator().manual_seed(100 + g)
        mods = {k: v * torch.exp(0.3 * shift * torch.randn(v.shape[1], generator=gen))
                + shift * torch.randn(v.shape[1], generator=gen) * v.std(0)
                for k, v in b.modalities.items()}
        b = b.with_modalities(mods)
        parts.append(replace(b, meta={"batch": torch.full((len(b),), float(g))}))
    return concat_batches(parts)


def _cfg(**drift) -> BenchConfig:
    settings = {"adapt": ["none", "stats", "adabn", "tent"], "group_key": "batch", "id_groups": [0, 1],
                "dev_groups": [2], "id_streams": 20, **drift}
    return BenchConfig(guards=["dae"], seeds=[0, 1], families=False, severity_sweep=False, downstream=["target"],
                       quick=True, drift=DriftSettings(**settings))


def test_drift_is_detected_and_adaptation_recovers(tmp_path: Path) -> None:
    splits = make_splits(drifting_groups(), split_by="batch", train_groups=[0, 1], test_groups=[2, 3],
                         id_test_fraction=0.15, seed=0)
    groups = set(splits.test.meta["batch"].tolist())
    assert groups == {0.0, 1.0, 2.0, 3.0}  # the in-distribution part joined the test split
    assert not set(splits.train.meta["batch"].tolist()) & {2.0, 3.0}
    m = run_bench(_cfg(), splits, tmp_path / "run", log=lambda _m: None)
    d = m["drift"]
    det = d["detector"]
    for label in ("batch=2", "batch=3"):
        assert det["parts"][label]["detected"] == 2
        assert det["parts"][label]["max_delay"] <= det["window"] + det["step"]
    assert det["id"]["false_alarm_rate"][0] <= 0.05
    t = d["streams"]["groups"]["tasks"]["target"]
    opts = t["options"]
    assert set(opts) >= {"none", "peer", "stats", "stats_ungated", "adabn", "tent", "bn_none", "bn_stats", "dae:none",
                         "dae:stats"}
    # the strong drift costs the unadapted model; statistics adaptation wins most of it back
    # (the drift is an affine map per feature: re-standardising with the window's statistics inverts it
    # up to estimation error and the unadapted samples before the first alarm)
    for part in ("batch=2", "batch=3"):
        assert opts["none"]["parts"][part][0] < opts["none"]["parts"]["id"][0] - 0.2
        for option in ("stats", "adabn", "dae:stats"):
            assert opts[option]["parts"][part][0] > opts["none"]["parts"][part][0] + 0.1, (option, part)
    # gated: the in-distribution part is predicted exactly as without adaptation (no false alarm there)
    if det["id"]["false_alarm_rate"][0] == 0:
        assert opts["stats"]["parts"]["id"] == opts["none"]["parts"]["id"]
    assert t["kinds"] == {"id": "id", "batch=2": "dev", "batch=3": "report"}
    assert t["selected"] in opts and "dev" in opts[t["selected"]]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Drift: detection" in report and "Selected on the development parts" in report
    assert (tmp_path / "run" / "drift.png").is_file()
    # resume: every unit is reused, the numbers are identical
    again = run_bench(_cfg(), splits, tmp_path / "run", log=lambda _m: None)
    assert json.dumps(again["drift"], sort_keys=True) == json.dumps(d, sort_keys=True)


def test_streams_shuffle_within_groups_and_keep_targets_aligned() -> None:
    splits = make_splits(drifting_groups(120), split_by="batch", train_groups=[0, 1], test_groups=[2, 3],
                         id_test_fraction=0.15, seed=0)
    test = splits.test
    s = build_streams(DriftSettings(group_key="batch", id_groups=[0, 1]), test, seed=3)["groups"]
    assert list(s.parts) == ["id", "batch=2", "batch=3"]
    g = test.meta["batch"][s.order]
    assert set(g[s.parts["id"]].tolist()) == {0.0, 1.0}
    assert set(g[s.parts["batch=3"]].tolist()) == {3.0}
    assert torch.equal(s.batch.modalities["m0"], test.modalities["m0"][s.order])
    other = build_streams(DriftSettings(group_key="batch", id_groups=[0, 1]), test, seed=4)["groups"]
    assert not torch.equal(s.order, other.order)  # the seed decides the order within a group
    assert sorted(s.order.tolist()) == list(range(len(test)))  # every test sample exactly once
