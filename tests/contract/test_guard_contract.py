"""The guard contract, checked on every registered guard (a newly registered guard gets it for free).

Each guard is fitted once per data kind it accepts with its class's ``quick_config``, merged with
overrides chosen from what the guard *is* (its config schema and capabilities), never its name:

* ``false_alarm_rate = 0.1`` (a GuardConfig field every guard has) so that the calibration check
  has resolution on a validation split of a few dozen samples;
* a two-block image encoder (``image_channels = [4, 8]``) in every section of a guard's config that
  is an :class:`AutoencoderConfig` (``autoencoder``, ``detector``, ...), on image data only, for speed.

Data: a *vector* set (three vector modalities driven by a shared 2-d latent, binary target, a
``t`` meta field); for guards whose ``modality_kinds`` include ``image``, an *image* set (a
3x16x16 camera and a 5-d kinematics vector, both functions of one latent, in 12 episodes); for
those that include ``timeseries``, a *timeseries* set (an 8x3 series and a 4-d vector). Every
raw feature sits at an offset of 50 or more with a spread of about 10, so an output left in
standardised units (mean 0, spread 1) cannot pass for raw units.

The contract (src/mmguard/guard.py): fit on raw splits returns a JSON-ready dict, standardised
splits are refused; ``score`` is (N, M) finite floats calibrated so that at most
``false_alarm_rate`` of clean validation samples are flagged, ``flag`` is ``score > 1``;
``transform`` keeps names, shapes, dtype, target and meta and returns raw units; ``predict``
returns (N,) integer classes; a missing capability is a ``SpecError`` naming it; save/load is
bit-identical and refuses corrupted directories with a ``CheckpointError``; an unfitted guard
raises ``NotFittedError``; fitting is seeded; bad inputs are one-line ``MMGuardError``s.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

import mmguard.guard as guard_mod
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits
from mmguard.errors import CheckpointError, DataError, MMGuardError, NotFittedError, SpecError
from mmguard.guard import Guard, GuardConfig, available_guards, create_guard, load_guard, load_plugin, register_guard
from mmguard.mmssl.config import AutoencoderConfig
from support import one_line

GUARDS = available_guards()
NAMES = sorted(GUARDS)
ALPHA = 0.1
OFFSET = 50.0
SPREAD = 10.0
CAPABILITY_METHODS = {"flag": ("score", "flag"), "correct": ("transform",), "predict": ("predict",)}


# ============================================================================ data
def vector_batch(n: int = 360, seed: int = 0) -> MultimodalBatch:
    """Three vector modalities (4, 5, 3 features) of one 2-d latent, offsets 50/100/150, spread ~10."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mods = {}
    for i, d in enumerate((4, 5, 3)):
        w = rng.normal(size=(2, d))
        w /= np.linalg.norm(w, axis=0, keepdims=True)
        mods[f"v{i}"] = SPREAD * (z @ w) + 0.3 * rng.normal(size=(n, d)) + OFFSET * (i + 1)
    y = (z[:, 0] + 0.3 * z[:, 1] > 0).astype(np.int64)
    return MultimodalBatch.from_arrays(mods, target=y, meta={"t": np.arange(n)})


def image_batch(n_episodes: int = 12, steps: int = 20, seed: int = 0, *, with_vector: bool = True
                ) -> MultimodalBatch:
    """A 3x16x16 camera (smooth patterns weighted by a 2-d latent; channel offsets 50/100/150) and
    a 5-d kinematics vector of the same latent."""
    rng = np.random.default_rng(seed)
    n = n_episodes * steps
    z = rng.normal(size=(n, 2))
    yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    pattern_a, pattern_b = np.stack([xx, yy, xx * yy])[None], np.stack([yy, xx, xx**2 - 0.3])[None]
    camera = SPREAD * (z[:, 0, None, None, None] * pattern_a + z[:, 1, None, None, None] * pattern_b)
    camera += 0.1 * rng.normal(size=camera.shape) + OFFSET * np.arange(1, 4)[None, :, None, None]
    mods: dict[str, np.ndarray] = {"camera": camera}
    if with_vector:
        kin = np.concatenate([z, np.tanh(z), z[:, :1] * z[:, 1:]], 1)
        mods["kin"] = SPREAD * kin + 0.1 * rng.normal(size=kin.shape) + 2 * OFFSET
    y = (z[:, 0] > 0).astype(np.int64)
    return MultimodalBatch.from_arrays(mods, target=y,
                                       meta={"episode": np.repeat(np.arange(n_episodes), steps),
                                             "t": np.tile(np.arange(steps), n_episodes)})


