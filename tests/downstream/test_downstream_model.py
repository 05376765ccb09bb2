"""The downstream model learns its task, the peer is more robust to a lost modality than the
clean model, regression predicts in target units, and `mmguard bench --downstream` reports
retention with the oracle at exactly 1 and a harmful fault below it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmguard.data import load_dataset
from mmguard.data.splits import make_splits
from mmguard.downstream.model import DownstreamConfig, downstream_metric, fit_downstream
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec

CFG = DownstreamConfig(epochs=25, patience=None, hidden=64, code=16)


def _splits():
    return make_splits(load_dataset("toy?n=1500&redundancy=0.9"), seed=0).standardize()


def test_clean_model_learns_and_peer_survives_a_lost_modality() -> None:
    sp = _splits()
    clean, rep = fit_downstream(sp.train, sp.val, sp.train.target, sp.val.target, CFG, seed=0)
    assert rep["task"] == "binary"
    f1 = downstream_metric(clean.predict(sp.test), sp.test.target, "binary")["score"]
    assert f1 >= 0.85, f1  # a tiny, separable problem: chance is ~0.5
    peer, _ = fit_downstream(sp.train, sp.val, sp.train.target, sp.val.target, CFG, seed=0, mode="peer",
                             fault_spec=training_spec(sp.train))
    lost = apply_faults(sp.test, {"faults": [{"modality": "m1", "type": "missing", "params": {"fraction": 1.0},
                                              "rate": 1.0}]}, seed=3)
    f1_clean_model = downstream_metric(clean.predict(lost), sp.test.target, "binary")["score"]
    f1_peer = downstream_metric(peer.predict(lost), sp.test.target, "binary")["score"]
    assert f1_peer > f1_clean_model, (f1_peer, f1_clean_model)


def test_regression_in_target_units() -> None:
    sp = _splits()
    y = {p: getattr(sp, p).modalities["m0"][:, 0] * 50.0 + 1000.0 for p in ("train", "val", "test")}
    model, rep = fit_downstream(sp.train, sp.val, y["train"], y["val"], CFG, seed=0)
    assert rep["task"] == "regression"
    pred = model.predict(sp.test)
    assert abs(float(pred.mean()) - 1000.0) < 20.0  # back in target units, not standardised
    m = downstream_metric(pred, y["test"], "regression")
    assert m["r2"] > 0.8 and m["quality"] == 1.0 / m["score"]


def test_metric_values() -> None:
    y = torch.tensor([0, 1, 1, 0, 1])
    p = torch.tensor([0, 1, 0, 0, 1])
    m = downstream_metric(p, y, "binary")
    assert abs(m["score"] - 0.8) < 1e-9 and abs(m["accuracy"] - 0.8) < 1e-9
    r = downstream_metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 5.0]), "regression")
    assert abs(r["score"] - 2.0 / 3.0) < 1e-9


def test_bench_reports_retention(tmp_path: Path) -> None:
    from mmguard.cli.main import entrypoint

    spec = tmp_path / "heat.yaml"
    spec.write_text("scenario: {name: heat}\nfaults:\n"
                    "  - {modality: m0, type: gaussian_noise, params: {sigma: 3.0}, rate: 1.0, group: g}\n"
                    "  - {modality: m1, type: gaussian_noise, params: {sigma: 3.0}, rate: 1.0, group: g}\n")
    rc = entrypoint(["bench", "--data", "toy?n=900&redundancy=0.9", "--guards", "dae", "--seeds", "2", "--quick",
                     "--no-sweep", "--downstream", "target", "--faults", str(spec), "--out", str(tmp_path / "b")])
    assert rc == 0
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    d = m["downstream"]["target"]
    assert d["metric"] == "f1"
    assert set(d["scores"]) == {"oracle", "none", "peer", "dae"}
    for group in ("trained", "unseen", "common_cause"):
        assert d["retention"][group]["oracle"]["retention"][0] == 1.0
    # strong common-cause noise hurts the clean model on the raw faulty input
    heat = d["scores"]
    assert heat["none"]["custom:heat"][0] < heat["oracle"]["custom:heat"][0] - 0.05
    assert heat["none"]["clean"] == heat["oracle"]["clean"]  # no fault: the same input
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Downstream task `target`" in report and "| dae |" in report


def test_macro_f1_matches_scikit_learn_and_f1_selection_trains() -> None:
    from sklearn.metrics import f1_score

    from mmguard.downstream.model import macro_f1

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=gen)
    pred = torch.where(torch.rand(300, generator=gen) < 0.6, y, torch.randint(0, 5, (300,), generator=gen))
    expected = f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0)
    assert abs(float(macro_f1(pred, y, 5)) - expected) < 1e-12
    sp = _splits()
    model, rep = fit_downstream(sp.train, sp.val, sp.train.target, sp.val.target,
                                CFG.model_copy(update={"select_by": "f1", "patience": 5}), seed=0)
    # the selected epoch's validation value is 1 - macro F1 of that model on the validation split
    val_f1 = f1_score(sp.val.target.numpy(), model.predict(sp.val).numpy(), average="macro")
    assert abs(rep["best_val"] - (1 - val_f1)) < 1e-6
