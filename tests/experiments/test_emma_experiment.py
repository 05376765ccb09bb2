"""EMMA Experiment II (`EmmaExperiment` / `run_emma`): metrics schema, honest protocol, run directory.

Tiny settings (600 toy samples, 2 epochs per stage, 2 seeds, the 8-configuration grid) keep
every run to a few seconds; one run directory is shared by the module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score

from mmguard.data.registry import load_dataset
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.data.synthetic import make_shared_latent
from mmguard.emma.network import EmmaNetwork
from mmguard.emma.persist import load_model
from mmguard.emma.training import MLPClassifier
from mmguard.eval.evaluate import evaluate_run
from mmguard.experiments.emma.config import EmmaRunConfig
from mmguard.experiments.emma.experiment import EmmaExperiment, load_splits
from mmguard.experiments.emma.run import run_emma
from mmguard.experiments.runs import load_run
from mmguard.io.checkpoint import load_checkpoint

DATASET = "toy?n=600"
MODELS = ("base", "without", "with")
RULES = ("roc_distance", "f1_max")
PNG = b"\x89PNG\r\n\x1a\n"


def tiny(**overrides) -> EmmaRunConfig:
    base = dict(dataset=DATASET, epochs=2, dae_epochs=2, seeds=[0, 1])
    base.update(overrides)
    return EmmaRunConfig.quick_config(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tiny()
    out = tmp_path_factory.mktemp("emma") / "run"
    logs: list[str] = []
    metrics = run_emma(cfg, out, log=logs.append, chapter4=False)
    return {"cfg": cfg, "dir": out, "metrics": metrics, "logs": logs,
            "json": json.loads((out / "metrics.json").read_text())}


def is_ms(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v)
            and math.isfinite(v[0]) and v[1] >= 0.0)


def assert_f1_table(table: dict, conditions: list[str], models=MODELS) -> None:
    assert set(table) == set(models)
    for model in models:
        assert list(table[model]) == conditions, model
        for cond, v in table[model].items():
            assert is_ms(v), (model, cond, v)
            assert 0.0 <= v[0] <= 1.0, (model, cond, v)


# ---------------------------------------------------------------------------- metrics.json schema
def test_metrics_schema(run) -> None:
    m, cfg = run["json"], run["cfg"]
    conds = ["clean", "m0_noisy", "m1_noisy", "m2_noisy"]
    assert m["modalities"] == ["m0", "m1", "m2"]
    assert m["conditions"] == conds
    assert m["seeds"] == [0, 1]
    assert m["num_classes"] == 2
    assert m["selection_rule"] == "roc_distance"
    assert m["threshold_rules"] == list(RULES)
    assert set(m["f1_at"]) == set(RULES)
    for rule in RULES:
        assert_f1_table(m["f1_at"][rule], conds)
    assert m["f1"] == m["f1_at"]["roc_distance"]
    # the run returned the same numbers it wrote
    assert run["metrics"]["f1"] == m["f1"]
    sel = m["selected"]["with"]
    assert sel["rho"] in cfg.grid.rho
    assert sel["lambda_c"] in cfg.grid.lambda_c
    assert sel["lambda_e"] in cfg.grid.lambda_e
    assert "validation" in sel["criterion"]
    for key in ("val_weighted_f1", "capacity", "g_a", "b_a"):
        assert is_ms(sel[key]), key
    assert 0.0 <= sel["b_a"][0] <= 1.0 and sel["g_a"][0] > 0
    assert set(m["selected"]) == {"with"}  # anneal off
    assert m["train_sigma"] == cfg.sigma
    assert m["data"]["dataset"] == DATASET
    assert sum(m["data"]["sizes"].values()) == 600
    assert set(m["data"]["positives"]) == {"train", "val", "test"}
    assert {"daes_s", "base_and_references_s", "without_s", "with_s", "evaluation_s", "total_s",
            "wall_s"} <= set(m["timing"])


def test_selection_is_argmax_of_validation_grid(run) -> None:
    m, cfg = run["json"], run["cfg"]
    grid = m["grid"]["with"]
    assert len(grid) == cfg.grid.size == 8
    assert {(g["rho"], g["lambda_c"], g["lambda_e"]) for g in grid} == {
        (r, c, e) for r in cfg.grid.rho for c in cfg.grid.lambda_c for e in cfg.grid.lambda_e}
    for g in grid:
        assert is_ms(g["val_weighted_f1"]) and 0.0 <= g["val_weighted_f1"][0] <= 1.0
        assert list(g["val"]) == m["conditions"]
    best = max(grid, key=lambda g: g["val_weighted_f1"][0])
    sel = m["selected"]["with"]
    assert (sel["rho"], sel["lambda_c"], sel["lambda_e"]) == (best["rho"], best["lambda_c"], best["lambda_e"])
    assert sel["val_weighted_f1"] == best["val_weighted_f1"]
    # the weighted validation F1 is the condition-weighted mean (50 % clean, the rest evenly)
    w = {"clean": 0.5, **{c: 0.5 / 3 for c in m["conditions"][1:]}}
    assert sum(w[c] * best["val"][c][0] for c in w) == pytest.approx(best["val_weighted_f1"][0], abs=1e-9)
    orc = m["oracle_test_selected"]["with"]
    assert "optimistic" in orc["note"] and list(orc["f1"]) == m["conditions"]


def test_sweep_and_total_energy(run) -> None:
    m, cfg = run["json"], run["cfg"]
    sigmas = list(cfg.sweep_sigmas)
    assert m["sweep"]["sigma"] == sigmas
    for name in m["modalities"]:
        block = m["sweep"][name]
        assert set(block["f1"]) == set(MODELS)
        for model in MODELS:
            assert len(block["f1"][model]) == len(sigmas)
            assert all(is_ms(v) and 0 <= v[0] <= 1 for v in block["f1"][model])
        assert set(block["beta"]) == set(m["modalities"])
        for betas in block["beta"].values():
            assert len(betas) == len(sigmas) and all(0.0 <= b[0] <= 1.0 for b in betas)
        # the corrupted modality's attention falls as its noise grows (sigma 0 -> 3)
        assert block["beta"][name][-1][0] < block["beta"][name][0][0], name
        assert is_ms(block["reference_other_modalities"])
        # sigma = 0 is the clean test split: identical for every modality's sweep
        for model in MODELS:
            assert block["f1"][model][0] == m["sweep"]["m0"]["f1"][model][0]
    te = m["total_energy"]
    assert te["sigma"] == sigmas
    assert len(te["mean_total_energy"]) == len(te["f1"]) == len(sigmas)
    # more noise on every modality -> more total energy
    assert te["mean_total_energy"][-1][0] > te["mean_total_energy"][0][0]


# ---------------------------------------------------------------------------- run directory
def test_run_directory_contents(run) -> None:
    out, m = run["dir"], run["json"]
    for name in ("config.json", "metrics.json", "report.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "emma" and config["dataset"] == DATASET and config["quick"] is True
    assert EmmaRunConfig(**{k: v for k, v in config.items() if k in EmmaRunConfig.model_fields}) == run["cfg"]
    assert m["plots"] and all(p.endswith(".png") for p in m["plots"])
    for p in m["plots"]:
        assert (out / p).read_bytes()[:8] == PNG, p
    assert {"robustness_sweep.png", "total_energy.png", "grid_with.png"} <= set(m["plots"])
    for role in MODELS:
        assert (out / "models" / role / "weights.safetensors").is_file(), role
        assert (out / "models" / role / "config.json").is_file(), role
    assert not (out / "models" / "with_annealed").exists()
    tensors, pre = load_checkpoint(out / "preprocessing")
    assert pre["dataset"] == DATASET and [d["name"] for d in pre["modalities"]] == ["m0", "m1", "m2"]
    assert set(tensors) == {f"standardizer.m{i}.{s}" for i in range(3) for s in ("mean", "std")}
    assert [p.name for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    report = (out / "report.md").read_text()
    assert report.startswith(f"# EMMA run on `{DATASET}`")
    assert "Quick mode" in report and "m2_noisy" in report and "thesis table 6.2" not in report


def test_saved_models(run) -> None:
    out, m = run["dir"], run["json"]
    base, cfg_b, _ = load_model(out / "models" / "base")
    assert isinstance(base, MLPClassifier) and base.mlp.layers[0].ensemble_size == 2
    assert base.input_mask is None
    with_net, cfg_w, _ = load_model(out / "models" / "with")
    assert isinstance(with_net, EmmaNetwork)
    assert with_net.attention.ensemble_size == 2  # the selected configuration, one member per seed
    sel = m["selected"]["with"]
    assert cfg_w["hyperparameters"] == {k: sel[k] for k in ("rho", "lambda_c", "lambda_e")}
    assert torch.allclose(with_net.attention.rho, torch.full((2,), sel["rho"]))
    assert with_net.attention.capacity().mean().item() == pytest.approx(sel["capacity"][0], rel=1e-5)
    for role in MODELS:
        cfg_r = json.loads((out / "models" / role / "config.json").read_text())
        assert cfg_r["role"] == role and cfg_r["seeds"] == [0, 1]
        assert set(cfg_r["thresholds"]) == set(RULES)
        assert all(len(t) == 2 for t in cfg_r["thresholds"].values())


def test_saved_models_reproduce_clean_test_f1(run) -> None:
    """Reloaded weights + saved thresholds give the sweep's sigma=0 numbers (clean test)."""
    m = run["json"]
    res = evaluate_run(load_run(run["dir"]), {"faults": []})
    n = m["data"]["sizes"]["test"]
    assert res["counts"] == {"all": n, "clean": n}
    for model in MODELS:
        assert res["f1"][model]["all"] == pytest.approx(m["sweep"]["m0"]["f1"][model][0], abs=1e-9), model


