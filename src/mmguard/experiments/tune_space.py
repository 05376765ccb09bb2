"""The search space of ``mmguard tune``: dotted guard-config keys → distributions, sampled per trial.

A space file (JSON or YAML) is one mapping::

    autoencoder.lr:         {loguniform: [1.0e-4, 1.0e-2]}
    autoencoder.batch_size: {choice: [32, 64, 128]}
    autoencoder.latent_dim: {randint: [8, 64]}

Decisions:

* **Distributions.** ``uniform [low, high]`` and ``loguniform [low, high]`` (floats, ``0 < low`` for
  the log scale), ``randint [low, high]`` and ``lograndint [low, high]`` (integers, **both bounds
  inclusive**: the file says which sizes are allowed, not a Python half-open range), ``choice
  [v1, v2, ...]`` (any JSON values, e.g. lists of channels). Everything else is refused.
* **Keys are checked against the guard's config class** before anything runs: each dotted part must
  be a field of the (nested) pydantic config, so a typo is a one-line :class:`SpecError` naming the
  key, not a silently ignored setting.
* **Trial k is a pure function of (search seed, k).** Each value is drawn from its own generator,
  seeded by ``derive_seed(seed, "tune", k, key)`` (SHA-256, :mod:`mmguard.seeding`): the draw does not
  depend on the engine, the worker, the order trials run in, the number of trials, or the other
  keys of the space (adding a key leaves the values of the others unchanged).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmguard.errors import SpecError
from mmguard.seeding import derive_seed

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "lograndint", "choice")


class Distribution(BaseModel):
    """One distribution: ``kind`` and its arguments (bounds, or the values of a choice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["uniform", "loguniform", "randint", "lograndint", "choice"]
    args: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.kind == "choice":
            return self
        if len(self.args) != 2:
            raise ValueError(f"{self.kind} takes [low, high], got {self.args}")
        low, high = self.args
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (low, high))
        if not numeric:
            raise ValueError(f"{self.kind} bounds must be finite numbers, got {self.args}")
        if self.kind in ("randint", "lograndint") and not all(float(v).is_integer() for v in (low, high)):
            raise ValueError(f"{self.kind} bounds must be integers, got {self.args}")
        if self.kind in ("loguniform", "lograndint") and low <= 0:
            raise ValueError(f"{self.kind} needs 0 < low, got {self.args}")
        if low > high or (low == high and self.kind in ("uniform", "loguniform")):
            raise ValueError(f"{self.kind} needs low < high, got {self.args}")
        return self

    def sample(self, rng: np.random.Generator) -> Any:
        """One value (a plain Python int, float or JSON value)."""
        if self.kind == "choice":
            return self.args[int(rng.integers(len(self.args)))]
        low, high = self.args
        if self.kind == "uniform":
            return float(rng.uniform(low, high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.kind == "randint":
            return int(rng.integers(int(low), int(high) + 1))
        # lograndint: uniform in log space over [low, high + 1), floored: every integer reachable
        return int(min(int(high), math.floor(math.exp(rng.uniform(math.log(low), math.log(int(high) + 1))))))

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: list(self.args)}


class SearchSpace(BaseModel):
    """A validated space: ``{dotted key: distribution}`` (keys in the file's order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Distribution]

    def to_dict(self) -> dict[str, Any]:
        return {k: d.to_dict() for k, d in self.params.items()}

    def sample(self, seed: int, k: int) -> dict[str, Any]:
        """Trial ``k``'s values ``{dotted key: value}``: a pure function of (``seed``, ``k``)."""
        return {key: dist.sample(np.random.default_rng(derive_seed(seed, "tune", int(k), key)))
                for key, dist in self.params.items()}


def parse_space(raw: Any, where: str = "search space") -> SearchSpace:
    """A :class:`SearchSpace` from a mapping (one-line :class:`SpecError` naming the bad key)."""
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError(f"{where} must be a non-empty mapping of dotted config keys to distributions")
    params: dict[str, Distribution] = {}
    for key, entry in raw.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise SpecError(f"{where}: bad key {key!r}; use dotted config keys such as autoencoder.lr")
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise SpecError(f"{where} key {key!r}: give exactly one distribution, e.g. {{loguniform: [1e-4, 1e-2]}}")
        (kind, args), = entry.items()
        if kind not in DISTRIBUTIONS:
            raise SpecError(f"{where} key {key!r}: unknown distribution {kind!r}; use one of "
                            f"{', '.join(DISTRIBUTIONS)}")
        if not isinstance(args, list):
            raise SpecError(f"{where} key {key!r}: {kind} takes a list, got {args!r}")
        try:
            params[key] = Distribution(kind=kind, args=args)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise SpecError(f"{where} key {key!r}: {msg}") from None
    for key in params:  # "autoencoder" and "autoencoder.lr" would set the same setting twice
        inner = next((k for k in params if k.startswith(key + ".")), None)
        if inner is not None:
            raise SpecError(f"{where} key {key!r} overlaps key {inner!r}; give one of them")
    return SearchSpace(params=params)


def read_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file (JSON, or YAML for any other suffix)."""
    import json

    import yaml

    from mmguard.data._io import require_file

    p = require_file(Path(path), "search space file")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"malformed search space file {str(p)!r}: {str(exc).splitlines()[0]}") from None
    return parse_space(raw, f"search space {str(p)!r}")


# ---------------------------------------------------------------------------- config keys
def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field annotation (``Model``, ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def check_keys(space: SearchSpace, config_class: type[BaseModel], guard: str) -> None:
    """Every key of ``space`` names a field of ``config_class`` (nested through pydantic sub-models)."""
    for key in space.params:
        model: type[BaseModel] | None = config_class
        parts = key.split(".")
        for i, part in enumerate(parts):
            if model is None or part not in model.model_fields:
                known = ", ".join(sorted(model.model_fields)) if model is not None else "none (not a section)"
                where = ".".join(parts[:i]) or "the top level"
                raise SpecError(f"search space key {key!r} is not a field of guard {guard!r}'s config "
                                f"({where} has: {known})")
            if i < len(parts) - 1:
                model = _model_in(model.model_fields[part].annotation)


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, section by section (nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merged(out[key], value) if both else value
    return out


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` → ``{"a": {"b": 1, "c": 2}}`` (config overrides for ``create_guard``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def epoch_fields(config_class: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of every integer ``epochs`` field in a config (the training budget ASHA scales)."""
    out: list[str] = []
    for name, info in config_class.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_in(info.annotation)
        if sub is not None:
            out += epoch_fields(sub, key + ".")
        elif name == "epochs" and info.annotation is int:
            out.append(key)
    return out


def get_key(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a (dumped) config."""
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def with_key(config: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of a (dumped) config with the dotted ``key`` set to ``value``."""
    return merged(config, nest({key: value}))


def asha_rungs(epochs: int, eta: int = 3) -> list[int]:
    """Training budgets (epochs) of ASHA's rungs for a full budget of ``epochs``: ``g``, ``g·eta``, … below
    ``epochs`` with ``g = ceil(epochs / eta²)``, then ``epochs`` itself (at most three rungs)."""
    grace = max(1, math.ceil(epochs / eta**2))
    rungs = [grace * eta**i for i in range(2) if grace * eta**i < epochs]
    return [*rungs, int(epochs)]
