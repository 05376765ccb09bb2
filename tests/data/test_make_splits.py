"""make_splits / split_by_values: the split the CLI asks for (--split-by, --train/val/test-groups).

Every batch carries meta['row'] = its original index, so a test can say exactly which rows went
where. Data: 300 samples in 5 ``batch`` groups of 60 (a drifting-sensor style group column), an
imbalanced binary target (20 % positives, spread evenly over the groups) and, where a test needs
them, 15 episodes of 20 steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits, split_by_values
from mmguard.errors import DataError

N = 300


def batch(*, episodes: bool = False, seed: int = 0, target: str = "class") -> MultimodalBatch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 3))
    meta = {"row": np.arange(N), "batch": np.repeat(np.arange(1, 6), N // 5).astype(np.float64)}
    if episodes:
        meta["episode"] = np.repeat(np.arange(15), 20)
    if target == "class":
        y = (np.arange(N) % 5 == 0).astype(np.int64)  # 60 positives, 12 per batch group
    else:
        y = rng.normal(size=N)
    return MultimodalBatch.from_arrays({"a": x[:, :2], "b": x[:, 2:]}, target=y, meta=meta)


def rows(part: MultimodalBatch) -> set[int]:
    return set(part.meta["row"].tolist())


def values(part: MultimodalBatch, key: str) -> set[float]:
    return set(part.meta[key].tolist())


def rows_where(b: MultimodalBatch, key: str, allowed: list[float]) -> set[int]:
    keep = np.isin(b.meta[key].numpy(), allowed)
    return set(b.meta["row"][torch.from_numpy(keep)].tolist())


def assert_disjoint(s: Splits) -> None:
    r = [rows(p) for p in (s.train, s.val, s.test)]
    assert not (r[0] & r[1]), "a row in train and val"
    assert not (r[0] & r[2]), "a row in train and test"
    assert not (r[1] & r[2]), "a row in val and test"
    for p in (s.train, s.val, s.test):
        assert len(rows(p)) == len(p), "a row twice in one split"


def same_split(a: Splits, b: Splits) -> bool:
    return all(torch.equal(x.meta["row"], y.meta["row"]) for x, y in ((a.train, b.train), (a.val, b.val),
                                                                      (a.test, b.test)))


# ============================================================================ explicit groups
def test_explicit_groups_put_exactly_those_rows_in_train_val_and_test() -> None:
    b = batch()
    s = make_splits(b, split_by="batch", train_groups=[1, 2], test_groups=[4, 5], seed=0)
    assert_disjoint(s)
    assert rows(s.train) | rows(s.val) == rows_where(b, "batch", [1, 2])
    assert rows(s.test) == rows_where(b, "batch", [4, 5])
    assert 3.0 not in values(s.train, "batch") | values(s.val, "batch") | values(s.test, "batch")
    # the rows keep their values
    idx = s.test.meta["row"]
    assert torch.equal(s.test.modalities["a"], b.modalities["a"][idx])
    assert torch.equal(s.test.target, b.target[idx])


def test_explicit_validation_groups() -> None:
    b = batch()
    s = make_splits(b, split_by="batch", train_groups=[1, 2], val_groups=[3], test_groups=[5], seed=0)
    assert_disjoint(s)
    assert rows(s.train) == rows_where(b, "batch", [1, 2])
    assert rows(s.val) == rows_where(b, "batch", [3])
    assert rows(s.test) == rows_where(b, "batch", [5])


def test_validation_is_drawn_from_the_training_groups_when_none_given() -> None:
    b = batch()
    s = make_splits(b, split_by="batch", train_groups=[1, 2, 3], test_groups=[4], seed=0)
    assert_disjoint(s)
    assert values(s.val, "batch") <= {1.0, 2.0, 3.0}
    assert len(s.val) == round(0.15 * 180)  # the documented 15 % of the training groups' samples
    assert len(s.train) == 180 - len(s.val)
    # stratified by class: 20 % positives in both parts, to within one sample
    for part in (s.train, s.val):
        assert abs(int(part.target.sum()) - 0.2 * len(part)) <= 1, (len(part), int(part.target.sum()))
    # the hold-out is random, not the first or last rows of the training groups
    val_rows = sorted(rows(s.val))
    assert val_rows != list(range(val_rows[0], val_rows[0] + len(val_rows)))
    other = make_splits(b, split_by="batch", train_groups=[1, 2, 3], test_groups=[4], seed=1)
    assert rows(other.val) != rows(s.val)
    assert rows(other.test) == rows(s.test)  # the seed moves validation only


def test_split_by_values_directly() -> None:
    b = batch()
    s = split_by_values(b, "batch", train=[2], test=[1], val_fraction=0.25, seed=0)
    assert rows(s.train) | rows(s.val) == rows_where(b, "batch", [2])
    assert len(s.val) == 15
    assert rows(s.test) == rows_where(b, "batch", [1])


def test_explicit_groups_default_to_the_episode_column() -> None:
    b = batch(episodes=True)
    s = make_splits(b, train_groups=[0, 1, 2], test_groups=[7])
    assert values(s.train, "episode") | values(s.val, "episode") == {0, 1, 2}
    assert values(s.test, "episode") == {7}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"split_by": "batch", "train_groups": [1], "test_groups": [99]}, ("99", "does not occur")),
        ({"split_by": "batch", "train_groups": [1, 2], "test_groups": [2]}, ("2", "both")),
        ({"split_by": "batch", "train_groups": [1], "val_groups": [1], "test_groups": [3]}, ("both",)),
        ({"split_by": "batch", "test_groups": [3]}, ("train",)),
        ({"split_by": "batch", "train_groups": [1]}, ("test",)),
        ({"split_by": "lot", "train_groups": [1], "test_groups": [2]}, ("lot",)),
    ],
    ids=["absent", "overlap-train-test", "overlap-train-val", "no-train", "no-test", "unknown-key"],
)
def test_explicit_group_errors(kwargs: dict, words: tuple[str, ...]) -> None:
    with pytest.raises(DataError) as info:
        make_splits(batch(), **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


# ============================================================================ auto / random / key
def test_auto_splits_by_episode_when_present() -> None:
    b = batch(episodes=True)
    s = make_splits(b, seed=0)
    assert_disjoint(s)
    eps = [values(p, "episode") for p in (s.train, s.val, s.test)]
    assert not (eps[0] & eps[1]) and not (eps[0] & eps[2]) and not (eps[1] & eps[2]), eps
    assert set().union(*eps) == set(range(15))
    for part in (s.train, s.val, s.test):  # whole episodes
        assert len(part) == 20 * len(values(part, "episode"))
    # a random split of the same data would put episodes in several splits
    r = make_splits(b, split_by="random", seed=0)
    assert values(r.train, "episode") & values(r.test, "episode")


def test_auto_without_episodes_is_a_stratified_random_split() -> None:
    b = batch()
    for seed in range(5):
        s = make_splits(b, seed=seed)
        assert_disjoint(s)
        assert set().union(*(rows(p) for p in (s.train, s.val, s.test))) == set(range(N))
        assert s.sizes() == {"train": 201, "val": 49, "test": 50}
        for part in (s.train, s.val, s.test):  # 20 % positives in every split, to within one sample
            assert abs(int(part.target.sum()) - 0.2 * len(part)) <= 1, (seed, len(part), int(part.target.sum()))
        # random: groups are mixed across splits (not a group split, not contiguous blocks)
        assert values(s.test, "batch") == {1.0, 2.0, 3.0, 4.0, 5.0}
        assert same_split(s, make_splits(b, split_by="random", seed=seed))


def test_random_split_of_a_regression_target() -> None:
    s = make_splits(batch(target="regression"), seed=0)
    assert_disjoint(s)
    assert s.sizes() == {"train": 201, "val": 49, "test": 50}
    assert s.train.target.is_floating_point()


def test_split_by_a_meta_key_keeps_groups_whole() -> None:
    b = batch()
    s = make_splits(b, split_by="batch", seed=0)
    assert_disjoint(s)
    groups = [values(p, "batch") for p in (s.train, s.val, s.test)]
    assert all(groups), groups
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert set().union(*groups) == {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"split_by": "random"}, {"split_by": "batch"},
     {"split_by": "batch", "train_groups": [1, 2], "test_groups": [5]}],
    ids=["auto", "random", "key", "explicit"],
)
@pytest.mark.parametrize("episodes", [False, True], ids=["no-episodes", "episodes"])
def test_same_seed_same_split_other_seed_other_split(kwargs: dict, episodes: bool) -> None:
    b = batch(episodes=episodes)
    a1, a2 = make_splits(b, seed=3, **kwargs), make_splits(b, seed=3, **kwargs)
    assert same_split(a1, a2)
    changed = [make_splits(b, seed=s, **kwargs) for s in (4, 5, 6)]
    assert any(not same_split(a1, c) for c in changed)