def test_progress_log(run) -> None:
    text = "\n".join(run["logs"])
    for needle in ("stage 1", "model-without", "8 configurations x 2 seeds", "robustness"):
        assert needle in text, needle


# ---------------------------------------------------------------------------- determinism and honesty
def test_same_config_same_numbers(run) -> None:
    again = EmmaExperiment(tiny()).run()
    assert again["f1_at"] == run["metrics"]["f1_at"]
    assert again["selected"] == run["metrics"]["selected"]
    assert again["grid"] == run["metrics"]["grid"]


def manual_splits(dataset: str = DATASET) -> Splits:
    batch = load_dataset(dataset)
    return stratified_three_way(batch, train_fraction=0.67, seed=0).standardize()


def test_manual_splits_equal_load_splits() -> None:
    a, b = manual_splits(), load_splits(tiny())
    for part in ("train", "val", "test"):
        pa, pb = getattr(a, part), getattr(b, part)
        assert torch.equal(pa.target, pb.target)
        for n in pa.names:
            assert torch.equal(pa.modalities[n], pb.modalities[n])


def test_selection_never_uses_test_data(run) -> None:
    """Same train/val, a test split with permuted labels and replaced features: identical choices."""
    splits = manual_splits()
    test = splits.test
    g = torch.Generator().manual_seed(123)
    perm = torch.randperm(len(test), generator=g)
    fake = dataclasses.replace(
        test, target=test.target[perm],
        modalities={n: torch.randn(x.shape, generator=g) * 3 for n, x in test.modalities.items()})
    assert not torch.equal(fake.target, test.target)
    exp = EmmaExperiment(tiny(), splits=dataclasses.replace(splits, test=fake))
    other = exp.run()
    ref = run["metrics"]
    assert other["selected"] == ref["selected"]
    assert other["grid"] == ref["grid"]  # every validation score of every configuration
    # thresholds (chosen on validation) are those saved in the reference run
    for role in MODELS:
        saved = json.loads((run["dir"] / "models" / role / "config.json").read_text())["thresholds"]
        for rule in RULES:
            assert exp.thresholds[role][rule].tolist() == saved[rule], (role, rule)
    # trained weights do not depend on the test split
    base_saved, _, _ = load_model(run["dir"] / "models" / "base")
    saved_state, fresh_state = base_saved.state_dict(), exp.models["base"].state_dict()
    assert list(saved_state) == list(fresh_state)
    for k, v in saved_state.items():
        assert torch.equal(v, fresh_state[k]), k
    # ... while the test numbers did change (the perturbation reached the report)
    assert other["f1"] != ref["f1"]


