"""The plain multimodal autoencoder as a guard (``mmae``; MMSSL paper table 1, row "MMAE").

It is MMSSL's stage 1 on its own: the multimodal convolutional autoencoder of
:mod:`mmguard.mmssl.autoencoder` (conv encoders for images, dense for vectors, one fused
latent) trained on **clean** data only, early-stopped on the clean validation split.

* ``transform`` — every sample is replaced by its reconstruction (no gate);
* ``score`` — per-modality reconstruction residual, the mean squared difference between a
  modality's standardised input and its reconstruction (autoencoder-residual anomaly
  detection), calibrated by the base class.

:class:`AutoencoderGuard` is the shared template of the autoencoder baselines (this one and
``dae`` in :mod:`mmguard.baselines.dae`); it is not registered itself.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmguard.data.model import MultimodalBatch
from mmguard.data.stream import StreamSplit
from mmguard.eval.reconstruction import per_sample_errors
from mmguard.faults import FaultSpec
from mmguard.guard import Guard, GuardConfig, register_guard
from mmguard.mmssl.autoencoder import MultimodalAutoencoder
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.mmssl.stages import summary, train_autoencoder, train_autoencoder_stream


class AutoencoderGuardConfig(GuardConfig):
    """Settings of an autoencoder baseline: the stage-1 architecture and training (docs/mmssl.md)."""

    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)


class AutoencoderGuard(Guard):
    """Shared template: one :class:`MultimodalAutoencoder`; subclasses choose the training inputs."""

    config_class = AutoencoderGuardConfig
    quick_config = {"autoencoder": {"epochs": 8, "patience": None}}
    flags = True
    corrects = True
    modality_kinds = frozenset({"vector", "image"})
    streams = True

    def denoise_spec(self, train: MultimodalBatch) -> FaultSpec | None:
        """The corruption mix the inputs are drawn from during training (None: clean inputs)."""
        return None

    def _fit(self, train: MultimodalBatch, val: MultimodalBatch, *, seed: int, progress: bool) -> dict[str, Any]:
        ae, result = train_autoencoder(train, val, self.config.autoencoder, seed=seed,
                                       denoise_spec=self.denoise_spec(train))
        self.model = ae
        return {"autoencoder": summary(result)}

    def _fit_stream(self, train: StreamSplit, val: StreamSplit, *, seed: int, progress: bool) -> dict[str, Any]:
        """Data larger than memory: the same training through :func:`train_autoencoder_stream`."""
        peek = train.source.read(slice(0, min(2, len(train))))  # the fault mix needs the modalities' kinds only
        ae, result = train_autoencoder_stream(train, val, self.config.autoencoder, seed=seed,
                                              denoise_spec=self.denoise_spec(peek))
        self.model = ae
        return {"autoencoder": summary(result)}

    @property
    def autoencoder(self) -> MultimodalAutoencoder:
        self._require()
        return self.model  # type: ignore[return-value]

    def _score(self, x: MultimodalBatch) -> torch.Tensor:
        recon = self.model(x.modalities)  # type: ignore[misc]
        return per_sample_errors(recon, x.modalities, self.names)

    def _transform(self, x: MultimodalBatch) -> dict[str, torch.Tensor]:
        return self.model(x.modalities)  # type: ignore[misc]

    def _inference_module(self) -> nn.Module:
        return AutoencoderPath(self.autoencoder, self.names)

    def _build_model(self, state: dict[str, Any]) -> nn.Module:
        return MultimodalAutoencoder(self.specs, self.config.autoencoder)


class AutoencoderPath(nn.Module):
    """Export hook of the autoencoder baselines: standardised modalities → ``_score`` and ``_transform``."""

    def __init__(self, ae: MultimodalAutoencoder, names: tuple[str, ...]) -> None:
        super().__init__()
        self.ae, self.names = ae, names

    def forward(self, *xs: torch.Tensor) -> dict[str, Any]:
        x = dict(zip(self.names, xs, strict=True))
        recon = self.ae(x)
        return {"scores": per_sample_errors(recon, x, self.names), "fixed": tuple(recon[n] for n in self.names)}


@register_guard
class MmaeGuard(AutoencoderGuard):
    """Multimodal autoencoder trained on clean data (reconstructs every sample)."""

    name = "mmae"
    summary = "multimodal conv autoencoder trained on clean data; reconstructs every sample (paper: MMAE)"
