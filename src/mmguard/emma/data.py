"""Data preparation EMMA's training needs (model side; used by the guard and by the protocol).

* :func:`num_classes_of` — K of a class target (0..K-1), with one-line errors;
* :func:`schedule_spec` — the corruption schedule of thesis section 6.3.1, generalised to M modalities;
* :func:`to_streams` — per-seed copies of a split stacked into the stream dict of
  :mod:`mmguard.emma.training`.
"""

from __future__ import annotations

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.errors import DataError
from mmguard.faults import per_modality_rates


def num_classes_of(batch: MultimodalBatch) -> int:
    if batch.target is None:
        raise DataError("EMMA experiments need a classification target")
    y = batch.target
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise DataError("EMMA experiments need integer class labels, got a continuous target")
    k = int(y.max()) + 1
    if k < 2 or int(y.min()) < 0:
        raise DataError(
            f"class labels must be 0..K-1 with K >= 2, got range [{int(y.min())}, {int(y.max())}]"
        )
    return k


def schedule_spec(names: tuple[str, ...], sigma: float, clean_fraction: float, fault: str = "gaussian_noise"):
    """Section 6.3.1 generalised: clean_fraction clean, the rest evenly "only modality i"."""
    rate = (1.0 - clean_fraction) / len(names)
    params = {"sigma": sigma} if fault == "gaussian_noise" else {}
    return per_modality_rates({n: rate for n in names}, fault, params, selection="exclusive")


def to_streams(batches: list[MultimodalBatch]) -> dict[str, torch.Tensor]:
    """Stack per-seed copies of a split into a stream dict (see mmguard.emma.training)."""
    names = batches[0].names
    out = {f"m{i}": torch.stack([b.modalities[n] for b in batches]) for i, n in enumerate(names)}
    out["y"] = torch.stack([b.target.long() for b in batches])
    out["mask"] = torch.stack([b.mask_or_clean() for b in batches])
    return out
