"""Every table-1 baseline takes the digital twin's modalities — a 3x64x64 camera and 31-d kinematics —
with its default architecture (three conv blocks): one epoch fits, scores and transforms keep shapes."""

from __future__ import annotations

import numpy as np
import pytest

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import make_splits
from mmguard.guard import create_guard

BASELINES = ["mmfr", "mmcf", "ccm", "mmgan", "mmugan"]


@pytest.fixture(scope="module")
def twin_like():
    rng = np.random.default_rng(0)
    n_ep, steps = 6, 8
    z = rng.normal(size=(n_ep * steps, 4))
    yy, xx = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    camera = 0.5 + 0.1 * (z[:, 0, None, None, None] * np.stack([xx, yy, xx * yy])[None])
    camera = camera + 0.01 * rng.normal(size=camera.shape)
    kin = z @ rng.normal(size=(4, 31)) + 0.01 * rng.normal(size=(n_ep * steps, 31))
    batch = MultimodalBatch.from_arrays({"camera": camera, "kinematics": kin},
                                        meta={"episode": np.repeat(np.arange(n_ep), steps),
                                              "t": np.tile(np.arange(steps), n_ep)})
    return make_splits(batch, seed=0)


@pytest.mark.parametrize("name", BASELINES)
def test_twin_camera_and_kinematics(name: str, twin_like) -> None:
    guard = create_guard(name, {"autoencoder": {"epochs": 1, "batch_size": 16}, "false_alarm_rate": 0.2})
    guard.fit(twin_like, seed=0)
    test = twin_like.test
    assert tuple(guard.score(test).shape) == (len(test), 2)
    fixed = guard.transform(test)
    assert fixed.modalities["camera"].shape == (len(test), 3, 64, 64)
    assert fixed.modalities["kinematics"].shape == (len(test), 31)
