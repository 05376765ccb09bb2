"""`EmmaGuard` (registered as ``emma``): what is specific to EMMA behind the Guard template.

The generic contract (calibration, seeding, the corrupted-directory corpus, the generic bad-input
corpus, affine equivariance) is checked on every registered guard in tests/contract; this file
checks EMMA for 2 to 6 modalities of different sizes: the flag score is the calibrated shifted
potential Ψ (eq. 5.3), the trained attention moves away from a noisy modality, EMMA predicts but
does not correct (attention is read through :meth:`EmmaGuard.explain`), raw data in, the save
layout carries the decision threshold and architecture, and one-line errors for EMMA's own
methods (``explain``, ``predict_logits``) and files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmguard.data.model import MultimodalBatch
from mmguard.data.registry import load_dataset
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.emma.attention import EULER
from mmguard.emma.guard import EmmaGuard, EmmaGuardConfig
from mmguard.emma.persist import save_model
from mmguard.emma.training import MLPClassifier
from mmguard.errors import CheckpointError, DataError, NotFittedError, SpecError
from mmguard.faults import apply_faults, single_fault_spec
from mmguard.guard import Guard, GuardConfig, available_guards, load_guard
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.guard import MmsslConfig, MmsslGuard
from mmguard.train.ensemble import EnsembleMLP
from support import one_line

DIMS = {2: (4, 6), 3: (4, 6, 3), 4: (2, 5, 3, 7), 6: (1, 2, 3, 4, 5, 6)}
#: the thesis defaults (35 epochs, 30 DAE epochs): the attention test needs a trained guard
TRAINED = EmmaGuardConfig()
#: a cheap config for the tests that only need *a* fitted guard
CONFIG = EmmaGuardConfig(epochs=3, dae_epochs=3)
#: moderate noise in raw units: about the toy features' own spread (0.9 to 1.7), not off-scale
NOISE_SIGMA = 1.0


def toy_splits(dims: tuple[int, ...], n: int = 600, **params) -> Splits:
    query = "&".join([f"n={n}", "modality_dims=" + ",".join(map(str, dims)),
                      *(f"{k}={v}" for k, v in params.items())])
    return stratified_three_way(load_dataset(f"toy?{query}"), seed=0)


@pytest.fixture(scope="module", params=sorted(DIMS), ids=lambda m: f"M{m}")
def fitted(request):
    splits = toy_splits(DIMS[request.param])
    guard = EmmaGuard(TRAINED)
    report = guard.fit(splits, seed=0)
    return guard, splits, report


@pytest.fixture(scope="module")
def guard3():
    splits = toy_splits(DIMS[3])
    guard = EmmaGuard(CONFIG)
    guard.fit(splits, seed=0)
    return guard, splits




def standardised_members(guard: EmmaGuard, batch: MultimodalBatch) -> list[torch.Tensor]:
    """The network's input for a raw batch, built by hand: the training split's z-scores."""
    std = guard.standardizer.transform(batch)
    return [std.modalities[n].unsqueeze(0) for n in guard.names]


# ---------------------------------------------------------------------------- registration
def test_registered_as_emma() -> None:
    assert issubclass(EmmaGuard, Guard) and EmmaGuard.name == "emma"
    assert available_guards()["emma"] is EmmaGuard
    assert EmmaGuard.capabilities() == {"flag": True, "correct": False, "predict": True}
    assert EmmaGuard.needs_target and EmmaGuard.min_modalities == 2
    assert EmmaGuard.config_class is EmmaGuardConfig and issubclass(EmmaGuardConfig, GuardConfig)
    # the pydantic config: a dict is validated, an out-of-range EMMA setting is a one-line SpecError
    assert EmmaGuard({"epochs": 4, "rho": 0.5}).config == EmmaGuardConfig(epochs=4, rho=0.5)
    with pytest.raises(SpecError) as info:
        EmmaGuard({"rho": 0.0})
    one_line(info.value, "rho")


# ---------------------------------------------------------------------------- fitting
def test_fit_report(fitted) -> None:
    guard, splits, report = fitted
    assert {"base_best_epoch", "best_epoch", "best_val_loss", "threshold", "capacity", "calibration"} <= set(report)
    assert 1 <= report["best_epoch"] <= TRAINED.epochs
    assert math.isfinite(report["best_val_loss"]) and math.isfinite(report["capacity"])
    assert report["threshold"] == guard.threshold is not None
    assert report["calibration"]["false_alarm_rate"] == TRAINED.false_alarm_rate
    assert guard.names == splits.train.names
    assert guard.num_classes == 2
    json.dumps(report)


def test_fit_takes_raw_splits_and_standardises_inputs_itself(fitted) -> None:
    """Raw in: the guard's standardiser is the training split's, and every output of a raw batch
    is the network applied to that batch's z-scores (not to the raw values, not re-fitted)."""
    guard, splits, _ = fitted
    ref = splits.standardize().standardizer
    for n in guard.names:
        assert torch.equal(guard.standardizer.mean[n], ref.mean[n]), n
        assert torch.equal(guard.standardizer.std[n], ref.std[n]), n
    test = splits.test
    members = standardised_members(guard, test)
    with torch.no_grad():
        logits, out = guard.model(members)
    assert torch.allclose(guard.predict_logits(test), logits[0], atol=1e-6)
    assert torch.allclose(guard.explain(test).psi, out.psi[0], atol=1e-5)
    # feeding already standardised data counts as raw: it is standardised again and scores differ
    assert not torch.allclose(guard.score(splits.standardize().test), guard.score(test), atol=1e-3)
    fresh = EmmaGuard(CONFIG)
    with pytest.raises(DataError) as info:
        fresh.fit(splits.standardize(), seed=0)
    one_line(info.value, "raw")
    assert not fresh.fitted


