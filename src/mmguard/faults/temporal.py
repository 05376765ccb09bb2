"""Vectorized episode/time helpers for temporal faults (hold, drift, frozen frame).

Vector and image modalities have no time axis inside a sample; their time is the batch meta:
``meta['episode']`` groups samples into episodes and ``meta['t']`` orders them inside one.
Decisions (documented in docs/faults.md):

* without ``episode`` every sample belongs to one episode;
* without ``t`` the batch index is the time index;
* among the *selected* samples of an episode the "first" one is the one with the smallest
  ``t`` (ties: the smallest batch index) — it is where the fault begins.
"""

from __future__ import annotations

import torch

from mmguard.faults.registry import FaultContext


def time_and_episode(ctx: FaultContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, episode) of the selected samples with the fallbacks above; both (n,)."""
    t = ctx.index if ctx.t is None else ctx.t
    ep = torch.zeros_like(ctx.index) if ctx.episode is None else ctx.episode
    return t.to(ctx.index.device), ep.to(ctx.index.device)


def first_in_episode(t: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
    """For each position i, the position of the earliest (smallest t, then position) element
    with the same episode. No Python loop: two stable sorts and a running maximum."""
    n = t.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=t.device)
    by_t = torch.sort(t, stable=True).indices
    order = by_t[torch.sort(episode[by_t], stable=True).indices]
    sorted_ep = episode[order]
    starts = torch.ones(n, dtype=torch.bool, device=t.device)
    starts[1:] = sorted_ep[1:] != sorted_ep[:-1]
    pos = torch.arange(n, device=t.device)
    seg_first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=0).values
    first = torch.empty(n, dtype=torch.long, device=t.device)
    first[order] = order[seg_first]
    return first


def steps_since_onset(ctx: FaultContext) -> torch.Tensor:
    """(n,) float64 time elapsed since the first selected sample of the same episode (>= 0)."""
    t, ep = time_and_episode(ctx)
    first = first_in_episode(t, ep)
    return (t.double() - t[first].double()).clamp_min(0)


def held_source(ctx: FaultContext) -> torch.Tensor:
    """(n,) position of the sample whose value each selected sample holds (first of its episode)."""
    t, ep = time_and_episode(ctx)
    return first_in_episode(t, ep)
