"""Splits (sizes, stratification, no overlap, no episode leak) and the train-only Standardizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmguard.data import (
    MultimodalBatch,
    Standardizer,
    make_shared_latent,
    split_by_group,
    stratified_three_way,
)
from mmguard.errors import CheckpointError, DataError, SpecError


def indexed(batch: MultimodalBatch) -> MultimodalBatch:
    """The batch with meta['row'] = original index, to trace samples through a split."""
    return MultimodalBatch(batch.modalities, batch.specs, batch.target,
                           meta={**batch.meta, "row": torch.arange(len(batch))})


def test_stratified_three_way_sizes_stratification_and_disjointness() -> None:
    b = indexed(make_shared_latent(1000, num_classes=3, seed=1))
    s = stratified_three_way(b, seed=3)
    assert s.sizes() == {"train": 670, "val": 165, "test": 165}
    rows = [set(p.meta["row"].tolist()) for p in (s.train, s.val, s.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert set().union(*rows) == set(range(1000))
    overall = torch.bincount(b.target, minlength=3).double() / len(b)
    for part in (s.train, s.val, s.test):
        frac = torch.bincount(part.target, minlength=3).double() / len(part)
        assert torch.allclose(frac, overall, atol=0.01)
    again = stratified_three_way(b, seed=3)
    assert torch.equal(again.test.meta["row"], s.test.meta["row"])
    assert not torch.equal(stratified_three_way(b, seed=4).test.meta["row"], s.test.meta["row"])


def test_stratified_split_values_are_untouched() -> None:
    b = indexed(make_shared_latent(200, seed=0))
    s = stratified_three_way(b)
    rows = s.val.meta["row"]
    assert torch.equal(s.val.modalities["m1"], b.modalities["m1"][rows])


def test_stratified_split_errors() -> None:
    b = make_shared_latent(50, seed=0)
    with pytest.raises(DataError, match="train_fraction must be in"):
        stratified_three_way(b, train_fraction=1.0)
    with pytest.raises(DataError, match="needs a target"):
        stratified_three_way(MultimodalBatch(b.modalities, b.specs))
    lonely = MultimodalBatch(b.modalities, b.specs, target=torch.cat([torch.zeros(49), torch.ones(1)]).long())
    with pytest.raises(DataError, match="stratified by class"):
        stratified_three_way(lonely)
    with pytest.raises(DataError, match="every split needs at least one sample"):
        stratified_three_way(b[:2])


def test_regression_target_falls_back_to_random_split() -> None:
    b = make_shared_latent(100, seed=0)
    reg = MultimodalBatch(b.modalities, b.specs, target=torch.linspace(0, 1, 100))
    s = stratified_three_way(reg)
    assert s.sizes() == {"train": 67, "val": 16, "test": 17}
    assert s.train.target.is_floating_point()


def test_split_by_group_has_no_episode_leak() -> None:
    b = make_shared_latent(600, episode_length=20, seed=2)  # 30 episodes
    s = split_by_group(b, "episode", seed=5)
    eps = [set(p.meta["episode"].tolist()) for p in (s.train, s.val, s.test)]
    assert not (eps[0] & eps[1]) and not (eps[0] & eps[2]) and not (eps[1] & eps[2])
    assert set().union(*eps) == set(range(30))
    assert [len(e) for e in eps] == [21, 4, 5]
    for part in (s.train, s.val, s.test):  # whole episodes, time index intact
        assert len(part) == 20 * len(set(part.meta["episode"].tolist()))


def test_split_by_group_always_leaves_every_split_a_group() -> None:
    b = make_shared_latent(40, episode_length=10, seed=0)  # 4 episodes
    s = split_by_group(b, fractions=(0.2, 0.7, 0.1))
    assert min(s.sizes().values()) > 0


def test_split_by_group_errors() -> None:
    b = make_shared_latent(40, episode_length=10, seed=0)
    with pytest.raises(DataError, match="no meta field 'run'"):
        split_by_group(b, "run")
    with pytest.raises(DataError, match="sum to 1"):
        split_by_group(b, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="at least 3 distinct"):
        split_by_group(b[:20])


def test_standardizer_fitted_on_train_only() -> None:
    b = make_shared_latent(900, seed=0)
    s = stratified_three_way(b, seed=0).standardize()
    assert s.standardized and s.standardize() is s
    train = s.train.modalities["m0"].double()
    assert torch.allclose(train.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-4)
    raw = stratified_three_way(b, seed=0)
    expected_mean = raw.train.modalities["m0"].double().mean(0).float()
    assert torch.allclose(s.standardizer.mean["m0"], expected_mean, atol=1e-6)
    # val/test use the train statistics, so they are not exactly centred
    assert not torch.allclose(s.test.modalities["m0"].double().mean(0), torch.zeros(4, dtype=torch.float64),
                              atol=1e-6)
    back = s.standardizer.inverse(s.test)
    assert torch.allclose(back.modalities["m2"], raw.test.modalities["m2"], atol=1e-5)


def test_standardizer_per_channel_statistics_and_constant_features() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((8, 3, 4, 4)) * np.array([1.0, 10.0, 100.0])[None, :, None, None]
    ts = rng.standard_normal((8, 5, 2))
    const = np.full((8, 2), 7.0)
    b = MultimodalBatch.from_arrays({"img": img, "ts": ts, "c": const})
    st = Standardizer.fit(b)
    assert st.mean["img"].shape == (3, 1, 1) and st.mean["ts"].shape == (1, 2)
    out = st.transform(b)
    per_channel = out.modalities["img"].transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.equal(out.modalities["c"], torch.zeros(8, 2))  # std 1 for constant features: no Inf
    back = st.inverse(out)
    assert torch.allclose(back.modalities["img"], b.modalities["img"], rtol=1e-5, atol=1e-5)


def test_standardizer_state_round_trip() -> None:
    b = make_shared_latent(100, seed=0)
    st = Standardizer.fit(b)
    restored = Standardizer.from_state_tensors(st.state_tensors(), list(b.names))
    assert torch.equal(restored.transform(b).concat_flat(), st.transform(b).concat_flat())
    with pytest.raises(CheckpointError, match="lacks standardizer statistics"):
        Standardizer.from_state_tensors({}, ["m0"])
    other = MultimodalBatch.from_arrays({"z": np.zeros((3, 2))})
    with pytest.raises(SpecError, match=r"no statistics for modalities \['z'\]"):
        st.transform(other)
