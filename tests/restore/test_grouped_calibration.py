"""Split-conformal calibration over whole groups (mmguard.calibration.grouped_max_quantile_calibration):
the conformal rank, the per-group quantile, and that on unseen groups whose noise floor differs from
group to group it holds the false-alarm rate where the pooled sample quantile does not."""

from __future__ import annotations

import math

import pytest
import torch

from mmguard.calibration import grouped_max_quantile_calibration, max_quantile_calibration
from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits
from mmguard.errors import DataError
from mmguard.guard import create_guard


def grouped_scores(groups: int, per_group: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) null scores: each group scales both modalities by its own log-normal factor."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.exp(0.5 * torch.randn(groups, 1, 1, generator=gen))
    raw = (torch.randn(groups, per_group, 2, generator=gen).abs() * scale).reshape(-1, 2)
    return raw, torch.arange(groups).repeat_interleave(per_group)


def test_threshold_is_the_conformal_rank_of_the_group_quantiles() -> None:
    raw, groups = grouped_scores(19, 200, seed=0)
    alpha, miss = 0.05, 0.1
    loc, scale, report = grouped_max_quantile_calibration(raw, groups, alpha, miss)
    # by hand: the same loc/spread as the pooled rule, then per-group quantiles of s, then the rank
    loc_ref = raw.double().median(0).values
    spread = torch.quantile(raw.double(), 1 - alpha, dim=0, interpolation="higher") - loc_ref
    s = ((raw.double() - loc_ref) / spread).amax(1)
    q = torch.stack([torch.quantile(s[groups == g], 1 - alpha, interpolation="higher") for g in range(19)])
    t = torch.sort(q).values[math.ceil(20 * 0.9) - 1]
    torch.testing.assert_close(scale, (spread * t).float())
    torch.testing.assert_close(loc, loc_ref.float())
    assert report["groups"] == 19 and report["episode_coverage"] == pytest.approx(0.9)
    assert report["threshold"] == pytest.approx(float(t))


def test_too_few_groups_take_the_maximum_and_say_so() -> None:
    raw, groups = grouped_scores(4, 100, seed=1)
    _, _, report = grouped_max_quantile_calibration(raw, groups, 0.05, 0.1)
    assert report["threshold"] == pytest.approx(report["group_quantile_max"])
    assert report["episode_coverage"] == pytest.approx(1 - 1 / 5)


def test_holds_the_rate_on_unseen_groups_where_pooling_does_not() -> None:
    """The guarantee is marginal over calibration sets: averaged over 20 of them, the fraction of
    unseen groups (same size) flagged on more than α of their samples is at most ``miss``."""
    alpha, miss, per = 0.02, 0.1, 150
    unseen, unseen_groups = grouped_scores(400, per, seed=1000)
    rates: dict[str, list[float]] = {"pooled": [], "grouped": []}
    for seed in range(20):
        raw, groups = grouped_scores(39, per, seed=seed)
        for rule in rates:
            if rule == "pooled":
                loc, scale = max_quantile_calibration(raw, alpha)
            else:
                loc, scale, _ = grouped_max_quantile_calibration(raw, groups, alpha, miss)
            flagged = (((unseen - loc) / scale) > 1).any(1).float()
            per_group = torch.zeros(400).index_add_(0, unseen_groups, flagged) / per
            rates[rule].append(float((per_group > alpha).float().mean()))
    grouped, pooled = sum(rates["grouped"]) / 20, sum(rates["pooled"]) / 20
    assert grouped <= miss + 0.02, grouped   # the guarantee, with the slack of 400 test groups
    assert pooled > miss + 0.02, (pooled, grouped)  # pooling does not give it on heterogeneous groups


def _split(with_meta: bool) -> Splits:
    gen = torch.Generator().manual_seed(0)

    def part(n: int, first_episode: int) -> MultimodalBatch:
        z = torch.randn(n, 2, generator=gen)
        meta = {"episode": torch.arange(n) // 10 + first_episode} if with_meta else {}
        return MultimodalBatch.from_arrays({"a": (z @ torch.randn(2, 4, generator=gen)).numpy(),
                                            "b": (z @ torch.randn(2, 3, generator=gen)).numpy()},
                                           meta={k: v.numpy() for k, v in meta.items()})
    return Splits(train=part(200, 0), val=part(100, 20), test=part(50, 30))


def test_guard_option_groups_needs_the_group_key_and_auto_falls_back() -> None:
    over = {"autoencoder": {"epochs": 2, "patience": None}}
    with pytest.raises(DataError, match="episode"):
        create_guard("mmae", {**over, "calibrate_over": "groups"}).fit(_split(with_meta=False))
    auto = create_guard("mmae", {**over, "calibrate_over": "auto"})
    auto.fit(_split(with_meta=False))
    assert "groups" not in auto.calibration_summary()
    grouped = create_guard("mmae", {**over, "calibrate_over": "groups"})
    grouped.fit(_split(with_meta=True))
    assert grouped.calibration_summary()["groups"]["groups"] == 10
