"""Torch device selection shared by every training and inference path (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import torch

from mmguard.errors import SpecError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a one-line error.

    ``cuda:1`` style indices are accepted. Tests and CI run on CPU.
    """
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {text!r} requested but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(text)
    raise SpecError(f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}")
