"""Reconstruction errors per sample, modality and modality group (any model that restores inputs).

* :func:`per_sample_mse` — MSE per sample over every feature axis;
* :func:`per_sample_errors` — (N, M) MSE per sample and modality against the clean input;
* :func:`modality_groups` / :func:`group_errors` — the paper's ``camera`` (image) and
  ``sensor`` (every other kind) groups and their per-sample sums, plus ``combined``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmguard.data.model import ModalityKind, ModalitySpec


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (N,) over every feature axis of (N, ...) tensors."""
    return (pred - target).pow(2).reshape(pred.shape[0], -1).mean(1)


def modality_groups(specs: tuple[ModalitySpec, ...]) -> dict[str, list[int]]:
    """Column indices of the paper's error groups: ``camera`` (image) and ``sensor`` (vector)."""
    return {
        "camera": [i for i, s in enumerate(specs) if s.kind == ModalityKind.IMAGE],
        "sensor": [i for i, s in enumerate(specs) if s.kind != ModalityKind.IMAGE],
    }


def per_sample_errors(
    recon: Mapping[str, torch.Tensor], clean: Mapping[str, torch.Tensor], names: tuple[str, ...]
) -> torch.Tensor:
    """MSE per sample and modality (N, M) against the clean standardized input."""
    return torch.stack([per_sample_mse(recon[n], clean[n]) for n in names], dim=1)


def group_errors(err: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Per-sample camera / sensor / combined errors (N,): sums over each group's modalities."""
    cam = err[:, groups["camera"]].sum(1)
    sen = err[:, groups["sensor"]].sum(1)
    return {"camera": cam, "sensor": sen, "combined": cam + sen}
