"""`EmmaGuard` honours the Guard contract (mmguard.guard) for 2 to 6 modalities of different sizes."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.registry import load_dataset
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.emma.guard import EmmaGuard, EmmaGuardConfig
from mmguard.emma.persist import save_model
from mmguard.emma.training import MLPClassifier
from mmguard.errors import CheckpointError, DataError, SpecError
from mmguard.faults import apply_faults, single_fault_spec
from mmguard.guard import Guard
from mmguard.train.ensemble import EnsembleMLP

DIMS = {2: (4, 6), 3: (4, 6, 3), 4: (2, 5, 3, 7), 6: (1, 2, 3, 4, 5, 6)}
CONFIG = EmmaGuardConfig(epochs=3, dae_epochs=3)
BIG_SIGMA = 10.0  # raw units; the toy features have unit-order spread


def toy_splits(dims: tuple[int, ...], n: int = 600, **params) -> Splits:
    query = "&".join([f"n={n}", "modality_dims=" + ",".join(map(str, dims)),
                      *(f"{k}={v}" for k, v in params.items())])
    return stratified_three_way(load_dataset(f"toy?{query}"), seed=0)


@pytest.fixture(scope="module", params=sorted(DIMS), ids=lambda m: f"M{m}")
def fitted(request):
    splits = toy_splits(DIMS[request.param])
    guard = EmmaGuard(CONFIG)
    report = guard.fit(splits, seed=0)
    return guard, splits, report


@pytest.fixture(scope="module")
def guard3():
    splits = toy_splits(DIMS[3])
    guard = EmmaGuard(CONFIG)
    guard.fit(splits, seed=0)
    return guard, splits


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


# ---------------------------------------------------------------------------- contract
def test_is_a_guard() -> None:
    assert issubclass(EmmaGuard, Guard) and EmmaGuard.kind == "emma"


def test_fit_report(fitted) -> None:
    guard, splits, report = fitted
    assert {"base_best_epoch", "best_epoch", "best_val_loss", "threshold", "capacity"} <= set(report)
    assert 1 <= report["best_epoch"] <= CONFIG.epochs
    assert math.isfinite(report["best_val_loss"]) and math.isfinite(report["capacity"])
    assert report["threshold"] == guard.threshold is not None
    assert [s.name for s in guard.specs] == list(splits.train.names)
    assert guard.num_classes == 2
    json.dumps(report)


def test_score_shape_and_range(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    psi = guard.score(test)
    assert psi.shape == (len(test), test.num_modalities)
    assert torch.isfinite(psi).all()
    assert float(psi.min()) >= math.e - 1e-5  # shifted potentials, eq. 5.3


def test_noisy_modality_scores_higher_and_gets_less_attention(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    clean = guard.explain(test)
    assert clean.beta.shape == clean.alpha.shape == (len(test), test.num_modalities)
    assert torch.allclose(clean.alpha.sum(-1), torch.ones(len(test)), atol=1e-5)
    for i, name in enumerate(test.names):
        bad = apply_faults(test, single_fault_spec(name, "gaussian_noise", {"sigma": BIG_SIGMA}), seed=1)
        out = guard.explain(bad)
        assert float(out.psi[:, i].mean()) > float(clean.psi[:, i].mean()), name
        assert float(out.beta[:, i].mean()) < float(clean.beta[:, i].mean()), name
        assert float(out.alpha[:, i].mean()) < float(clean.alpha[:, i].mean()), name
        # potentials are per modality: the other modalities' scores do not move
        others = [j for j in range(test.num_modalities) if j != i]
        assert torch.equal(out.psi[:, others], clean.psi[:, others]), name


def test_transform_gates_in_standardised_space(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    gated = guard.transform(test)
    assert gated.names == test.names and len(gated) == len(test)
    assert torch.equal(gated.target, test.target)
    std = guard.standardizer.transform(test)
    beta = guard.explain(test).beta
    assert bool((beta > 0).all())
    for i, name in enumerate(test.names):
        x = gated.modalities[name]
        assert x.shape == test.modalities[name].shape
        assert torch.allclose(x, std.modalities[name] * beta[:, i:i + 1], atol=1e-6)
        # nothing is zeroed where the attention is positive
        assert int((x == 0).sum()) == int((std.modalities[name] == 0).sum()), name


def test_predictions(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    logits = guard.predict_logits(test)
    assert logits.shape == (len(test), 1)
    pred = guard.predict(test)
    assert pred.shape == (len(test),) and set(pred.unique().tolist()) <= {0, 1}
    assert torch.equal(pred, (logits.squeeze(-1) >= guard.threshold).long())


def test_save_load_round_trip(fitted, tmp_path: Path) -> None:
    guard, splits, _ = fitted
    guard.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", "weights.safetensors"]
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["guard"] == "emma" and cfg["threshold"] == guard.threshold
    loaded = EmmaGuard.load(tmp_path / "g")
    assert loaded.specs == guard.specs and loaded.threshold == guard.threshold
    assert loaded.config == guard.config and loaded.num_classes == guard.num_classes
    test = splits.test
    assert torch.equal(loaded.predict_logits(test), guard.predict_logits(test))
    assert torch.equal(loaded.score(test), guard.score(test))
    assert torch.equal(loaded.predict(test), guard.predict(test))
    for name in test.names:
        assert torch.equal(loaded.transform(test).modalities[name], guard.transform(test).modalities[name])


# ---------------------------------------------------------------------------- fit protocol
def test_fit_never_touches_test_split() -> None:
    splits = toy_splits(DIMS[2], n=400)
    poisoned = dataclasses.replace(splits, test=splits.test.with_modalities(
        {n: torch.full_like(x, float("nan")) for n, x in splits.test.modalities.items()}))
    a, b = EmmaGuard(CONFIG), EmmaGuard(CONFIG)
    ra, rb = a.fit(splits, seed=0), b.fit(poisoned, seed=0)
    assert ra == rb
    assert torch.equal(a.predict_logits(splits.val), b.predict_logits(splits.val))


def test_fit_is_seeded() -> None:
    splits = toy_splits(DIMS[2], n=400)
    a, b, c = EmmaGuard(CONFIG), EmmaGuard(CONFIG), EmmaGuard(CONFIG)
    a.fit(splits, seed=0)
    b.fit(splits, seed=0)
    c.fit(splits, seed=1)
    assert torch.equal(a.predict_logits(splits.test), b.predict_logits(splits.test))
    assert not torch.equal(a.predict_logits(splits.test), c.predict_logits(splits.test))


def test_multiclass_guard(tmp_path: Path) -> None:
    splits = toy_splits(DIMS[3], num_classes=3)
    guard = EmmaGuard(CONFIG)
    report = guard.fit(splits)
    assert guard.num_classes == 3 and guard.threshold is None and report["threshold"] is None
    logits = guard.predict_logits(splits.test)
    assert logits.shape == (len(splits.test), 3)
    assert torch.equal(guard.predict(splits.test), logits.argmax(-1))
    guard.save(tmp_path)
    loaded = EmmaGuard.load(tmp_path)
    assert loaded.num_classes == 3
    assert torch.equal(loaded.predict(splits.test), guard.predict(splits.test))


def test_fit_rejects_bad_training_data() -> None:
    one = MultimodalBatch.from_arrays({"x": torch.randn(60, 3)}, target=torch.arange(60) % 2)
    with pytest.raises(DataError, match="at least 2 modalities"):
        EmmaGuard(CONFIG).fit(stratified_three_way(one, seed=0))
    cont = MultimodalBatch.from_arrays({"a": torch.randn(60, 2), "b": torch.randn(60, 2)},
                                       target=torch.randn(60))
    with pytest.raises(DataError):
        EmmaGuard(CONFIG).fit(stratified_three_way(cont, seed=0, stratify=False))


# ---------------------------------------------------------------------------- input errors
def _batch(mods: dict[str, torch.Tensor], n: int) -> MultimodalBatch:
    return MultimodalBatch.from_arrays(mods, target=torch.zeros(n, dtype=torch.long))


def test_wrong_per_sample_shape(guard3) -> None:
    guard, splits = guard3
    test = splits.test
    n = len(test)
    mods = dict(test.modalities)
    mods["m1"] = torch.randn(n, 5)
    with pytest.raises(DataError) as info:
        guard.score(_batch(mods, n))
    assert "'m1'" in one_line(info.value) and "(6,)" in str(info.value) and "(5,)" in str(info.value)


@pytest.mark.parametrize("case", ["missing", "unknown", "extra"])
def test_missing_or_unknown_modality(guard3, case: str) -> None:
    guard, splits = guard3
    test = splits.test
    n = len(test)
    mods = dict(test.modalities)
    if case == "missing":
        del mods["m2"]
    elif case == "unknown":
        mods["zz"] = mods.pop("m2")
    else:
        mods["zz"] = torch.randn(n, 2)
    batch = _batch(mods, n)
    for call in (guard.score, guard.transform, guard.predict_logits, guard.predict):
        with pytest.raises(DataError) as info:
            call(batch)
        one_line(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(guard3, bad: float) -> None:
    guard, splits = guard3
    test = splits.test
    x = test.modalities["m0"].clone()
    x[3, 1] = bad
    batch = test.with_modalities({"m0": x})
    for call in (guard.score, guard.transform, guard.predict_logits):
        with pytest.raises(DataError) as info:
            call(batch)
        assert "'m0'" in one_line(info.value) and "sample 3" in str(info.value)


def test_unfitted_guard_raises_spec_error(tmp_path: Path) -> None:
    guard = EmmaGuard(CONFIG)
    batch = load_dataset("toy?n=20")
    for call in (guard.predict, guard.predict_logits, guard.score, guard.transform, guard.explain):
        with pytest.raises(SpecError, match="not fitted"):
            call(batch)
    with pytest.raises(SpecError, match="not fitted"):
        guard.save(tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------- checkpoint errors
@pytest.fixture
def saved(guard3, tmp_path: Path) -> Path:
    guard3[0].save(tmp_path / "g")
    return tmp_path / "g"


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_load_corrupted_weights(saved: Path, how: str) -> None:
    w = saved / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes({"garbage": b"\x00\x01not a safetensors file" * 20, "truncated": data[: len(data) // 2],
                   "empty": b""}[how])
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value)


def test_load_weights_of_another_architecture(saved: Path, tmp_path: Path) -> None:
    other = EmmaGuard(CONFIG)
    other.fit(toy_splits(DIMS[2], n=300))
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "weights.safetensors", saved / "weights.safetensors")
    with pytest.raises(CheckpointError, match="do not match") as info:
        EmmaGuard.load(saved)
    one_line(info.value)


def test_load_bad_config(saved: Path) -> None:
    cfg_path = saved / "config.json"
    good = json.loads(cfg_path.read_text())
    cfg_path.write_text("{ not json")
    with pytest.raises(CheckpointError):
        EmmaGuard.load(saved)
    cfg_path.write_text(json.dumps({**good, "guard": "mmssl"}))
    with pytest.raises(CheckpointError, match="not an EMMA guard"):
        EmmaGuard.load(saved)
    bad = {**good, "config": {**good["config"], "bogus_option": 1}}
    cfg_path.write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="malformed"):
        EmmaGuard.load(saved)
    cfg_path.write_text(json.dumps({k: v for k, v in good.items() if k != "threshold"}))
    with pytest.raises(CheckpointError):
        EmmaGuard.load(saved)


def test_load_missing_dir_or_other_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        EmmaGuard.load(tmp_path / "absent")
    mlp = MLPClassifier(EnsembleMLP([0], [4, 3, 1]), 2)
    save_model(tmp_path / "mlp", mlp, {"guard": "emma"})
    with pytest.raises(CheckpointError, match="not an EMMA guard"):
        EmmaGuard.load(tmp_path / "mlp")