def timeseries_batch(n: int = 300, seed: int = 0, *, with_vector: bool = True) -> MultimodalBatch:
    """An (8 steps x 3 channels) series (sines whose phase and amplitude follow a 2-d latent,
    channel offsets 50/100/150) and a 4-d vector of the same latent."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    t = np.linspace(0, 2 * np.pi, 8)[None, :, None]
    series = SPREAD * np.sin(t + z[:, 0, None, None] + np.arange(3)[None, None]) * (1 + 0.3 * z[:, 1, None, None])
    series += 0.1 * rng.normal(size=series.shape) + OFFSET * np.arange(1, 4)[None, None, :]
    mods: dict[str, np.ndarray] = {"series": series}
    if with_vector:
        vec = np.concatenate([z, np.tanh(z)], 1)
        mods["vec"] = SPREAD * vec + 0.1 * rng.normal(size=vec.shape) + OFFSET
    y = (z[:, 0] > 0).astype(np.int64)
    return MultimodalBatch.from_arrays(mods, target=y, meta={"t": np.arange(n)})


def data_for(kind: str, cls: type[Guard]) -> MultimodalBatch:
    if kind == "vector":
        return vector_batch()
    if kind == "timeseries":
        return timeseries_batch(with_vector="vector" in cls.modality_kinds)
    return image_batch(with_vector="vector" in cls.modality_kinds)


def overrides_for(cls: type[Guard], kind: str) -> dict[str, Any]:
    """Contract overrides chosen from the guard's config schema, not its name (see the docstring)."""
    over: dict[str, Any] = {"false_alarm_rate": ALPHA}
    if kind == "image":
        for field, info in cls.config_class.model_fields.items():
            if info.annotation is AutoencoderConfig:  # every autoencoder section (MMAE-style encoders)
                over[field] = {"image_channels": [4, 8]}
    return over


def make_guard(name: str, kind: str) -> Guard:
    return create_guard(name, overrides_for(GUARDS[name], kind), quick=True)


def cases() -> list[Any]:
    out = []
    for name in NAMES:
        kinds = GUARDS[name].modality_kinds
        if "vector" in kinds:
            out.append(pytest.param((name, "vector"), id=f"{name}-vector"))
        if "image" in kinds:
            out.append(pytest.param((name, "image"), id=f"{name}-image"))
        if "timeseries" in kinds:
            out.append(pytest.param((name, "timeseries"), id=f"{name}-timeseries"))
    return out


@dataclass
class Fitted:
    name: str
    kind: str
    guard: Guard
    splits: Splits
    report: Any
    directory: Path


@pytest.fixture(scope="module", params=cases())
def fitted(request, tmp_path_factory) -> Fitted:
    name, kind = request.param
    splits = make_splits(data_for(kind, GUARDS[name]), seed=0)
    guard = make_guard(name, kind)
    report = guard.fit(splits, seed=0)
    directory = guard.save(tmp_path_factory.mktemp(f"{name}-{kind}") / "guard")
    return Fitted(name, kind, guard, splits, report, directory)


# ============================================================================ helpers
def capabilities(guard: Guard) -> dict[str, bool]:
    return {"flag": guard.flags, "correct": guard.corrects, "predict": guard.predicts}


