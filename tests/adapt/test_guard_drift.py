"""Drift detection and input-statistics adaptation through the Guard API (src/mmguard/guard.py).

The guard is the ``dae`` baseline (flags and corrects, fits in well under a second in quick
mode) on the contract's raw vector data (three modalities at offsets 50/100/150, spread ~10;
tests/contract/test_guard_contract.py). Expectations from the math:

* the drift test standardises raw input with the *training* statistics, adapted or not;
* ``adapt(window)`` re-standardises with the window's own statistics: the window itself then
  has mean 0 and (population) std 1 per feature (weighted by the class-balanced weights when
  class probabilities are given), and a per-feature gain/offset drift of the window is removed
  exactly — the adapted guard sees the drifted window as the undrifted one;
* ``reset_adaptation`` is the guard as fitted, bit for bit.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from adapt_testutil import channel_means
from safetensors.torch import load_file, save_file

from contract.test_guard_contract import vector_batch
from mmguard.adapt.drift import DriftMonitor
from mmguard.adapt.stats import class_balanced_weights
from mmguard.data.model import MultimodalBatch, concat_batches
from mmguard.data.splits import Splits, make_splits
from mmguard.errors import CheckpointError, DataError, NotFittedError
from mmguard.guard import Guard, GuardDriftMonitor, create_guard, load_guard
from support import one_line

GUARD = "dae"
DRIFT = {"window": 40, "step": 10, "alpha": 0.01, "null_windows": 1000}


@dataclass
class Fitted:
    guard: Guard
    splits: Splits
    report: dict
    directory: Path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Fitted:
    splits = make_splits(vector_batch(600), seed=0)
    guard = create_guard(GUARD, {"drift": DRIFT}, quick=True)
    report = guard.fit(splits, seed=0)
    directory = guard.save(tmp_path_factory.mktemp("guard") / "g")
    return Fitted(guard, splits, report, directory)


def train_std(splits: Splits, name: str) -> torch.Tensor:
    return splits.train.modalities[name].double().std(0).float()


def shifted(splits: Splits, batch: MultimodalBatch, name: str, k: float = 1.0) -> MultimodalBatch:
    """Every feature of modality ``name`` moved by ``k`` training standard deviations (raw units)."""
    return batch.with_modalities({name: batch.modalities[name] + k * train_std(splits, name)})


def gain_offset(batch: MultimodalBatch, seed: int) -> MultimodalBatch:
    """Per-feature gain in [0.5, 2] and offset in [-20, 20] raw units (two spreads) on every modality."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, x in batch.modalities.items():
        d = x.shape[1]
        out[n] = x * (0.5 + 1.5 * torch.rand(d, generator=g)) + (40 * torch.rand(d, generator=g) - 20)
    return batch.with_modalities(out)


# ============================================================================ drift test
def test_fit_fits_a_drift_detector(fitted: Fitted) -> None:
    det = fitted.guard.drift_detector
    assert det is not None and det.names == fitted.guard.names
    assert det.window == 40 and det.config.alpha == 0.01
    assert fitted.report["drift"] == {"window": 40}
    json.dumps(fitted.report)


def test_drift_test_clean_held_out_versus_shifted(fitted: Fitted) -> None:
    """Clean held-out window: flagged with probability ≤ alpha = 0.01. A 1-std shift of every feature
    of v1: v1 flagged; v0 and v2 unchanged, each flagged with probability ≤ alpha."""
    g, test = fitted.guard, fitted.splits.test
    clean = g.drift_test(test)
    assert clean.names == g.names and clean.ratio.shape == (3,)
    assert not clean.drifted, clean.to_dict()
    moved = g.drift_test(shifted(fitted.splits, test, "v1"))
    assert moved.drifted and moved.to_dict()["flagged"] == ["v1"], moved.to_dict()
    # the raw batch goes through the training statistics, then the detector's test of its last window
    det, st = g.drift_detector, g.standardizer
    assert det is not None and st is not None
    assert torch.equal(moved.ratio, det.test(st.transform(shifted(fitted.splits, test, "v1"))).ratio)


def test_drift_test_refuses_bad_input(fitted: Fitted) -> None:
    g, test = fitted.guard, fitted.splits.test
    with pytest.raises(DataError) as info:
        g.drift_test(test.select(slice(0, 39)))
    one_line(info.value, "40")
    other = MultimodalBatch.from_arrays({n: test.modalities[n] for n in ("v0", "v1")})
    with pytest.raises(DataError):
        g.drift_test(other)