def test_fit_never_touches_test_split() -> None:
    splits = toy_splits(DIMS[2], n=400)
    poisoned = dataclasses.replace(splits, test=splits.test.with_modalities(
        {n: torch.full_like(x, float("nan")) for n, x in splits.test.modalities.items()}))
    a, b = EmmaGuard(CONFIG), EmmaGuard(CONFIG)
    ra, rb = a.fit(splits, seed=0), b.fit(poisoned, seed=0)
    assert ra == rb
    assert torch.equal(a.predict_logits(splits.val), b.predict_logits(splits.val))


def test_multiclass_guard(tmp_path: Path) -> None:
    splits = toy_splits(DIMS[3], num_classes=3)
    guard = EmmaGuard(CONFIG)
    report = guard.fit(splits)
    assert guard.num_classes == 3 and guard.threshold is None and report["threshold"] is None
    logits = guard.predict_logits(splits.test)
    assert logits.shape == (len(splits.test), 3)
    pred = guard.predict(splits.test)
    assert torch.equal(pred, logits.argmax(-1))
    assert set(pred.unique().tolist()) <= {0, 1, 2}
    guard.save(tmp_path / "g")
    loaded = EmmaGuard.load(tmp_path / "g")
    assert loaded.num_classes == 3 and loaded.threshold is None
    assert torch.equal(loaded.predict(splits.test), pred)


def test_fit_rejects_bad_training_data() -> None:
    one = MultimodalBatch.from_arrays({"x": torch.randn(60, 3)}, target=torch.arange(60) % 2)
    with pytest.raises(DataError) as info:
        EmmaGuard(CONFIG).fit(stratified_three_way(one, seed=0))
    one_line(info.value, "at least 2 modalities")
    no_target = MultimodalBatch.from_arrays({"a": torch.randn(60, 2), "b": torch.randn(60, 2)})
    with pytest.raises(DataError) as info:
        EmmaGuard(CONFIG).fit(stratified_three_way(no_target, seed=0, stratify=False))
    one_line(info.value, "target")
    cont = MultimodalBatch.from_arrays({"a": torch.randn(60, 2), "b": torch.randn(60, 2)},
                                       target=torch.randn(60))
    with pytest.raises(DataError) as info:
        EmmaGuard(CONFIG).fit(stratified_three_way(cont, seed=0, stratify=False))
    one_line(info.value, "continuous")