def outputs(guard: Guard, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
    """Every output the guard's capabilities allow, as tensors."""
    out: dict[str, torch.Tensor] = {}
    if guard.flags:
        out["score"] = guard.score(batch)
        out["flag"] = guard.flag(batch)
    if guard.corrects:
        fixed = guard.transform(batch)
        out.update({f"transform.{n}": fixed.modalities[n] for n in fixed.names})
    if guard.predicts:
        out["predict"] = guard.predict(batch)
    return out


def replace_modalities(batch: MultimodalBatch, mods: dict[str, Any]) -> MultimodalBatch:
    kinds = {s.name: s.kind.value for s in batch.specs if s.name in mods}
    return MultimodalBatch.from_arrays(mods, target=batch.target, kinds=kinds, meta=batch.meta)


def check_score_and_flag(guard: Guard, batch: MultimodalBatch) -> None:
    scores = guard.score(batch)
    assert isinstance(scores, torch.Tensor)
    assert tuple(scores.shape) == (len(batch), batch.num_modalities)
    assert scores.is_floating_point()
    assert bool(torch.isfinite(scores).all())
    flags = guard.flag(batch)
    assert flags.dtype == torch.bool and flags.shape == scores.shape
    assert torch.equal(flags, scores > 1.0)


def check_calibration(guard: Guard, val: MultimodalBatch) -> None:
    """Clean validation: flagged in any modality on at most alpha (one boundary sample of slack)."""
    alpha = guard.config.false_alarm_rate
    flagged = float(guard.flag(val).any(1).float().mean())
    slack = 1.0 / len(val)
    assert flagged <= alpha + slack, (flagged, alpha, len(val))
    # and the threshold is not simply above every score: about alpha of validation is flagged
    assert flagged >= alpha - 3.0 * slack, (flagged, alpha, len(val))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per feature (vectors) or per channel (images, time series: last-but-spatial axis)."""
    x = x.double()
    dims = (0,) if x.ndim == 2 else (0, 1) if x.ndim == 3 else (0, 2, 3)
    return x.mean(dim=dims), x.std(dim=dims)


def check_transform_raw_units(guard: Guard, batch: MultimodalBatch) -> None:
    """Same names, shapes, dtype, target and meta; values in raw units (how well the guard
    reconstructs is the learning test's business, so only the location is checked here)."""
    fixed = guard.transform(batch)
    assert isinstance(fixed, MultimodalBatch)
    assert fixed.names == batch.names
    for s in batch.specs:
        x, y = batch.modalities[s.name], fixed.modalities[s.name]
        assert y.shape == x.shape and y.dtype == x.dtype, s.name
        assert fixed.spec(s.name).kind == s.kind
        assert bool(torch.isfinite(y).all()), s.name
        # raw units: the per-feature (per-channel) means follow the input's offsets of 50 to 150,
        # within a quarter of the spread; standardised output would sit at 0
        mean_x, std_x = channel_stats(x)
        mean_y, _ = channel_stats(y)
        gap = (mean_y - mean_x).abs() / std_x
        assert float(gap.max()) < 0.25, (s.name, gap.tolist())
        assert float(mean_y.min()) > OFFSET / 2, (s.name, mean_y.tolist())
    assert torch.equal(fixed.target, batch.target)
    assert set(fixed.meta) == set(batch.meta)
    for k in batch.meta:
        assert torch.equal(fixed.meta[k], batch.meta[k]), k


def check_predict(guard: Guard, batch: MultimodalBatch) -> None:
    pred = guard.predict(batch)
    assert isinstance(pred, torch.Tensor)
    assert tuple(pred.shape) == (len(batch),)
    assert not pred.is_floating_point() and pred.dtype != torch.bool, pred.dtype
    classes = set(batch.target.unique().tolist())
    assert set(pred.unique().tolist()) <= classes


def check_round_trip(guard: Guard, directory: Path, batch: MultimodalBatch) -> Guard:
    loaded = load_guard(directory)
    assert type(loaded) is type(guard)
    assert loaded.names == guard.names
    assert loaded.config == guard.config
    assert loaded.fitted
    a, b = outputs(guard, batch), outputs(loaded, batch)
    assert set(a) == set(b) and a
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k
    return loaded


# ============================================================================ the contract
def test_fit_on_raw_splits_returns_a_json_ready_report(fitted: Fitted) -> None:
    assert isinstance(fitted.report, dict)
    json.dumps(fitted.report)  # JSON-ready, as the template promises
    assert fitted.guard.fitted
    assert fitted.guard.names == fitted.splits.train.names
    if fitted.guard.flags:
        assert fitted.report["calibration"]["false_alarm_rate"] == ALPHA


def test_streaming_guards_fit_from_disk_under_the_same_contract(fitted: Fitted) -> None:
    """A guard with ``streams`` fits from row sources (data larger than memory) and then passes the same
    checks: scores, calibration on the clean validation split, raw-unit transform; others refuse in one
    line. (Sources here wrap the contract's in-memory splits; tests/data/test_data_stream.py reads files.)"""
    from mmguard.data.stream import TensorSource

    guard = make_guard(fitted.name, fitted.kind)
    train, val = TensorSource(fitted.splits.train, block_rows=16), TensorSource(fitted.splits.val, block_rows=16)
    if not guard.streams:
        with pytest.raises(SpecError) as e:
            guard.fit_stream(train, val, seed=0)
        assert "does not train from a stream" in str(e.value) and "\n" not in str(e.value)
        return
    report = guard.fit_stream(train, val, seed=0, buffer_bytes=48 * train.row_bytes(),
                              chunk_bytes=20 * train.row_bytes())
    json.dumps(report)
    assert report["streamed"]["train"] == len(fitted.splits.train)
    if guard.flags:
        check_score_and_flag(guard, fitted.splits.test)
        check_calibration(guard, fitted.splits.val)
    if guard.corrects:
        check_transform_raw_units(guard, fitted.splits.test)
    # the streamed statistics are those of the loaded split (float64 rounding aside)
    for n in guard.names:
        torch.testing.assert_close(guard.standardizer.mean[n], fitted.guard.standardizer.mean[n], rtol=1e-5,
                                   atol=1e-5)


def test_fit_refuses_standardised_splits(fitted: Fitted) -> None:
    std = fitted.splits.standardize()
    assert std.standardized
    guard = make_guard(fitted.name, fitted.kind)
    with pytest.raises(DataError) as info:
        guard.fit(std, seed=0)
    one_line(info.value, "raw")
    assert not guard.fitted


@pytest.mark.parametrize("name", NAMES)
def test_fit_refuses_data_the_guard_does_not_declare(name: str) -> None:
    """modality_kinds, min_modalities and needs_target are enforced with one-line DataErrors."""
    cls = GUARDS[name]
    cases: list[tuple[MultimodalBatch, tuple[str, ...]]] = []
    if "image" not in cls.modality_kinds:
        cases.append((image_batch(), ("camera", "image")))
    if "timeseries" not in cls.modality_kinds:
        cases.append((timeseries_batch(), ("series", "timeseries")))
    if "vector" not in cls.modality_kinds:
        cases.append((vector_batch(), ("v0", "vector")))
    if cls.needs_target:
        b = vector_batch()
        cases.append((replace(b, target=None), ("target",)))
    if cls.min_modalities > 1:
        b = vector_batch()
        keep = b.names[: cls.min_modalities - 1]
        cases.append((replace_modalities(b, {n: b.modalities[n] for n in keep}), (str(cls.min_modalities),)))
    if not cases:  # it accepts one unlabelled vector modality: then that must fit
        b = vector_batch()
        one = replace(replace_modalities(b, {b.names[0]: b.modalities[b.names[0]]}), target=None)
        guard = create_guard(name, quick=True)
        guard.fit(make_splits(one, seed=0), seed=0)
        assert guard.fitted
    for data, words in cases:
        guard = create_guard(name, quick=True)
        with pytest.raises(DataError) as info:
            guard.fit(make_splits(data, seed=0), seed=0)
        one_line(info.value, *words)
        assert not guard.fitted


def test_score_and_flag(fitted: Fitted) -> None:
    if not fitted.guard.flags:
        with pytest.raises(SpecError):
            fitted.guard.score(fitted.splits.test)
        return
    check_score_and_flag(fitted.guard, fitted.splits.test)


def test_calibrated_on_clean_validation(fitted: Fitted) -> None:
    if not fitted.guard.flags:  # nothing to calibrate, and nothing pretends otherwise
        assert fitted.guard.calibration is None and "calibration" not in fitted.report
        return
    check_calibration(fitted.guard, fitted.splits.val)


def test_transform_keeps_layout_and_raw_units(fitted: Fitted) -> None:
    if not fitted.guard.corrects:
        with pytest.raises(SpecError):
            fitted.guard.transform(fitted.splits.test)
        return
    check_transform_raw_units(fitted.guard, fitted.splits.test)


def test_score_and_transform_equals_the_two_calls(fitted: Fitted) -> None:
    """Evaluation's one-pass path (the inference module where the guard has one) gives the same
    scores and corrections as score() and transform(), with the gate open and shut in one batch."""
    guard, test = fitted.guard, fitted.splits.test
    if not (guard.flags and guard.corrects):
        with pytest.raises(SpecError):
            guard.score_and_transform(test)
        return
    first = test.names[0]
    x = test.modalities[first].clone()
    half = torch.arange(len(test)) % 2 == 0
    spread = x.float().std() + 1.0
    x[half] = x[half] + 20.0 * spread  # far off the clean manifold in one modality
    batch = replace_modalities(test, {**{n: test.modalities[n].numpy() for n in test.names}, first: x.numpy()})
    scores, fixed = guard.score_and_transform(batch)
    torch.testing.assert_close(scores, guard.score(batch), rtol=1e-4, atol=1e-5)
    flagged = (scores > 1.0).any(1)
    assert bool(flagged[half].any()) and not bool(flagged[~half].all()), "the gate must act on part of the batch"
    ref = guard.transform(batch)
    assert fixed.names == ref.names
    for n in batch.names:
        assert fixed.modalities[n].dtype == ref.modalities[n].dtype
        torch.testing.assert_close(fixed.modalities[n], ref.modalities[n], rtol=1e-4, atol=1e-4)


def affine(batch: MultimodalBatch, a: float = 3.0, b: float = -200.0) -> MultimodalBatch:
    return batch.with_modalities({n: batch.modalities[n] * a + b for n in batch.names})


def test_raw_units_in_and_out_affine_equivariance(fitted: Fitted) -> None:
    """The guard standardises internally, so a guard fitted on 3x-200 of the data is the same guard:
    the same scores and predictions, and a transform that is 3x-200 of the original one."""
    sp = fitted.splits
    moved = Splits(train=affine(sp.train), val=affine(sp.val), test=affine(sp.test))
    other = make_guard(fitted.name, fitted.kind)
    other.fit(moved, seed=0)
    guard, test, test_moved = fitted.guard, sp.test, moved.test
    if guard.flags:
        s0, s1 = guard.score(test), other.score(test_moved)
        assert torch.allclose(s0, s1, atol=1e-3, rtol=1e-3), float((s0 - s1).abs().max())
    if guard.corrects:
        a, b = guard.transform(test), other.transform(test_moved)
        for n in test.names:
            tol = 1e-3 * float(test_moved.modalities[n].std())
            diff = float((affine(a).modalities[n] - b.modalities[n]).abs().max())
            assert diff < tol, (n, diff, tol)
    if guard.predicts:
        differ = int((guard.predict(test) != other.predict(test_moved)).sum())
        assert differ <= 1, differ


def test_predict_returns_integer_classes(fitted: Fitted) -> None:
    if not fitted.guard.predicts:
        with pytest.raises(SpecError):
            fitted.guard.predict(fitted.splits.test)
        return
    check_predict(fitted.guard, fitted.splits.test)


def test_missing_capability_is_a_spec_error_naming_it(fitted: Fitted) -> None:
    for cap, has in capabilities(fitted.guard).items():
        for method in CAPABILITY_METHODS[cap]:
            if has:  # a declared capability works
                getattr(fitted.guard, method)(fitted.splits.test)
                continue
            with pytest.raises(SpecError) as info:
                getattr(fitted.guard, method)(fitted.splits.test)
            one_line(info.value, cap, fitted.name)


def test_save_load_is_bit_identical(fitted: Fitted) -> None:
    for f in ("guard.json", "config.json", "weights.safetensors"):
        assert (fitted.directory / f).is_file(), f
    meta = json.loads((fitted.directory / "guard.json").read_text())
    assert meta["kind"] == fitted.name
    assert meta["capabilities"] == capabilities(fitted.guard)
    check_round_trip(fitted.guard, fitted.directory, fitted.splits.test)
    # Guard.load dispatches on the kind; the guard's own class accepts its directory
    assert type(Guard.load(fitted.directory)) is type(fitted.guard)
    assert type(type(fitted.guard).load(fitted.directory)) is type(fitted.guard)


def test_load_through_another_guard_class_fails(fitted: Fitted) -> None:
    cls = type(fitted.guard)
    others = [c for c in GUARDS.values() if not issubclass(cls, c)]
    assert others, "the registry holds several guard kinds"
    for other in others:
        with pytest.raises(CheckpointError) as info:
            other.load(fitted.directory)
        one_line(info.value, fitted.name, other.name)


def test_unfitted_guard_raises_not_fitted(fitted: Fitted, tmp_path: Path) -> None:
    guard = make_guard(fitted.name, fitted.kind)
    assert not guard.fitted
    for cap, has in capabilities(guard).items():
        if not has:
            continue
        for method in CAPABILITY_METHODS[cap]:
            with pytest.raises(NotFittedError) as info:
                getattr(guard, method)(fitted.splits.test)
            one_line(info.value, fitted.name)
    with pytest.raises(NotFittedError):
        guard.save(tmp_path / "unfitted")
    assert not (tmp_path / "unfitted" / "guard.json").exists()


def test_fit_is_seeded(fitted: Fitted) -> None:
    test = fitted.splits.test
    ref = outputs(fitted.guard, test)
    same = make_guard(fitted.name, fitted.kind)
    same.fit(fitted.splits, seed=0)
    again = outputs(same, test)
    for k in ref:
        assert torch.equal(ref[k], again[k]), f"seed 0 twice gives different {k}"
    other = make_guard(fitted.name, fitted.kind)
    other.fit(fitted.splits, seed=1)
    changed = outputs(other, test)
    assert any(not torch.equal(ref[k], changed[k]) for k in ref), "seeds 0 and 1 give identical outputs"


def bad_inputs(batch: MultimodalBatch) -> dict[str, MultimodalBatch]:
    mods = {n: batch.modalities[n].clone() for n in batch.names}
    first, last = batch.names[0], batch.names[-1]
    renamed = {("renamed" if n == first else n): v for n, v in mods.items()}
    missing = {n: v for n, v in mods.items() if n != last}
    extra = {**mods, "extra": torch.zeros(len(batch), 2)}
    reordered = dict(reversed(list(mods.items())))
    shape = dict(mods)
    x = mods[last]
    shape[last] = x[..., :-1] if x.ndim == 2 else x[..., :-1, :-1]  # one feature / pixel row too few
    nan, inf = dict(mods), dict(mods)
    nan[first] = mods[first].clone()
    nan[first].view(len(batch), -1)[3, 0] = float("nan")
    inf[last] = mods[last].clone()
    inf[last].view(len(batch), -1)[1, 0] = float("inf")
    out = {"renamed": renamed, "missing": missing, "extra": extra, "reordered": reordered, "shape": shape,
           "nan": nan, "inf": inf}
    bad = {k: replace_modalities(batch, v) for k, v in out.items()}
    bad["empty"] = batch.select(slice(0, 0))
    return bad


def test_bad_input_is_a_one_line_error(fitted: Fitted) -> None:
    guard = fitted.guard
    methods = [m for cap, has in capabilities(guard).items() if has for m in CAPABILITY_METHODS[cap]]
    words = {"renamed": (fitted.splits.test.names[0],), "missing": (fitted.splits.test.names[-1],), "extra": ("extra",),
             "reordered": ("order",), "shape": ("shape",), "nan": ("nan",), "inf": ("inf",), "empty": ()}
    for case, batch in bad_inputs(fitted.splits.test).items():
        for method in methods:
            with pytest.raises(MMGuardError) as info:
                getattr(guard, method)(batch)
            one_line(info.value, *words[case])


VECTOR_CASES = [c for c in cases() if c.values[0][1] == "vector"]


@pytest.mark.parametrize("fitted", VECTOR_CASES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
def test_other_float_dtypes_work_or_are_refused_in_one_line(fitted: Fitted, dtype: torch.dtype) -> None:
    """A float64 (``from_arrays(..., dtype=torch.float64)``) or float16 batch is either handled — same
    numbers as the same values in float32, transform in the input's dtype — or refused with a
    one-line MMGuardError; never a raw torch error. (The base class owns input handling, so the
    vector case of each guard is enough.)"""
    guard, test = fitted.guard, fitted.splits.test
    other = replace(test, modalities={n: v.to(dtype) for n, v in test.modalities.items()})
    same_values = replace(test, modalities={n: v.to(dtype).float() for n, v in test.modalities.items()})
    methods = [m for cap, has in capabilities(guard).items() if has for m in CAPABILITY_METHODS[cap]]
    for method in methods:
        try:
            out = getattr(guard, method)(other)
        except MMGuardError as exc:
            one_line(exc)
            continue
        ref = getattr(guard, method)(same_values)
        if method == "transform":
            for n in test.names:
                assert out.modalities[n].dtype == dtype, (n, out.modalities[n].dtype)
                assert torch.allclose(out.modalities[n].float(), ref.modalities[n], rtol=1e-2, atol=1e-2), n
        elif method == "predict":
            assert int((out != ref).sum()) <= 1
        elif method == "flag":
            assert out.dtype == torch.bool
        else:
            assert torch.allclose(out.float(), ref, atol=1e-3), float((out.float() - ref).abs().max())


@pytest.mark.parametrize("name", [n for n in NAMES if "vector" in GUARDS[n].modality_kinds])
def test_fit_on_float64_data_works_or_is_refused_in_one_line(name: str) -> None:
    b = vector_batch()
    b64 = replace(b, modalities={n: v.double() for n, v in b.modalities.items()})
    guard = make_guard(name, "vector")
    try:
        guard.fit(make_splits(b64, seed=0), seed=0)
    except MMGuardError as exc:
        one_line(exc)
        return
    if guard.flags:
        check_score_and_flag(guard, b64)
    if guard.corrects:
        check_transform_raw_units(guard, b64)


# ---------------------------------------------------------------------------- corrupted directories
def _garbage(d: Path) -> None:
    (d / "weights.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 40)


def _truncated(d: Path) -> None:
    w = d / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])


def _no_guard_json(d: Path) -> None:
    (d / "guard.json").unlink()


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _unknown_config_key(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "no_such_setting": 1}))


