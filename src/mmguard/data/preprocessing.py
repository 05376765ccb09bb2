"""Preprocessing fitted on the training split only and saved with every trained model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.errors import CheckpointError, SpecError


@dataclass(frozen=True)
class Standardizer:
    """Per-modality, per-feature z-scoring: x' = (x - mean) / std.

    Statistics are fitted on the training split (thesis section 6.1: "the statistics ... are
    computed from the training set instead of the entire dataset, and applied to the three
    data subsets"). For images the statistics are per channel; for time series per channel
    over time; for vectors per feature. A feature with zero spread gets std 1 (so it is only
    centred) — decided so constant sensors never produce Inf.
    """

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    @staticmethod
    def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
        # sample axis plus every axis that is not a feature/channel axis
        if x.ndim == 2:  # vector (N, D)
            return (0,)
        if x.ndim == 3:  # timeseries (N, T, D)
            return (0, 1)
        if x.ndim == 4:  # image (N, C, H, W)
            return (0, 2, 3)
        raise SpecError(f"cannot standardize a tensor of shape {tuple(x.shape)}")

    @classmethod
    def fit(cls, batch: MultimodalBatch, weights: torch.Tensor | None = None) -> Standardizer:
        """Statistics of ``batch``; optional non-negative per-sample ``weights`` (N,) give a weighted
        mean and (population) variance — used by test-time adaptation to re-weight a window of
        unlabeled samples to the training class mix (:mod:`mmguard.adapt.stats`)."""
        w = None
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if w.shape[0] != len(batch) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()) \
                    or float(w.sum()) <= 0:
                raise SpecError(f"standardizer weights must be {len(batch)} finite non-negative numbers, not all 0")
        mean, std = {}, {}
        for name, x in batch.modalities.items():
            dims = cls._reduce_dims(x)
            x64 = x.double()
            if w is None:
                m = x64.mean(dim=dims, keepdim=True)[0]
                s = x64.std(dim=dims, keepdim=True, unbiased=False)[0]
            else:
                wx = w.to(x64.device).reshape(-1, *([1] * (x64.ndim - 1))).expand_as(x64)
                total = wx.sum(dim=dims, keepdim=True)
                m = (wx * x64).sum(dim=dims, keepdim=True) / total
                s = ((wx * (x64 - m) ** 2).sum(dim=dims, keepdim=True) / total).sqrt()
                m, s = m[0], s[0]
            s = torch.where(s > 1e-12, s, torch.ones_like(s))
            mean[name], std[name] = m.float(), s.float()
        return cls(mean=mean, std=std)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[MultimodalBatch]) -> Standardizer:
        """The statistics of :meth:`fit` over the concatenation of ``chunks``, in one pass and memory
        bounded by one chunk (datasets larger than memory, :mod:`mmguard.data.stream`): per chunk the
        float64 count, mean and sum of squared deviations, merged with the pairwise update of Chan,
        Golub & LeVeque (1979), which stays exact where a running sum of squares would cancel."""
        count: dict[str, float] = {}
        mean: dict[str, torch.Tensor] = {}
        m2: dict[str, torch.Tensor] = {}
        for batch in chunks:
            for name, x in batch.modalities.items():
                dims = cls._reduce_dims(x)
                x64 = x.double()
                n_b = float(np.prod([x64.shape[d] for d in dims]))  # values per feature in this chunk
                var_b, mu_b = torch.var_mean(x64, dim=dims, keepdim=True, correction=0)
                mu_b, m2_b = mu_b[0], var_b[0] * n_b
                if name not in count:
                    count[name], mean[name], m2[name] = n_b, mu_b, m2_b
                    continue
                n_a = count[name]
                delta = mu_b - mean[name]
                total = n_a + n_b
                mean[name] = mean[name] + delta * (n_b / total)
                m2[name] = m2[name] + m2_b + delta**2 * (n_a * n_b / total)
                count[name] = total
        if not count:
            raise SpecError("cannot fit a standardizer on no data")
        out_mean, out_std = {}, {}
        for name in count:
            s = (m2[name] / count[name]).sqrt()
            s = torch.where(s > 1e-12, s, torch.ones_like(s))
            out_mean[name], out_std[name] = mean[name].float(), s.float()
        return cls(mean=out_mean, std=out_std)

    def transform(self, batch: MultimodalBatch) -> MultimodalBatch:
        missing = [n for n in batch.names if n not in self.mean]
        if missing:
            raise SpecError(f"standardizer has no statistics for modalities {missing}")
        return batch.with_modalities(
            {n: (batch.modalities[n] - self.mean[n]) / self.std[n] for n in batch.names}
        )

    def inverse(self, batch: MultimodalBatch) -> MultimodalBatch:
        return batch.with_modalities(
            {n: batch.modalities[n] * self.std[n] + self.mean[n] for n in batch.names}
        )

    # ---- persistence: flat tensor dict for safetensors
    def state_tensors(self, prefix: str = "standardizer") -> dict[str, torch.Tensor]:
        out = {}
        for n in self.mean:
            out[f"{prefix}.{n}.mean"] = self.mean[n].contiguous()
            out[f"{prefix}.{n}.std"] = self.std[n].contiguous()
        return out

    @classmethod
    def from_state_tensors(cls, tensors: Mapping[str, torch.Tensor], names: list[str],
                           prefix: str = "standardizer") -> Standardizer:
        try:
            return cls(
                mean={n: tensors[f"{prefix}.{n}.mean"] for n in names},
                std={n: tensors[f"{prefix}.{n}.std"] for n in names},
            )
        except KeyError as exc:
            raise CheckpointError(f"checkpoint lacks standardizer statistics {exc.args[0]!r}") from None
