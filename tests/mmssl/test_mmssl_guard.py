"""MmsslGuard: the Guard contract (fit on raw splits, score, flagged, transform, save/load)."""

from __future__ import annotations

import json

import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits
from mmguard.errors import CheckpointError, DataError
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig
from mmguard.mmssl.guard import MmsslGuard
from mmguard.mmssl.stages import decode, encode


def _batch(n: int, seed: int) -> MultimodalBatch:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) % 20
    base = torch.rand(n, 1, 1, 1, generator=gen)
    camera = (base + 0.1 * torch.rand(n, 3, 16, 16, generator=gen)).clamp(0, 1)
    kin = torch.sin(t[:, None] / 3.0 + torch.arange(5)[None]).float() * 2.0 + 5.0
    return MultimodalBatch.from_arrays(
        {"camera": camera, "kinematics": kin}, meta={"episode": torch.arange(n) // 20, "t": t}
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[MmsslGuard, Splits, dict]:
    splits = Splits(train=_batch(120, 0), val=_batch(60, 1), test=_batch(60, 2))
    guard = MmsslGuard(
        AutoencoderConfig(
            epochs=2,
            batch_size=32,
            image_channels=[4, 8],
            image_code=8,
            sensor_hidden=16,
            sensor_code=4,
            latent_dim=8,
            patience=None,
        ),
        ComputeConfig(
            epochs=2,
            corruption_draws=1,
            detector_hidden=16,
            corrector_hidden=[16],
            recon_samples=4,
            batch_size=32,
            patience=None,
        ),
    )
    report = guard.fit(splits, seed=0)
    return guard, splits, report


def test_fit_report_and_shapes(fitted):
    guard, splits, report = fitted
    assert report["threshold"] > 0 and report["mmae"]["epochs_run"] == 2
    scores = guard.score(splits.test)
    assert scores.shape == (60, 2) and bool(torch.isfinite(scores).all()) and bool((scores >= 0).all())
    assert guard.flagged(splits.test).shape == (60,)


def test_transform_is_raw_units_and_bypass_is_exact(fitted):
    guard, splits, _ = fitted
    out = guard.transform(splits.test)
    flagged = guard.flagged(splits.test)
    std = guard.standardizer.transform(splits.test)
    plain = guard.standardizer.inverse(
        std.with_modalities(decode(guard.models.mmae, encode(guard.models.mmae, std.modalities)))
    )
    for name in splits.test.names:
        assert out.modalities[name].shape == splits.test.modalities[name].shape
        keep = ~flagged
        assert torch.equal(out.modalities[name][keep], plain.modalities[name][keep])
    # reconstructions live in raw units (the kinematics are centred near 5, not near 0)
    assert float(out.modalities["kinematics"].mean()) == pytest.approx(5.0, abs=1.0)


def test_save_load_roundtrip(fitted, tmp_path):
    guard, splits, _ = fitted
    guard.save(tmp_path / "g")
    again = MmsslGuard.load(tmp_path / "g")
    assert torch.equal(again.score(splits.test), guard.score(splits.test))
    for name in splits.test.names:
        assert torch.equal(
            again.transform(splits.test).modalities[name], guard.transform(splits.test).modalities[name]
        )


def test_bad_inputs(fitted, tmp_path):
    guard, splits, _ = fitted
    with pytest.raises(DataError, match="not fitted"):
        MmsslGuard().score(splits.test)
    with pytest.raises(DataError, match="differ from the guard"):
        guard.score(
            splits.test.select_modalities(["camera"])
            if hasattr(splits.test, "select_modalities")
            else MultimodalBatch.from_arrays({"camera": splits.test.modalities["camera"]})
        )
    bad = splits.test.with_modalities(
        {
            "camera": splits.test.modalities["camera"],
            "kinematics": torch.full_like(splits.test.modalities["kinematics"], float("nan")),
        }
    )
    with pytest.raises(DataError):
        guard.transform(bad)
    with pytest.raises(DataError, match="raw"):
        MmsslGuard().fit(splits.standardize())
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "guard.json").write_text(json.dumps({"guard": "emma"}))
    with pytest.raises(CheckpointError, match="not an MMSSL guard"):
        MmsslGuard.load(tmp_path / "x")
