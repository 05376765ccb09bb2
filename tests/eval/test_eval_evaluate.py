"""`mmguard.eval.evaluate`: per-condition labels, per-model per-condition F1, run loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mmguard.data.model import MultimodalBatch
from mmguard.data.registry import load_dataset
from mmguard.data.splits import stratified_three_way
from mmguard.errors import CheckpointError, SpecError
from mmguard.eval.evaluate import LoadedRun, condition_labels, evaluate_run
from mmguard.experiments import runs
from mmguard.experiments.runs import load_run
from mmguard.faults import apply_faults, exact_count

MIXED_SPEC = {
    "scenario": {"name": "mixed", "selection": "exclusive"},
    "faults": [
        {"modality": "m1", "type": "gaussian_noise", "params": {"sigma": 1.0}, "rate": 0.2},
        {"modality": "m0", "type": "stuck_at", "params": {"value": 2.0}, "rate": 0.1},
        # a common-cause failure listed out of modality order: the label is still m0 ... + m2 ...
        {"modality": "m2", "type": "gain", "params": {"factor": 3.0}, "rate": 0.15, "group": "heat"},
        {"modality": "m0", "type": "offset", "params": {"value": 3.0}, "rate": 0.15, "group": "heat"},
    ],
}


def small_batch(n: int = 6) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    mods = {"a": torch.randn(n, 2, generator=g), "b": torch.randn(n, 3, generator=g),
            "c": torch.randn(n, 1, generator=g)}
    return MultimodalBatch.from_arrays(mods, target=torch.arange(n) % 2)


# ---------------------------------------------------------------------------- condition labels
def test_condition_labels_hand_built_mask() -> None:
    batch = small_batch(6)
    mask = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    codes = torch.tensor([[-1, -1, -1], [0, -1, -1], [-1, 1, -1], [2, -1, 1], [0, 0, 2], [-1, -1, 2]])
    faulty = batch.with_faults(mask, codes, ("gaussian_noise", "stuck_at", "offset"))
    assert condition_labels(faulty) == [
        "clean",
        "a:gaussian_noise",
        "b:stuck_at",
        "a:offset+c:stuck_at",
        "a:gaussian_noise+b:gaussian_noise+c:offset",
        "c:offset",
    ]


def test_condition_labels_of_clean_batch() -> None:
    assert condition_labels(small_batch(4)) == ["clean"] * 4


def test_condition_labels_mixed_spec_counts() -> None:
    batch = load_dataset("toy?n=400")
    faulty = apply_faults(batch, MIXED_SPEC, seed=3)
    labels = condition_labels(faulty)
    assert len(labels) == 400
    counts = {u: labels.count(u) for u in set(labels)}
    # exclusive selection: exact, disjoint blocks (cumulative rounding), the group counted once
    assert counts == {"m1:gaussian_noise": 80, "m0:stuck_at": 40, "m0:offset+m2:gain": 60, "clean": 220}
    mask = faulty.fault_mask.numpy()
    lab = np.asarray(labels)
    assert not mask[lab == "clean"].any()
    assert (mask[lab == "m0:offset+m2:gain"] == [True, False, True]).all()
    assert (mask[lab == "m1:gaussian_noise"] == [False, True, False]).all()


def test_condition_labels_overlapping_independent_faults() -> None:
    batch = load_dataset("toy?n=300")
    spec = {"faults": [{"modality": "m0", "type": "gaussian_noise", "rate": 0.5},
                       {"modality": "m2", "type": "spikes", "rate": 0.5}]}
    faulty = apply_faults(batch, spec, seed=0)
    labels = np.asarray(condition_labels(faulty))
    mask = faulty.fault_mask.numpy()
    expected = np.where(mask[:, 0] & mask[:, 2], "m0:gaussian_noise+m2:spikes",
                        np.where(mask[:, 0], "m0:gaussian_noise", np.where(mask[:, 2], "m2:spikes", "clean")))
    assert (labels == expected).all()
    assert set(labels) == {"clean", "m0:gaussian_noise", "m2:spikes", "m0:gaussian_noise+m2:spikes"}
    assert int((labels != "clean").sum()) == int(mask.any(1).sum())


# ---------------------------------------------------------------------------- evaluate_run with fake models
def make_run(num_classes: int = 2, seeds: int = 3) -> LoadedRun:
    batch = load_dataset(f"toy?n=500&num_classes={num_classes}")
    test = stratified_three_way(batch, seed=0).standardize().test

    def oracle(b: MultimodalBatch) -> torch.Tensor:
        y = b.target.long()
        if num_classes == 2:
            logits = (2.0 * y - 1.0).unsqueeze(-1)
        else:
            logits = torch.nn.functional.one_hot(y, num_classes).float()
        return logits.unsqueeze(0).expand(seeds, *logits.shape)

    def noisy(b: MultimodalBatch) -> torch.Tensor:  # depends on the (possibly corrupted) inputs
        x = b.concat_flat()
        w = torch.Generator().manual_seed(1)
        proj = torch.randn(seeds, x.shape[1], 1 if num_classes == 2 else num_classes, generator=w)
        return torch.einsum("nd,sdk->snk", x, proj)

    thresholds = {"oracle": torch.zeros(seeds), "noisy": torch.tensor([-0.5, 0.0, 0.5])[:seeds]}
    if num_classes != 2:
        thresholds = {"oracle": None, "noisy": None}
    return LoadedRun(method="fake", config={}, test=test, models={"oracle": oracle, "noisy": noisy},
                     thresholds=thresholds, num_classes=num_classes)


def reference_f1(logits: torch.Tensor, y: np.ndarray, subset: np.ndarray, thr, k: int) -> list[float]:
    vals = []
    for s in range(logits.shape[0]):
        if k == 2:
            pred = (logits[s, :, 0] >= thr[s]).numpy().astype(int)
            vals.append(f1_score(y[subset], pred[subset], zero_division=0))
        else:
            pred = logits[s].argmax(-1).numpy()
            vals.append(f1_score(y[subset], pred[subset], average="macro", zero_division=0))
    v = np.asarray(vals, dtype=float)
    return [float(v.mean()), float(v.std(ddof=1))]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_evaluate_run_counts_and_f1(num_classes: int) -> None:
    run = make_run(num_classes)
    n = len(run.test)
    res = evaluate_run(run, MIXED_SPEC, seed=5)
    assert res["method"] == "fake" and res["seed"] == 5
    assert res["spec"]["faults"][0]["type"] == "gaussian_noise"
    counts = res["counts"]
    assert list(counts)[:2] == ["all", "clean"]
    assert counts["all"] == n
    assert sum(v for c, v in counts.items() if c != "all") == n
    assert set(counts) == {"all", "clean", "m1:gaussian_noise", "m0:stuck_at", "m0:offset+m2:gain"}
    # exclusive blocks in first-appearance order, cumulative rounding
    assert counts["m1:gaussian_noise"] == exact_count(0.2, n)
    assert counts["m0:stuck_at"] == exact_count(0.3, n) - exact_count(0.2, n)
    assert counts["m0:offset+m2:gain"] == exact_count(0.45, n) - exact_count(0.3, n)
    assert set(res["f1"]) == {"oracle", "noisy"}
    # the oracle is perfect on every condition; its seeds agree
    for cond in counts:
        assert res["f1"]["oracle"][cond] == [1.0, 0.0]
    # the other model matches scikit-learn per condition
    faulty = apply_faults(run.test, MIXED_SPEC, seed=5)
    labels = np.asarray(condition_labels(faulty))
    logits = run.models["noisy"](faulty)
    y = faulty.target.numpy()
    for cond in counts:
        subset = np.ones(n, dtype=bool) if cond == "all" else labels == cond
        ref = reference_f1(logits, y, subset, run.thresholds["noisy"], num_classes)
        assert res["f1"]["noisy"][cond] == pytest.approx(ref, abs=1e-9), cond
    json.dumps(res)  # JSON-ready


def test_evaluate_run_seed_controls_selection() -> None:
    run = make_run()
    a = evaluate_run(run, MIXED_SPEC, seed=1)
    b = evaluate_run(run, MIXED_SPEC, seed=1)
    c = evaluate_run(run, MIXED_SPEC, seed=2)
    assert a == b
    assert a["counts"] == c["counts"]  # exact counts whatever the seed
    assert a["f1"]["noisy"] != c["f1"]["noisy"]  # different samples hit


def test_evaluate_run_clean_spec() -> None:
    run = make_run()
    res = evaluate_run(run, {"faults": []})
    assert res["counts"] == {"all": len(run.test), "clean": len(run.test)}
    assert res["f1"]["noisy"]["all"] == res["f1"]["noisy"]["clean"]


def test_evaluate_run_spec_errors() -> None:
    run = make_run()
    with pytest.raises(SpecError, match="'zz'"):
        evaluate_run(run, {"faults": [{"modality": "zz", "type": "gaussian_noise", "rate": 0.5}]})
    with pytest.raises(SpecError, match="warp"):
        evaluate_run(run, {"faults": [{"modality": "m0", "type": "warp", "rate": 0.5}]})


# ---------------------------------------------------------------------------- load_run
def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="metrics.json"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"method": "alchemy"}))
    with pytest.raises(CheckpointError, match="unknown run method 'alchemy'") as info:
        load_run(tmp_path)
    assert "emma" in str(info.value) and "\n" not in str(info.value)


def test_load_run_dispatches_to_registered_loader(tmp_path: Path, monkeypatch) -> None:
    seen = {}
    fake = make_run()

    def loader(run_dir, config, data_dir, device):
        seen.update(run_dir=run_dir, config=config, data_dir=data_dir, device=device)
        return fake

    monkeypatch.setitem(runs.RUN_LOADERS, "fake", loader)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps({"method": "fake", "x": 1}))
    assert load_run(str(tmp_path), data_dir="/data") is fake
    assert seen == {"run_dir": tmp_path, "config": {"method": "fake", "x": 1}, "data_dir": "/data",
                    "device": torch.device("cpu")}  # the resolved --device (default cpu)
