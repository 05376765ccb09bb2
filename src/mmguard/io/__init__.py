"""Safe persistence: safetensors weights + JSON config, atomic writes, no pickle.

The names below are loaded lazily so that importing :mod:`mmguard.io.jsonio` (used by the CLI)
does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "load_checkpoint", "save_checkpoint", "write_json"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmguard.io import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'mmguard.io' has no attribute {name!r}")