def test_drift_test_ignores_adaptation(fitted: Fitted) -> None:
    g = fitted.guard
    moved = shifted(fitted.splits, fitted.splits.test, "v1")
    before = g.drift_test(moved)
    g.adapt(moved)
    try:
        assert g.adapted
        assert torch.equal(g.drift_test(moved).ratio, before.ratio)  # still against training units
    finally:
        g.reset_adaptation()


def test_drift_monitor_takes_raw_chunks(fitted: Fitted) -> None:
    g, test = fitted.guard, fitted.splits.test
    stream = concat_batches([test.select(slice(0, 40)), shifted(fitted.splits, test.select(slice(40, 99)), "v1")])
    mon = g.drift_monitor()
    assert isinstance(mon, GuardDriftMonitor) and mon.step == 10
    ref = DriftMonitor(g.drift_detector)  # type: ignore[arg-type]
    got, expected = [], []
    for i in range(0, len(stream), 13):
        chunk = stream.select(slice(i, i + 13))
        got += mon.update(chunk)
        expected += ref.update(g.standardizer.transform(chunk))  # type: ignore[union-attr]
    assert [c for c, _ in got] == [c for c, _ in expected] == list(range(40, 100, 10))
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert torch.equal(a.ratio, b.ratio)
    # the shift starts at sample 40: the first fully shifted window ends at 80, the test after at most 89
    assert mon.first_alarm is not None and mon.first_alarm <= 89, mon.first_alarm
    with pytest.raises(DataError):
        mon.update(MultimodalBatch.from_arrays({"v0": torch.zeros(3, 4)}))


# ============================================================================ persistence and drift: null
def test_save_and_load_keep_the_drift_detector(fitted: Fitted) -> None:
    g = fitted.guard
    loaded = load_guard(fitted.directory)
    meta = json.loads((fitted.directory / "guard.json").read_text())
    assert meta["drift"]["config"]["window"] == 40
    a, b = g.drift_detector, loaded.drift_detector
    assert a is not None and b is not None
    assert b.config == a.config and b.names == a.names
    for n in a.names:
        assert torch.equal(a.reference[n], b.reference[n])
    assert torch.equal(a.loc, b.loc) and torch.equal(a.scale, b.scale)
    for batch in (fitted.splits.test, shifted(fitted.splits, fitted.splits.test, "v2", 0.5)):
        ra, rb = g.drift_test(batch), loaded.drift_test(batch)
        assert torch.allclose(ra.ratio, rb.ratio, rtol=0, atol=1e-4), (ra.ratio, rb.ratio)
        assert torch.equal(ra.flagged, rb.flagged)
    assert loaded.drift_monitor().detector is b


def test_a_guard_fitted_without_drift_detection(fitted: Fitted, tmp_path: Path) -> None:
    g = create_guard(GUARD, {"drift": None}, quick=True)
    with pytest.raises(NotFittedError):  # not fitted at all yet
        g.drift_test(fitted.splits.test)
    report = g.fit(fitted.splits, seed=0)
    assert "drift" not in report and g.drift_detector is None
    for guard in (g, load_guard(g.save(tmp_path / "g"))):
        with pytest.raises(NotFittedError) as info:
            guard.drift_test(fitted.splits.test)
        one_line(info.value, "drift")
        with pytest.raises(NotFittedError):
            guard.drift_monitor()
        guard.flag(fitted.splits.test)  # the rest of the guard works


# ============================================================================ adaptation
def test_adapt_standardises_the_window(fitted: Fitted) -> None:
    g = fitted.guard
    window = gain_offset(fitted.splits.test, 1)
    st = g.adapt(window)
    try:
        x = g._prepare(window)
        for n in g.names:
            v = x.modalities[n].double()
            assert torch.allclose(v.mean(0), torch.zeros(v.shape[1], dtype=torch.float64), atol=1e-4), n
            assert torch.allclose(v.std(0, unbiased=False), torch.ones(v.shape[1], dtype=torch.float64),
                                  atol=1e-4), n
            assert torch.allclose(st.transform(window).modalities[n], x.modalities[n])
    finally:
        g.reset_adaptation()


def test_adapt_with_class_probabilities_uses_class_balanced_weights(fitted: Fitted) -> None:
    g = fitted.guard
    window = fitted.splits.test
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(3 * torch.randn(len(window), 2, generator=gen), 1)
    prior = torch.tensor([0.8, 0.2])
    g.adapt(window, probs, prior)
    try:
        w = class_balanced_weights(probs, prior)
        x = g._prepare(window)
        for n in g.names:
            m = channel_means(x.modalities[n], w)
            assert torch.allclose(m, torch.zeros_like(m), atol=1e-4), n
            assert float(x.modalities[n].double().mean(0).abs().max()) > 1e-2  # unweighted: not centred
    finally:
        g.reset_adaptation()
    with pytest.raises(DataError):
        g.adapt(window, probs[:-1], prior)
    with pytest.raises(DataError):
        g.adapt(window, probs, None)
    with pytest.raises(DataError):
        g.adapt(window.select(slice(0, 1)))
    assert not g.adapted


