"""Typed configuration of an MMSSL run (``mmguard mmssl run``), validated with pydantic.

Every default is a decision documented in docs/mmssl.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmguard.experiments.fields import SeedList
from mmguard.mmssl.config import AutoencoderConfig, ComputeConfig


class MmsslRunConfig(BaseModel):
    """Everything that defines an MMSSL experiment; saved as DIR/config.json."""

    model_config = ConfigDict(extra="forbid")

    data: str
    modalities: list[str] = Field(default_factory=lambda: ["camera", "kinematics"])
    max_episodes: int | None = Field(None, ge=3)
    split_seed: int = 0
    seeds: SeedList = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    ablations: list[Literal["no_amplification", "no_renormalization", "no_contraction", "clip_only",
                         "shrink_only"]] = Field(
        default_factory=lambda: ["no_amplification", "no_renormalization", "no_contraction"]
    )
    train_faults: dict[str, Any] | None = None
    eval_faults: list[dict[str, Any]] | None = None
    severity_sweep: bool = True
    analysis: bool = True
    threads: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where every seed trains (docs/devices.md)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast the training forward passes")
    quick: bool = False

    @field_validator("modalities")
    @classmethod
    def _two(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(f"MMSSL needs at least 2 distinct modalities, got {v}")
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