# ---------------------------------------------------------------------------- other shapes of task
def test_two_named_modalities() -> None:
    batch = make_shared_latent(600, modality_dims=(4, 4), names=("ip", "dm"), seed=0)
    splits = stratified_three_way(batch, seed=0).standardize()
    m = EmmaExperiment(tiny(), splits=splits).run()
    conds = ["clean", "ip_noisy", "dm_noisy"]
    assert m["modalities"] == ["ip", "dm"] and m["conditions"] == conds
    for rule in RULES:
        assert_f1_table(m["f1_at"][rule], conds)
    assert set(m["sweep"]) == {"sigma", "ip", "dm"}
    assert set(m["sweep"]["ip"]["beta"]) == {"ip", "dm"}


def test_multiclass_uses_argmax_and_macro_f1(tmp_path: Path) -> None:
    dataset = "toy?n=600&num_classes=3"
    cfg = tiny(dataset=dataset)
    m = run_emma(cfg, tmp_path / "mc", log=lambda _: None, chapter4=False)
    assert m["num_classes"] == 3
    assert m["selection_rule"] == "argmax" and m["threshold_rules"] == ["argmax"]
    assert list(m["f1_at"]) == ["argmax"]
    assert_f1_table(m["f1"], m["conditions"])
    assert m["data"]["positives"] is None
    assert "argmax" in (tmp_path / "mc" / "report.md").read_text()
    # thresholds are not used; the saved models re-evaluate to macro F1 (checked against scikit-learn)
    loaded = load_run(tmp_path / "mc")
    assert loaded.num_classes == 3 and set(loaded.models) == set(MODELS)
    assert all(t is None for t in loaded.thresholds.values())
    res = evaluate_run(loaded, {"faults": []})
    y = loaded.test.target.numpy()
    for model in MODELS:
        logits = loaded.models[model](loaded.test)
        per_seed = [f1_score(y, logits[s].argmax(-1).numpy(), average="macro") for s in range(2)]
        assert res["f1"][model]["all"][0] == pytest.approx(sum(per_seed) / 2, abs=1e-9)
        assert res["f1"][model]["all"] == pytest.approx(m["sweep"]["m0"]["f1"][model][0], abs=1e-9)
