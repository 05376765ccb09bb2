"""`MmsslGuard` (registered as ``mmssl``): what is specific to MMSSL behind the Guard template.

The generic contract (calibration, seeding, the corrupted-directory corpus, the generic bad-input
corpus, affine equivariance) is checked on every registered guard in tests/contract. Here, on a
camera + kinematics set: the flag score is the detector's ‖e_m‖² calibrated by the base class;
``transform`` returns reconstructions in raw units from a *trained* MMAE; the routing gate sends a
sample through the corrector iff it is flagged in any modality, and every other sample bypasses
the corrector bit for bit; save/load is bit-identical; bad inputs and foreign directories are
one-line errors.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.registry import load_dataset
from mmguard.data.splits import Splits, stratified_three_way
from mmguard.emma.guard import EmmaGuard, EmmaGuardConfig
from mmguard.errors import CheckpointError, DataError, NotFittedError, SpecError
from mmguard.guard import Guard, GuardConfig, available_guards, load_guard
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.guard import MmsslConfig, MmsslGuard
from mmguard.mmssl.stages import decode, encode
from support import one_line

N_TEST = 60
AE_EPOCHS, COMPUTE_EPOCHS = 40, 15
# false_alarm_rate 0.1: about 6 of the 60 clean test samples are routed, so both routes occur
CONFIG = MmsslConfig(
    false_alarm_rate=0.1,
    autoencoder=AutoencoderConfig(epochs=AE_EPOCHS, lr=3e-3, batch_size=32, image_channels=[4, 8], image_code=8,
                                  sensor_hidden=16, sensor_code=4, latent_dim=8, patience=None),
    compute=ComputeConfig(epochs=COMPUTE_EPOCHS, corruption_draws=2, detector_hidden=16, corrector_hidden=[16],
                          recon_samples=4, batch_size=32, patience=None),
)


def _batch(n: int, seed: int) -> MultimodalBatch:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) % 20
    base = torch.rand(n, 1, 1, 1, generator=gen)
    camera = (base + 0.1 * torch.rand(n, 3, 16, 16, generator=gen)).clamp(0, 1)
    kin = torch.sin(t[:, None] / 3.0 + torch.arange(5)[None]).float() * 2.0 + 5.0
    return MultimodalBatch.from_arrays(
        {"camera": camera, "kinematics": kin}, meta={"episode": torch.arange(n) // 20, "t": t}
    )


def _faulty(test: MultimodalBatch) -> MultimodalBatch:
    """Camera noise on samples 0-14, a kinematics offset on 15-29, 30-59 clean."""
    gen = torch.Generator().manual_seed(7)
    cam, kin = test.modalities["camera"].clone(), test.modalities["kinematics"].clone()
    cam[:15] += 0.5 * torch.randn(cam[:15].shape, generator=gen)
    kin[15:30] += 6.0
    return test.with_modalities({"camera": cam, "kinematics": kin})


@pytest.fixture(scope="module")
def fitted() -> tuple[MmsslGuard, Splits, dict]:
    splits = Splits(train=_batch(120, 0), val=_batch(60, 1), test=_batch(N_TEST, 2))
    guard = MmsslGuard(CONFIG)
    report = guard.fit(splits, seed=0)
    return guard, splits, report




def paths(guard: MmsslGuard, batch: MultimodalBatch) -> tuple[MultimodalBatch, MultimodalBatch]:
    """Both routes for every sample, in raw units, built by hand from the guard's parts:
    the plain reconstruction decode(z) and the corrected one decode(C(z))."""
    std = guard.standardizer.transform(batch)
    with torch.no_grad():
        z, _, corrected = guard.model.detect(std.modalities)
        plain = decode(guard.model.mmae, encode(guard.model.mmae, std.modalities))
        fixed = decode(guard.model.mmae, corrected)
    assert torch.equal(encode(guard.model.mmae, std.modalities), z)
    return (guard.standardizer.inverse(std.with_modalities(plain)),
            guard.standardizer.inverse(std.with_modalities(fixed)))


def routed_samples(out: MultimodalBatch, plain: MultimodalBatch) -> torch.Tensor:
    """(N,) True where the guard's output differs from the plain reconstruction anywhere."""
    routed = torch.zeros(len(out), dtype=torch.bool)
    for n in out.names:
        routed |= (out.modalities[n] != plain.modalities[n]).flatten(1).any(1)
    return routed


