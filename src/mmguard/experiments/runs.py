"""Reopen any run directory for ``mmguard eval``: a registry of run loaders, one per protocol.

A protocol registers a loader with :func:`register_run_loader`; :func:`load_run` dispatches on
the ``method`` field of the run's ``config.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmguard.devices import resolve_device
from mmguard.errors import CheckpointError
from mmguard.eval.evaluate import LoadedRun
from mmguard.io.checkpoint import read_json

#: method -> loader(run_dir, config, data_dir, device): models on ``device``, outputs on the CPU
RUN_LOADERS: dict[str, Callable[[Path, dict[str, Any], str | None, torch.device], LoadedRun]] = {}


def register_run_loader(method: str):
    def deco(fn):
        RUN_LOADERS[method] = fn
        return fn

    return deco


def load_run(run_dir: str | Path, data_dir: str | None = None, *, device: str = "cpu") -> LoadedRun:
    """The run's models (on ``device``: auto, cpu or cuda) and clean test split, via its protocol's loader."""
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "metrics.json").is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a complete run (no metrics.json)")
    config = read_json(run_dir / "config.json")
    method = config.get("method") if isinstance(config, dict) else None
    if method not in RUN_LOADERS:
        _import_loaders()
    if method not in RUN_LOADERS:
        raise CheckpointError(
            f"{str(run_dir)!r}: unknown run method {method!r}; known: {sorted(RUN_LOADERS)}"
        )
    return RUN_LOADERS[method](run_dir, config, data_dir, dev)


def _import_loaders() -> None:
    import mmguard.experiments.emma.run_loader  # noqa: F401  (registers "emma")
    import mmguard.experiments.mmssl.run_loader  # noqa: F401  (registers "mmssl")