def _bad_config_value(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "false_alarm_rate": 7.0}))


def _unknown_kind(d: Path) -> None:
    meta = json.loads((d / "guard.json").read_text())
    (d / "guard.json").write_text(json.dumps({**meta, "kind": "no_such_guard"}))


def _bad_guard_json(d: Path) -> None:
    (d / "guard.json").write_text("{ not json")


def _no_modalities(d: Path) -> None:
    meta = json.loads((d / "guard.json").read_text())
    (d / "guard.json").write_text(json.dumps({**meta, "modalities": []}))


def _drop_model_tensor(d: Path) -> None:
    w = d / "weights.safetensors"
    tensors = load_file(str(w))
    key = sorted(k for k in tensors if k.startswith("model."))[0]
    del tensors[key]
    save_file(tensors, str(w))


def _drop_preprocessing(d: Path) -> None:
    w = d / "weights.safetensors"
    tensors = load_file(str(w))
    save_file({k: v for k, v in tensors.items() if not k.startswith("preprocessing.")}, str(w))


def _reshape_model_tensor(d: Path) -> None:
    w = d / "weights.safetensors"
    tensors = load_file(str(w))
    key = sorted(k for k in tensors if k.startswith("model.") and tensors[k].numel() > 1)[0]
    tensors[key] = torch.zeros(tensors[key].numel() + 1)
    save_file(tensors, str(w))


