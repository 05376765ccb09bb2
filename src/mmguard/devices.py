"""Torch device and numeric precision shared by every training and inference path.

* ``--device auto|cpu|cuda`` → :func:`resolve_device`;
* ``--precision fp32|bf16`` → :func:`resolve_precision`, :func:`autocast`, :func:`use_precision`.

Precision decisions (docs/devices.md): ``fp32`` is the default everywhere and on CPU nothing
changes unless ``bf16`` is asked for. ``bf16`` means ``torch.autocast(dtype=torch.bfloat16)``
around *forward passes only* — the loss and validation functions of the one training loop
(:func:`mmguard.train.loop.train_ensemble`) and a guard's inference hooks
(:meth:`mmguard.guard.Guard.score` / ``transform`` / ``predict``). Parameters, gradients, optimizer
state, Lipschitz projections, gradient modulation, calibration thresholds, drift statistics and
everything compared with a threshold stay float32 (or float64); bf16 has float32's exponent
range, so no gradient scaler is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from mmguard.errors import SpecError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("fp32", "bf16")

_PRECISION: ContextVar[str] = ContextVar("mmguard_training_precision", default="fp32")


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


def check_precision(precision: str) -> str:
    """``precision`` normalised (``fp32`` or ``bf16``); anything else is a one-line error."""
    text = str(precision).strip().lower()
    if text not in PRECISION_CHOICES:
        raise SpecError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}")
    return text


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """:func:`check_precision`, and ``bf16`` on a CUDA GPU without bfloat16 support is a one-line error."""
    text = check_precision(precision)
    dev = resolve_device(device)
    if text == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SpecError(f"precision 'bf16' requested but the GPU {dev} does not support bfloat16 (use fp32)")
    return text


def current_precision() -> str:
    """The training precision in effect (set by :func:`use_precision`; ``fp32`` by default)."""
    return _PRECISION.get()


@contextlib.contextmanager
def use_precision(precision: str) -> Iterator[str]:
    """Within the block, training loops that are not given a precision use ``precision``.

    :meth:`mmguard.guard.Guard.fit` runs its ``_fit`` hook inside ``use_precision(guard.precision)``,
    so every guard — built-in, baseline or plugin — trains in the precision it was created with
    without passing it down by hand. Context-local (threads and asyncio tasks do not leak into
    each other).
    """
    token = _PRECISION.set(check_precision(precision))
    try:
        yield _PRECISION.get()
    finally:
        _PRECISION.reset(token)


def autocast(device: torch.device | str, precision: str | None = None) -> contextlib.AbstractContextManager:
    """Context for a forward pass: ``torch.autocast(bfloat16)`` for ``bf16``, nothing for ``fp32``.

    ``precision=None`` takes :func:`current_precision`. ``fp32`` is a no-op context (not a
    disabled autocast), so fp32 numbers are exactly those of code without it.
    """
    p = current_precision() if precision is None else check_precision(precision)
    if p == "fp32":
        return contextlib.nullcontext()
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
