"""Typed configuration of an MMSSL run (``mmguard mmssl run``), validated with pydantic.

Every default is a decision documented in docs/mmssl.md; the paper (summary in
``../shared/seeds/mmssl-paper-summary.md``) gives no numeric hyperparameters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AutoencoderConfig(BaseModel):
    """Stage 1: the multimodal convolutional autoencoder (MMAE) and the DAE baseline."""

    model_config = ConfigDict(extra="forbid")

    image_encoder: Literal["conv", "dense"] = "conv"
    image_channels: list[int] = Field(default_factory=lambda: [16, 32, 64])
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


class MmsslRunConfig(BaseModel):
    """Everything that defines an MMSSL experiment; saved as DIR/config.json."""

    model_config = ConfigDict(extra="forbid")

    data: str
    modalities: list[str] = Field(default_factory=lambda: ["camera", "kinematics"])
    max_episodes: int | None = Field(None, ge=3)
    split_seed: int = 0
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    ablations: list[Literal["no_amplification", "no_renormalization", "no_contraction"]] = Field(
        default_factory=lambda: ["no_amplification", "no_renormalization", "no_contraction"]
    )
    train_faults: dict[str, Any] | None = None
    eval_faults: list[dict[str, Any]] | None = None
    severity_sweep: bool = True
    analysis: bool = True
    threads: int | None = Field(None, ge=1)
    quick: bool = False

    @field_validator("modalities")
    @classmethod
    def _two(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(f"MMSSL needs at least 2 distinct modalities, got {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {v}")
        return v

    @model_validator(mode="after")
    def _ablations_unique(self) -> MmsslRunConfig:
        if len(set(self.ablations)) != len(self.ablations):
            raise ValueError(f"ablations listed twice: {self.ablations}")
        return self

    @classmethod
    def quick_config(cls, **overrides: Any) -> MmsslRunConfig:
        """CI-sized settings (2 seeds, at most 24 episodes, short training): minutes on 2 cores."""
        base: dict[str, Any] = dict(
            seeds=[0, 1],
            max_episodes=24,
            autoencoder=AutoencoderConfig(epochs=8, patience=None),
            compute=ComputeConfig(epochs=15, corruption_draws=2, patience=None),
            quick=True,
        )
        base.update(overrides)
        return cls(**base)
