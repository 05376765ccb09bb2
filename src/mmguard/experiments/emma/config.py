"""Typed configuration of an EMMA run (``mmguard emma run``), validated with pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GRID_AXIS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1]
RHO_AXIS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


class GridConfig(BaseModel):
    """The model-with hyperparameter grid (thesis table 6.2: rho x lambda_c x lambda_e)."""

    model_config = ConfigDict(extra="forbid")

    rho: list[float] = Field(default_factory=lambda: list(RHO_AXIS))
    lambda_c: list[float] = Field(default_factory=lambda: list(GRID_AXIS))
    lambda_e: list[float] = Field(default_factory=lambda: list(GRID_AXIS))

    @field_validator("rho")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError(f"rho values must be positive and non-empty, got {v}")
        return v

    @field_validator("lambda_c", "lambda_e")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v):
            raise ValueError(f"lambda values must be >= 0 and non-empty, got {v}")
        return v

    @property
    def size(self) -> int:
        return len(self.rho) * len(self.lambda_c) * len(self.lambda_e)

    @classmethod
    def named(cls, name: str) -> GridConfig:
        if name == "full":
            return cls()
        if name == "small":
            return cls(rho=[1e-3, 1e-1], lambda_c=[0.0, 1e-2], lambda_e=[0.0, 1e-2])
        if name == "thesis-top":
            return cls(rho=[1e-4], lambda_c=[1e-3], lambda_e=[1e-2])
        raise ValueError(f"unknown grid {name!r}; use full, small or thesis-top")


class EmmaRunConfig(BaseModel):
    """Everything that defines an EMMA experiment run; saved as DIR/config.json."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "htru2"
    data_dir: str | None = None
    mapping: str | None = None
    split_seed: int = 0
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    grid: GridConfig = Field(default_factory=GridConfig)
    # stage settings (issue #3 / thesis 6.3.1)
    epochs: int = Field(35, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    mmn_hidden: list[int] = Field(default_factory=lambda: [8, 4])
    # potential energy autoencoders (appendix B)
    dae_hidden: int = Field(12, ge=1)
    dae_epochs: int = Field(30, ge=1)
    dae_batch_size: int = Field(64, ge=1)
    dae_sigma: float = Field(0.01, ge=0)
    # corruption schedule (thesis 6.3.1)
    train_fault: str = "gaussian_noise"
    sigma: float = Field(0.5, gt=0)
    clean_fraction: float = Field(0.5, ge=0, lt=1)
    # beyond the thesis (both model-without and model-with see the same corruption):
    # "fixed" = one draw per split (thesis); "resampled" = a new training draw every epoch
    train_noise: Literal["fixed", "resampled"] = "fixed"
    # per-sample sigma ~ U[lo, hi] for the training split instead of the constant ``sigma``
    sigma_range: tuple[float, float] | None = None
    # selection and reporting
    threshold_rules: list[Literal["roc_distance", "f1_max"]] = Field(
        default_factory=lambda: ["roc_distance", "f1_max"]
    )
    selection_rule: Literal["roc_distance", "f1_max"] = "roc_distance"
    sweep_sigmas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0])
    anneal: Literal["off", "on", "compare"] = "off"
    anneal_rho_start: float = Field(1e-6, gt=0)
    anneal_cool_epochs: int = Field(15, ge=1)
    anneal_patience: int | None = 3
    threads: int | None = None
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where the stages train (docs/devices.md)")
    quick: bool = False

    @field_validator("sigma_range")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0 <= v[0] <= v[1]):
            raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi, got {v}")
        return v

    @classmethod
    def quick_config(cls, **overrides) -> EmmaRunConfig:
        """CI-sized settings: 2 seeds, small grid, short training (finishes in about a minute)."""
        base = dict(
            seeds=[0, 1],
            grid=GridConfig.named("small"),
            epochs=6,
            dae_epochs=6,
            sweep_sigmas=[0.0, 0.5, 1.0, 2.0, 3.0],
            quick=True,
            anneal="off",
        )
        base.update(overrides)
        return cls(**base)