CORRUPTIONS = {f.__name__.lstrip("_"): f for f in (
    _garbage, _truncated, _no_guard_json, _no_config, _unknown_config_key, _bad_config_value, _unknown_kind,
    _bad_guard_json, _no_modalities, _drop_model_tensor, _drop_preprocessing, _reshape_model_tensor)}


def test_corrupted_directory_is_a_checkpoint_error(fitted: Fitted, tmp_path: Path) -> None:
    for label, corrupt in CORRUPTIONS.items():
        d = tmp_path / label
        shutil.copytree(fitted.directory, d)
        corrupt(d)
        with pytest.raises(CheckpointError) as info:
            load_guard(d)
        one_line(info.value)
    with pytest.raises(CheckpointError):
        load_guard(tmp_path / "does-not-exist")


# ============================================================================ class-level contract
@pytest.mark.parametrize("name", NAMES)
def test_describe_is_json_serialisable(name: str) -> None:
    cls = GUARDS[name]
    d = cls.describe()
    back = json.loads(json.dumps(d))
    assert back["name"] == name == cls.name
    assert back["capabilities"] == {"flag": cls.flags, "correct": cls.corrects, "predict": cls.predicts}
    assert any(back["capabilities"].values())
    assert set(back["modality_kinds"]) == set(cls.modality_kinds)
    assert back["summary"]
    # quick_config is a valid config of the class
    cls.validate_config(cls.quick_config)


