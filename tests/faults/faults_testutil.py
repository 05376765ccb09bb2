"""Shared helpers for the fault-injection tests."""

from __future__ import annotations

import torch

from mmguard.data.model import MultimodalBatch


def make_batch(n: int = 40, seed: int = 0, *, episodes: int = 3, image_channels: int = 3,
               with_meta: bool = True) -> MultimodalBatch:
    """Random standardized-looking batch: vector (3,), timeseries (8, 2), image (C, 6, 7)."""
    g = torch.Generator().manual_seed(seed)
    mods = {
        "vec": torch.randn(n, 3, generator=g),
        "ts": torch.randn(n, 8, 2, generator=g),
        "img": torch.rand(n, image_channels, 6, 7, generator=g),
    }
    meta = None
    if with_meta:
        meta = {"episode": torch.randint(0, episodes, (n,), generator=g),
                "t": torch.randperm(n, generator=g)}
    return MultimodalBatch.from_arrays(mods, target=torch.randint(0, 2, (n,), generator=g), meta=meta)


KIND_TO_MODALITY = {"vector": "vec", "timeseries": "ts", "image": "img"}
