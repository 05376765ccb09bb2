"""Deterministic seed derivation, free of heavy imports (usable in lightweight worker processes).

``derive_seed(seed, *labels)`` names an independent random sub-stream under the user's seed
through SHA-256 of ``repr((seed, *labels))``. Python's built-in ``hash`` is salted per
process, so it is never used: the same seed gives the same numbers in every process, on
every machine.
"""

from __future__ import annotations

import hashlib

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for the sub-stream named by ``labels`` under the user's ``seed``."""
    text = repr((int(seed), *labels)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & _MASK63