@pytest.mark.parametrize("name", NAMES)
def test_config_refuses_unknown_keys(name: str) -> None:
    with pytest.raises(SpecError) as info:
        create_guard(name, {"no_such_setting": 1})
    one_line(info.value, "no_such_setting")
    with pytest.raises(SpecError):
        create_guard(name, {"false_alarm_rate": 1.5}, quick=True)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry (built-ins discovered) that is thrown away after the test."""
    available_guards()
    registry = dict(guard_mod._REGISTRY)
    monkeypatch.setattr(guard_mod, "_REGISTRY", registry)
    return registry


def _probe_class(*, fit: bool = True, score: bool = True, build: bool = True, flags: bool = True) -> type[Guard]:
    body: dict[str, Any] = {"name": "contract_probe", "flags": flags, "corrects": True,
                            "_transform": lambda self, x: dict(x.modalities)}
    if fit:
        body["_fit"] = lambda self, train, val, *, seed, progress: {}
    if score:
        body["_score"] = lambda self, x: torch.zeros(len(x), x.num_modalities)
    if build:
        body["_build_model"] = lambda self, state: torch.nn.Identity()
    return type("ContractProbe", (Guard,), {"__module__": __name__, **body})


def test_register_guard_refuses_incomplete_classes(isolated_registry: dict) -> None:
    with pytest.raises(TypeError, match="_fit"):
        register_guard(_probe_class(fit=False))
    with pytest.raises(TypeError, match="_score"):
        register_guard(_probe_class(score=False))
    with pytest.raises(TypeError, match="_build_model"):
        register_guard(_probe_class(build=False))
    assert "contract_probe" not in available_guards()
    # the same class with every hook registers (so the refusals above are about the missing hooks);
    # a guard that does not flag needs no _score
    register_guard(_probe_class())
    assert "contract_probe" in available_guards()
    isolated_registry.pop("contract_probe")
    register_guard(_probe_class(score=False, flags=False))
    assert "contract_probe" in available_guards()


PLUGIN = '''
"""A one-file guard: per-modality z-score detector, mean-imputation corrector."""
import torch
from torch import nn

from mmguard.guard import Guard, GuardConfig, register_guard


class ZConfig(GuardConfig):
    floor: float = 1e-6


class ZModel(nn.Module):
    def __init__(self, m: int) -> None:
        super().__init__()
        self.register_buffer("mean_sq", torch.ones(m))


@register_guard
class ZScoreGuard(Guard):
    name = "NAME"
    config_class = ZConfig
    summary = "mean squared z-score per modality; flagged modalities are replaced by the training mean"
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector"})

    def _fit(self, train, val, *, seed, progress):
        self.model = ZModel(len(self.specs))
        with torch.no_grad():
            self.model.mean_sq.copy_(torch.stack([train.flat(n).pow(2).mean() for n in self.names]))
        return {"n_train": len(train)}

    def _score(self, x):
        cols = [x.flat(n).pow(2).mean(1) / self.model.mean_sq[i].clamp_min(self.config.floor)
                for i, n in enumerate(self.names)]
        return torch.stack(cols, 1)

    def _transform(self, x):
        flagged = self.flags_of_standardised(x)
        return {n: torch.where(flagged[:, i, None], torch.zeros_like(x.modalities[n]), x.modalities[n])
                for i, n in enumerate(self.names)}

    def _build_model(self, state):
        return ZModel(len(self.specs))
'''


def test_plugin_guard_file_registers_and_honours_the_contract(isolated_registry: dict, tmp_path: Path) -> None:
    stem = f"zplugin_{uuid.uuid4().hex[:8]}"
    name = f"{stem}_zscore"
    path = tmp_path / f"{stem}.py"
    path.write_text(PLUGIN.replace('"NAME"', repr(name)))
    assert name not in available_guards()
    try:
        load_plugin(str(path))
        assert name in available_guards()
        splits = make_splits(vector_batch(), seed=0)
        guard = create_guard(name, {"false_alarm_rate": ALPHA})
        assert isinstance(guard.fit(splits, seed=0), dict)
        check_score_and_flag(guard, splits.test)
        check_calibration(guard, splits.val)
        check_transform_raw_units(guard, splits.test)
        loaded = check_round_trip(guard, guard.save(tmp_path / "g"), splits.test)
        assert loaded.name == name
        # its corrector does what it says: a broken modality comes back as the training mean
        broken = splits.test.with_modalities({"v0": splits.test.modalities["v0"] + 40 * SPREAD})
        assert bool(loaded.flag(broken)[:, 0].all())
        fixed = loaded.transform(broken).modalities["v0"]
        train_mean = splits.train.modalities["v0"].double().mean(0)
        assert torch.allclose(fixed.double(), train_mean.expand_as(fixed), atol=1e-3)
        with pytest.raises(SpecError, match="predict"):
            loaded.predict(splits.test)
    finally:
        sys.modules.pop(f"mmguard_plugin_{stem}", None)


def test_load_plugin_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_plugin(str(tmp_path / "absent.py"))
    one_line(info.value, "absent.py")
    with pytest.raises(SpecError) as info:
        load_plugin("mmguard_no_such_plugin_module")
    one_line(info.value, "mmguard_no_such_plugin_module")


def test_guard_config_base_is_strict() -> None:
    with pytest.raises(ValidationError):
        GuardConfig(no_such_setting=1)  # type: ignore[call-arg]


def test_a_missing_env_plugin_is_reported_on_every_call(isolated_registry: dict, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """$MMGUARD_PLUGINS naming a missing file is an error — on the second call too, not only the first
    (a failed discovery must not be remembered as done and then silently skip the plugin)."""
    monkeypatch.setattr(guard_mod, "_discovered", False)  # a fresh process, as far as discovery goes
    monkeypatch.setenv("MMGUARD_PLUGINS", str(tmp_path / "absent_plugin.py"))
    for attempt in ("first call", "second call"):
        try:
            available_guards()
        except SpecError as exc:
            one_line(exc, "absent_plugin.py")
        else:
            pytest.fail(f"{attempt}: the missing $MMGUARD_PLUGINS file was not reported")
