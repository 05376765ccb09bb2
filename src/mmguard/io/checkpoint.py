"""Checkpoints as ``weights.safetensors`` + ``config.json``; never pickle.

Writes go to a temporary file in the same folder and are renamed into place, so a
crash never leaves a half-written file. Loading uses ``safetensors`` (no code execution)
and ``json``; anything malformed raises a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmguard.errors import CheckpointError
from mmguard.io.atomic import atomic_write
from mmguard.io.jsonio import jsonable as _jsonable

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(Path(path), write)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NumPy/torch values converted, NaN → null)."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file {str(path)!r}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"malformed JSON in {str(path)!r}: {exc}") from None


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``directory/weights.safetensors`` and ``directory/config.json`` atomically."""
    directory = Path(directory)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(flat, tmp))
    write_json(directory / CONFIG, config)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe for untrusted files)."""
    directory = Path(directory)
    wpath = directory / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"missing weights file {str(wpath)!r}")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"unreadable safetensors file {str(wpath)!r}: {exc}") from None
    config = read_json(directory / CONFIG)
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(directory / CONFIG)!r} must hold a JSON object")
    return tensors, config
