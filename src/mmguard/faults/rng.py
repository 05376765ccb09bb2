"""Deterministic random sub-streams.

Every stochastic step of fault injection draws from its own ``torch.Generator`` whose seed is
derived from the user's seed and a tuple of labels (entry index, group name, purpose) through
SHA-256. Python's built-in ``hash`` is salted per process, so it is never used: the same seed
gives the same numbers in every process, on every machine.

Draws always happen on the CPU and are then moved to the data's device, so results do not
depend on where the batch lives.
"""

from __future__ import annotations

import torch

from mmguard.seeding import derive_seed

__all__ = ["derive_seed", "generator"]


def generator(seed: int, *labels: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, *labels)``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(seed, *labels))
    return gen
