"""The shared helpers: mean ± std over seeds, paired ratios, reconstruction errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.eval.reconstruction import group_errors, modality_groups, per_sample_errors, per_sample_mse
from mmguard.eval.stats import mean_std, paired_ratio


def test_mean_std_is_float64_sample_std() -> None:
    v = [0.1, 0.2, 0.4]
    a = np.asarray(v, dtype=np.float64)
    assert mean_std(v) == [float(a.mean()), float(a.std(ddof=1))]
    t = torch.tensor(v, dtype=torch.float32)  # tensors are widened to float64 first
    b = t.double().numpy()
    assert mean_std(t) == [float(b.mean()), float(b.std(ddof=1))]
    assert mean_std(v, ddof=0) == [float(a.mean()), float(a.std(ddof=0))]
    assert mean_std([0.7]) == [0.7, 0.0]
    assert all(math.isnan(x) for x in mean_std([]))


def test_paired_ratio_is_per_seed() -> None:
    a, b = [1.0, 4.0], [2.0, 2.0]
    assert paired_ratio(a, b) == mean_std([0.5, 2.0])
    assert paired_ratio(a, b) != mean_std([float(np.mean(a) / np.mean(b))] * 2)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_reconstruction_errors_by_modality_and_group() -> None:
    g = torch.Generator().manual_seed(0)
    batch = MultimodalBatch.from_arrays(
        {"cam": torch.rand(5, 1, 4, 4, generator=g), "pos": torch.randn(5, 3, generator=g),
         "ts": torch.randn(5, 6, 2, generator=g)}
    )
    recon = {n: x + 0.5 for n, x in batch.modalities.items()}
    err = per_sample_errors(recon, batch.modalities, batch.names)
    assert err.shape == (5, 3) and torch.allclose(err, torch.full((5, 3), 0.25))
    assert torch.equal(per_sample_mse(recon["pos"], batch.modalities["pos"]), err[:, 1])
    groups = modality_groups(batch.specs)
    assert groups == {"camera": [0], "sensor": [1, 2]}
    out = group_errors(err, groups)
    assert torch.allclose(out["camera"], torch.full((5,), 0.25))
    assert torch.allclose(out["sensor"], torch.full((5,), 0.5))
    assert torch.equal(out["combined"], out["camera"] + out["sensor"])