# ---------------------------------------------------------------------------- registration
def test_registered_as_mmssl() -> None:
    assert issubclass(MmsslGuard, Guard) and MmsslGuard.name == "mmssl"
    assert available_guards()["mmssl"] is MmsslGuard
    assert MmsslGuard.capabilities() == {"flag": True, "correct": True, "predict": False}
    assert MmsslGuard.config_class is MmsslConfig and issubclass(MmsslConfig, GuardConfig)
    # the nested pydantic config: dicts are validated section by section
    g = MmsslGuard({"autoencoder": {"epochs": 3}, "compute": {"corrector_hidden": [8]}})
    assert g.config.autoencoder == AutoencoderConfig(epochs=3)
    assert g.config.compute == ComputeConfig(corrector_hidden=[8])
    with pytest.raises(SpecError) as info:
        MmsslGuard({"compute": {"lipschitz_bound": 1.5}})  # the corrector must be a contraction
    one_line(info.value, "compute.lipschitz_bound")


# ---------------------------------------------------------------------------- fit and flag
def test_fit_report_and_detector_scores(fitted):
    guard, splits, report = fitted
    assert report["mmae"]["epochs_run"] == AE_EPOCHS and report["compute"]["epochs_run"] == COMPUTE_EPOCHS
    assert report["calibration"]["false_alarm_rate"] == CONFIG.false_alarm_rate
    json.dumps(report)
    test = splits.test
    scores = guard.score(test)
    assert scores.shape == (N_TEST, 2) and bool(torch.isfinite(scores).all())
    # the normalised score is the detector's s_m = ||e_m||^2 (>= 0) on the calibrated scale
    std = guard.standardizer.transform(test)
    with torch.no_grad():
        raw = guard.model.detect(std.modalities)[1]
    assert bool((raw >= 0).all())
    cal = guard.calibration
    assert torch.allclose(scores, (raw - cal["loc"]) / cal["scale"], atol=1e-4)
    flagged = guard.flag(test).any(1)
    assert flagged.shape == (N_TEST,) and flagged.dtype == torch.bool


def test_fit_takes_raw_splits_only(fitted):
    _, splits, _ = fitted
    fresh = MmsslGuard(CONFIG)
    with pytest.raises(DataError) as info:
        fresh.fit(splits.standardize())
    one_line(info.value, "raw")
    assert not fresh.fitted


# ---------------------------------------------------------------------------- correct: raw units and routing
def test_transform_reconstructs_in_raw_units(fitted):
    """The trained MMAE's reconstructions come back in the input's units: on clean test samples the
    error is a small fraction of the data's variance (standardised output, or an untrained MMAE that
    returns the mean, would be off by about the variance or more). Measured when written: 0.04 of
    the variance for both modalities."""
    guard, splits, _ = fitted
    test = splits.test
    out = guard.transform(test)
    assert out.names == test.names
    for name in test.names:
        x, y = test.modalities[name], out.modalities[name]
        assert y.shape == x.shape and y.dtype == x.dtype
        ratio = float((y - x).pow(2).mean() / x.var())
        assert ratio < 0.2, (name, ratio)
    # the kinematics are centred near 5, not near 0
    assert float(out.modalities["kinematics"].mean()) == pytest.approx(5.0, abs=0.5)


def test_routing_and_exact_bypass_per_sample(fitted):
    """On a batch with faults in either modality: the flagged samples (in any modality) and only
    they go through the corrector, decode(C(z)); every other sample is decode(z) bit for bit."""
    guard, splits, _ = fitted
    bad = _faulty(splits.test)
    out = guard.transform(bad)
    flagged = guard.flag(bad).any(1)
    assert 0 < int(flagged.sum()) < N_TEST, int(flagged.sum())
    plain, fixed = paths(guard, bad)
    keep = ~flagged
    for name in bad.names:
        assert torch.equal(out.modalities[name][keep], plain.modalities[name][keep]), name
        assert torch.allclose(out.modalities[name][flagged], fixed.modalities[name][flagged], atol=1e-5), name
    assert torch.equal(routed_samples(out, plain), flagged)


@pytest.mark.parametrize("k", [0, 1], ids=["camera", "kinematics"])
def test_routing_follows_a_flag_in_either_modality(fitted, k: int):
    """Recalibrated so that only modality k can flag (about half the samples): exactly those samples
    are routed, so the gate is "flagged in any modality", not one modality's or a pooled score."""
    guard, splits, _ = fitted
    test = splits.test
    g = copy.deepcopy(guard)
    cal = guard.calibration
    raw = guard.score(test) * cal["scale"] + cal["loc"]
    loc, scale = raw.amax(0) + 1.0, torch.ones(2)  # nothing flags in the other modality
    q25, q50 = torch.quantile(raw[:, k], torch.tensor([0.25, 0.5]))
    loc[k], scale[k] = q25, q50 - q25  # modality k flags above its median
    g.calibration = {"loc": loc, "scale": scale}
    flags = g.flag(test)
    assert not bool(flags[:, 1 - k].any())
    assert 20 <= int(flags[:, k].sum()) <= 40, int(flags[:, k].sum())
    out = g.transform(test)
    plain, _ = paths(g, test)
    assert torch.equal(routed_samples(out, plain), flags[:, k])