def test_adapt_removes_gain_and_offset_drift(fitted: Fitted) -> None:
    """Window standardisation is invariant to a per-feature affine map with positive gains, so the
    adapted guard returns (in training units) for the drifted window what it returns for the clean
    window adapted to itself — close to the clean data, unlike the unadapted guard."""
    g = fitted.guard
    clean = fitted.splits.test
    drifted = gain_offset(clean, 2)
    unadapted = g.transform(drifted)
    g.adapt(drifted)
    out_drifted = g.transform(drifted)
    flag_adapted = float(g.flag(drifted).any(1).float().mean())
    g.adapt(clean)
    out_clean = g.transform(clean)
    g.reset_adaptation()
    flag_unadapted = float(g.flag(drifted).any(1).float().mean())
    for n in g.names:
        assert torch.allclose(out_drifted.modalities[n], out_clean.modalities[n], rtol=1e-4, atol=1e-2), n
        err_adapted = float((out_drifted.modalities[n] - clean.modalities[n]).pow(2).mean())
        err_unadapted = float((unadapted.modalities[n] - clean.modalities[n]).pow(2).mean())
        assert err_adapted <= 0.25 * err_unadapted, (n, err_adapted, err_unadapted)
    # flagged: almost every drifted sample unadapted; about the clean rate once adapted
    assert flag_unadapted >= 0.8 and flag_adapted <= 0.2, (flag_unadapted, flag_adapted)


def test_reset_adaptation_restores_the_exact_outputs(fitted: Fitted) -> None:
    g = fitted.guard
    test = fitted.splits.test
    before = (g.score(test), g.transform(test))
    assert not g.adapted
    g.adapt(gain_offset(test, 4))
    assert g.adapted
    assert not torch.equal(g.score(test), before[0])
    g.reset_adaptation()
    assert not g.adapted
    assert torch.equal(g.score(test), before[0])
    after = g.transform(test)
    for n in g.names:
        assert torch.equal(after.modalities[n], before[1].modalities[n]), n
    # loading never restores an adaptation
    g.adapt(test)
    assert not load_guard(fitted.directory).adapted
    g.reset_adaptation()


# ============================================================================ corrupted drift state
def _edit_tensors(d: Path, edit) -> None:
    w = d / "weights.safetensors"
    tensors = load_file(str(w))
    edit(tensors)
    save_file(tensors, str(w))


def _edit_meta(d: Path, edit) -> None:
    meta = json.loads((d / "guard.json").read_text())
    edit(meta)
    (d / "guard.json").write_text(json.dumps(meta))


CORRUPTIONS = {
    "drift tensor dropped": lambda d: _edit_tensors(d, lambda t: t.pop("drift.krr")),
    "drift reference dropped": lambda d: _edit_tensors(d, lambda t: t.pop("drift.reference.v1")),
    "drift scale of 2 modalities": lambda d: _edit_tensors(
        d, lambda t: t.__setitem__("drift.scale", t["drift.scale"][:2].clone())),
    # v0 has 4 features; a reference of 3 features cannot be that modality's reference
    "drift reference of the wrong feature count": lambda d: _edit_tensors(
        d, lambda t: t.__setitem__("drift.reference.v0", t["drift.reference.v0"][:, :3].clone())),
    "drift config invalid": lambda d: _edit_meta(d, lambda m: m["drift"]["config"].__setitem__("window", 1)),
    "drift section not a mapping": lambda d: _edit_meta(d, lambda m: m.__setitem__("drift", [1, 2])),
}


@pytest.mark.parametrize("label", list(CORRUPTIONS))
def test_corrupted_drift_state_is_a_checkpoint_error(fitted: Fitted, tmp_path: Path, label: str) -> None:
    """As for every other part of a guard directory (tests/contract): load_guard refuses it with a
    one-line CheckpointError, rather than loading a detector that fails or misleads later."""
    d = tmp_path / "g"
    shutil.copytree(fitted.directory, d)
    CORRUPTIONS[label](d)
    with pytest.raises(CheckpointError) as info:
        load_guard(d)
    one_line(info.value)
