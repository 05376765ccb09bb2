"""The one contract every guard (EMMA, MMSSL, each baseline) implements.

A *guard* sits in front of (or around) a multimodal prediction model and

1. ``fit(splits, seed=...)`` — trains on the training split, uses the validation split for
   early stopping / thresholds, never touches ``splits.test``;
2. ``score(batch)`` — returns per-sample × per-modality *failure scores* (N, M), higher
   meaning "more likely failing" (EMMA: shifted potential energy Ψ (thesis eq. 5.3);
   MMSSL: detector anomaly score);
3. ``transform(batch)`` — returns the batch as the downstream model should see it: gated
   (EMMA: β_i · x_i, thesis step 5) or corrected (MMSSL: routed through the corrector);
4. ``save(directory)`` / ``load(directory)`` — ``weights.safetensors`` + ``config.json``
   including thresholds and preprocessing statistics, never pickle.

A new method is a new sub-package implementing this class; training loops and evaluation
code (:mod:`mmguard.train`, :mod:`mmguard.eval`) only talk to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits


class Guard(ABC):
    """Abstract base class of all guards (see module docstring for the contract)."""

    #: short registry name, e.g. ``"emma"``
    kind: ClassVar[str] = ""

    @abstractmethod
    def fit(self, splits: Splits, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
        """Train on ``splits.train`` (validation for early stopping); returns a fit report."""

    @abstractmethod
    def score(self, batch: MultimodalBatch) -> torch.Tensor:
        """Failure score per sample and modality, shape (N, M), higher = more likely failing."""

    @abstractmethod
    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Gate or correct the batch for the downstream model."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Persist weights, thresholds and preprocessing (safetensors + JSON)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Guard:
        """Inverse of :meth:`save`; safe on untrusted files."""