# ---------------------------------------------------------------------------- save / load
def test_save_load_roundtrip(fitted, tmp_path: Path):
    guard, splits, _ = fitted
    d = guard.save(tmp_path / "g")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "guard.json", "weights.safetensors"]
    meta = json.loads((d / "guard.json").read_text())
    assert meta["kind"] == "mmssl" and meta["capabilities"] == MmsslGuard.capabilities()
    assert [m["name"] for m in meta["modalities"]] == ["camera", "kinematics"]
    assert json.loads((d / "config.json").read_text()) == json.loads(guard.config.model_dump_json())
    again = MmsslGuard.load(d)
    assert type(load_guard(d)) is MmsslGuard and again.config == guard.config
    for batch in (splits.test, _faulty(splits.test)):
        assert torch.equal(again.score(batch), guard.score(batch))
        assert torch.equal(again.flag(batch), guard.flag(batch))
        a, b = guard.transform(batch), again.transform(batch)
        for name in batch.names:
            assert torch.equal(a.modalities[name], b.modalities[name]), name


# ---------------------------------------------------------------------------- errors
def test_bad_inputs(fitted):
    guard, splits, _ = fitted
    test = splits.test
    unfitted = MmsslGuard(CONFIG)
    for call in (unfitted.score, unfitted.flag, unfitted.transform):
        with pytest.raises(NotFittedError) as info:
            call(test)
        one_line(info.value, "not fitted")
    with pytest.raises(SpecError) as info:
        guard.predict(test)
    one_line(info.value, "predict")
    camera_only = MultimodalBatch.from_arrays({"camera": test.modalities["camera"]})
    small = MultimodalBatch.from_arrays({"camera": test.modalities["camera"][..., :8, :8],
                                         "kinematics": test.modalities["kinematics"]}, kinds={"camera": "image"})
    nan = test.with_modalities({"kinematics": torch.full_like(test.modalities["kinematics"], float("nan"))})
    for batch, words in ((camera_only, ("missing", "kinematics")), (small, ("camera", "shape")),
                         (nan, ("kinematics", "nan"))):
        for call in (guard.score, guard.flag, guard.transform):
            with pytest.raises(DataError) as info:
                call(batch)
            one_line(info.value, *words)


def test_load_errors(tmp_path: Path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "guard.json").write_text(json.dumps({"guard": "emma"}))  # the old layout's key
    with pytest.raises(CheckpointError) as info:
        MmsslGuard.load(tmp_path / "x")
    one_line(info.value, "kind")
    with pytest.raises(CheckpointError) as info:
        MmsslGuard.load(tmp_path / "absent")
    one_line(info.value, "does not exist")
    emma = EmmaGuard(EmmaGuardConfig(epochs=2, dae_epochs=2))
    emma.fit(stratified_three_way(load_dataset("toy?n=300"), seed=0), seed=0)
    d = emma.save(tmp_path / "emma")
    with pytest.raises(CheckpointError) as info:
        MmsslGuard.load(d)
    one_line(info.value, "emma", "mmssl")


def test_paper_literal_corrector_clips_but_may_expand(fitted):
    """``corrector: clip_only`` trains the compute block without the spectral projection (issue #11):
    the full guard's corrector is a contraction (bound below 1), the literal one's bound is not capped."""
    guard, splits, _ = fitted
    literal = MmsslGuard(CONFIG.model_copy(update={"corrector": "clip_only"}))
    literal.fit(splits, seed=0)
    full_bound = float(guard.model.block.corrector.lipschitz_upper_bound().max())
    literal_bound = float(literal.model.block.corrector.lipschitz_upper_bound().max())
    assert full_bound < 1.0
    assert literal_bound > full_bound
    fixed = literal.transform(_faulty(splits.test))
    assert fixed.names == splits.test.names and all(
        bool(torch.isfinite(fixed.modalities[n]).all()) for n in fixed.names)
    with pytest.raises(SpecError, match="corrector"):
        MmsslGuard({**CONFIG.model_dump(), "corrector": "projection_only"})