# ---------------------------------------------------------------------------- flag: the potential
def test_score_is_the_calibrated_shifted_potential(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    psi = guard.explain(test).psi
    assert psi.shape == (len(test), test.num_modalities)
    assert float(psi.min()) >= EULER - 1e-5  # shifted potentials, eq. 5.3
    cal = guard.calibration
    scores = guard.score(test)
    assert torch.allclose(scores, (psi - cal["loc"]) / cal["scale"], atol=1e-4)
    assert torch.equal(guard.flag(test), scores > 1.0)


def test_noisy_modality_gets_less_attention_after_training(fitted) -> None:
    """Moderate Gaussian noise (about the features' own spread) on one modality of the trained
    guard: that modality's potential, score and flag rate rise and its attention β falls in most
    samples (in at least 85 % for modalities of 4+ features, where the trained DAEs see the noise
    best), while the other modalities' potentials do not move. Measured when written: β falls in
    57-72 % of samples for 1-3 features, 89-99 % for 4+; with the DAEs replaced by untrained
    ones it is 27-89 % (so the thresholds fail without training)."""
    guard, splits, _ = fitted
    test = splits.test
    clean = guard.explain(test)
    clean_flags = guard.flag(test).float().mean(0)
    for i, name in enumerate(test.names):
        bad = apply_faults(test, single_fault_spec(name, "gaussian_noise", {"sigma": NOISE_SIGMA}), seed=1)
        out = guard.explain(bad)
        # potentials are per modality: the other modalities' potentials do not move
        others = [j for j in range(test.num_modalities) if j != i]
        assert torch.equal(out.psi[:, others], clean.psi[:, others]), name
        assert float(out.psi[:, i].mean()) > float(clean.psi[:, i].mean()), name
        assert float(guard.flag(bad)[:, i].float().mean()) > float(clean_flags[i]), name
        # the attention moves away from the noisy modality
        assert float(out.beta[:, i].mean()) < float(clean.beta[:, i].mean()), name
        assert float(out.alpha[:, i].mean()) < float(clean.alpha[:, i].mean()), name
        falls = float((out.beta[:, i] < clean.beta[:, i]).float().mean())
        need = 0.85 if test.spec(name).size >= 4 else 0.5
        assert falls >= need, (name, falls, need)


# ---------------------------------------------------------------------------- no transform; explain
def test_no_transform_attention_through_explain(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    with pytest.raises(SpecError) as info:
        guard.transform(test)
    one_line(info.value, "emma", "correct")
    out = guard.explain(test)
    n, m = len(test), test.num_modalities
    for field in ("psi", "self_energy", "modal_energy", "log_alpha", "alpha", "beta"):
        assert getattr(out, field).shape == (n, m), field
    assert out.shared_energy.shape == (n, m, m)
    assert torch.allclose(out.alpha.sum(-1), torch.ones(n), atol=1e-5)
    assert bool((out.beta >= 0).all()) and bool((out.beta < 1).all())


def test_predictions(fitted) -> None:
    guard, splits, _ = fitted
    test = splits.test
    logits = guard.predict_logits(test)
    assert logits.shape == (len(test), 1)
    pred = guard.predict(test)
    assert pred.shape == (len(test),) and set(pred.unique().tolist()) <= {0, 1}
    assert torch.equal(pred, (logits.squeeze(-1) >= guard.threshold).long())


# ---------------------------------------------------------------------------- save / load
def test_save_load_round_trip(fitted, tmp_path: Path) -> None:
    guard, splits, _ = fitted
    d = guard.save(tmp_path / "g")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "guard.json", "weights.safetensors"]
    meta = json.loads((d / "guard.json").read_text())
    assert meta["kind"] == "emma"
    assert meta["capabilities"] == {"flag": True, "correct": False, "predict": True}
    assert meta["state"]["threshold"] == guard.threshold and meta["state"]["num_classes"] == 2
    assert json.loads((d / "config.json").read_text()) == json.loads(guard.config.model_dump_json())
    loaded = EmmaGuard.load(d)
    assert type(load_guard(d)) is EmmaGuard and type(Guard.load(d)) is EmmaGuard
    assert loaded.specs == guard.specs and loaded.threshold == guard.threshold
    assert loaded.config == guard.config and loaded.num_classes == guard.num_classes
    test = splits.test
    assert torch.equal(loaded.predict_logits(test), guard.predict_logits(test))
    assert torch.equal(loaded.score(test), guard.score(test))
    assert torch.equal(loaded.flag(test), guard.flag(test))
    assert torch.equal(loaded.predict(test), guard.predict(test))
    a, b = guard.explain(test), loaded.explain(test)
    for field in a.__dataclass_fields__:
        assert torch.equal(getattr(a, field), getattr(b, field)), field


# ---------------------------------------------------------------------------- input errors
def _batch(mods: dict[str, torch.Tensor], n: int) -> MultimodalBatch:
    return MultimodalBatch.from_arrays(mods, target=torch.zeros(n, dtype=torch.long))


def _calls(guard: EmmaGuard):
    return (guard.score, guard.flag, guard.predict, guard.predict_logits, guard.explain)


def test_wrong_per_sample_shape(guard3) -> None:
    guard, splits = guard3
    test = splits.test
    n = len(test)
    mods = dict(test.modalities)
    mods["m1"] = torch.randn(n, 5)
    for call in _calls(guard):
        with pytest.raises(DataError) as info:
            call(_batch(mods, n))
        one_line(info.value, "'m1'", "(6,)", "(5,)")


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
    word = {"missing": "m2", "unknown": "m2", "extra": "zz"}[case]  # a rename reports the missing name
    for call in _calls(guard):
        with pytest.raises(DataError) as info:
            call(batch)
        one_line(info.value, word)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(guard3, bad: float) -> None:
    guard, splits = guard3
    test = splits.test
    x = test.modalities["m0"].clone()
    x[3, 1] = bad
    batch = test.with_modalities({"m0": x})
    for call in _calls(guard):
        with pytest.raises(DataError) as info:
            call(batch)
        one_line(info.value, "'m0'", "sample 3")


def test_unfitted_guard(tmp_path: Path) -> None:
    guard = EmmaGuard(CONFIG)
    batch = load_dataset("toy?n=20")
    for call in _calls(guard):
        with pytest.raises(NotFittedError) as info:
            call(batch)
        one_line(info.value, "not fitted")
    # a missing capability is refused first, fitted or not
    with pytest.raises(SpecError) as info:
        guard.transform(batch)
    assert not isinstance(info.value, NotFittedError)
    one_line(info.value, "correct")
    with pytest.raises(NotFittedError):
        guard.save(tmp_path / "g")
    assert not (tmp_path / "g" / "guard.json").exists()


# ---------------------------------------------------------------------------- checkpoint errors
@pytest.fixture
def saved(guard3, tmp_path: Path) -> Path:
    return guard3[0].save(tmp_path / "g")


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_load_corrupted_weights(saved: Path, how: str) -> None:
    w = saved / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes({"garbage": b"\x00\x01not a safetensors file" * 20, "truncated": data[: len(data) // 2],
                   "empty": b""}[how])
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value)


@pytest.fixture(scope="module")
def other_emma(tmp_path_factory) -> Path:
    """A saved two-modality EMMA guard (a different architecture from ``guard3``'s)."""
    other = EmmaGuard(CONFIG)
    other.fit(toy_splits(DIMS[2], n=300))
    return other.save(tmp_path_factory.mktemp("other") / "g")


def test_load_weights_of_another_architecture(saved: Path, other_emma: Path) -> None:
    ours, theirs = load_file(str(saved / "weights.safetensors")), load_file(str(other_emma / "weights.safetensors"))
    mixed = {k: v for k, v in ours.items() if not k.startswith("model.")}
    mixed.update({k: v for k, v in theirs.items() if k.startswith("model.")})
    save_file(mixed, str(saved / "weights.safetensors"))
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value, "do not match")


