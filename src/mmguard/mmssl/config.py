"""Typed configuration of the MMSSL model (stage 1 and stage 2), validated with pydantic.

Every default is a decision documented in docs/mmssl.md; the paper (summary in
``../shared/seeds/mmssl-paper-summary.md``) gives no numeric hyperparameters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AutoencoderConfig(BaseModel):
    """Stage 1: the multimodal convolutional autoencoder (MMAE) and the DAE baseline."""

    model_config = ConfigDict(extra="forbid")

    image_encoder: Literal["conv", "dense"] = "conv"
    image_channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    image_hidden: int = Field(256, ge=1)
    image_code: int = Field(64, ge=1)
    sensor_encoder: Literal["dense", "conv1d"] = "dense"
    sensor_hidden: int = Field(128, ge=1)
    sensor_code: int = Field(32, ge=1)
    latent_dim: int = Field(64, ge=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    patience: int | None = Field(6, ge=1)


class ComputeConfig(BaseModel):
    """Stage 2: the compute block (detector + contraction corrector) and its modulation."""

    model_config = ConfigDict(extra="forbid")

    detector_hidden: int = Field(128, ge=1)
    embedding_dim: int = Field(16, ge=1)
    margin: float = Field(2.0, gt=0)
    corrector_hidden: list[int] = Field(default_factory=lambda: [256, 256])
    corrector_activation: Literal["maxmin", "relu"] = "maxmin"
    lipschitz_bound: float = Field(0.95, gt=0)
    recon_weight: float = Field(0.1, ge=0)
    recon_samples: int = Field(16, ge=0)
    # layer-specific Lipschitz modulation (paper section 4)
    gamma: float = Field(4.0, ge=1.0)
    renormalize: bool = True
    clip_tau: float | None = Field(1.0, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(128, ge=1)
    patience: int | None = Field(8, ge=1)
    corruption_draws: int = Field(4, ge=1)
    # routing gate
    false_alarm_rate: float = Field(0.01, gt=0, lt=1)

    @field_validator("lipschitz_bound")
    @classmethod
    def _contraction(cls, v: float) -> float:
        if v >= 1.0:
            raise ValueError(f"the corrector must be a contraction: lipschitz_bound < 1, got {v}")
        return v