def test_load_architecture_of_other_modalities(saved: Path, other_emma: Path) -> None:
    meta = json.loads((saved / "guard.json").read_text())
    theirs = json.loads((other_emma / "guard.json").read_text())
    meta["state"]["architecture"] = theirs["state"]["architecture"]
    (saved / "guard.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value, "not an EMMA network")


def test_load_bad_files(saved: Path) -> None:
    cfg_path, meta_path = saved / "config.json", saved / "guard.json"
    good_cfg, good_meta = cfg_path.read_text(), json.loads(meta_path.read_text())
    cfg_path.write_text("{ not json")
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value)
    cfg_path.write_text(json.dumps({**json.loads(good_cfg), "bogus_option": 1}))
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value, "bogus_option")
    cfg_path.write_text(good_cfg)
    # the fitted state must carry EMMA's decision threshold
    state = {k: v for k, v in good_meta["state"].items() if k != "threshold"}
    meta_path.write_text(json.dumps({**good_meta, "state": state}))
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value, "malformed")
    # relabelled as another kind: EMMA's config is not that guard's config
    meta_path.write_text(json.dumps({**good_meta, "kind": "mmssl"}))
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(saved)
    one_line(info.value, "mmssl")
    meta_path.write_text(json.dumps(good_meta))
    assert isinstance(EmmaGuard.load(saved), EmmaGuard)


def test_load_missing_dir_old_layout_or_other_kind(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(tmp_path / "absent")
    one_line(info.value, "does not exist")
    # a bare model directory of the old layout (config.json + weights, no guard.json) is refused
    mlp = MLPClassifier(EnsembleMLP([0], [4, 3, 1]), 2)
    save_model(tmp_path / "mlp", mlp, {"guard": "emma"})
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(tmp_path / "mlp")
    one_line(info.value, "guard.json")
    # a complete guard directory of another kind
    mmssl = MmsslGuard(MmsslConfig(
        autoencoder=AutoencoderConfig(epochs=1, sensor_hidden=8, sensor_code=2, latent_dim=4, patience=None),
        compute=ComputeConfig(epochs=1, corruption_draws=1, detector_hidden=8, embedding_dim=4,
                              corrector_hidden=[8], recon_samples=2, patience=None)))
    mmssl.fit(toy_splits(DIMS[2], n=200), seed=0)
    d = mmssl.save(tmp_path / "mmssl")
    with pytest.raises(CheckpointError) as info:
        EmmaGuard.load(d)
    one_line(info.value, "mmssl", "emma")
    assert isinstance(load_guard(d), MmsslGuard)
