"""Fault specs: plain JSON/YAML documents describing which faults hit which samples.

Format::

    {"scenario": {"name": str, "description": str,
                  "selection": "independent" | "exclusive", "seed": int | null},
     "faults": [{"modality": str, "type": str, "params": {...}, "rate": float in [0, 1],
                 "group": str | null}, ...]}

Selection semantics (implemented in :mod:`mmguard.faults.apply`, documented in docs/faults.md):

* ``independent`` — every entry (or group) picks exactly ``round(rate * N)`` samples through
  its own seeded permutation, independently of the other entries;
* ``exclusive`` — the entries (groups count once) partition one seeded permutation into
  disjoint blocks, so a sample gets at most one of them; the rates must sum to <= 1. With two
  entries of rate 0.25 this is the EMMA thesis schedule (section 6.3.1): 50 % clean, 25 % only
  mode A, 25 % only mode B;
* entries sharing a ``group`` share the selected samples — a common-cause failure degrading
  several modalities of the same sample together (the MMSSL motivation); they must have the
  same rate.

When several entries hit the same (sample, modality) they compose in list order and the fault
code records the last one.

Every error — malformed YAML/JSON, unknown key, unknown fault type, bad parameter, rate out of
range — is a one-line :class:`~mmguard.errors.SpecError` naming the offending value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmguard.errors import MMGuardError, SpecError
from mmguard.faults.registry import get_fault

RATE_TOLERANCE = 1e-9


class Scenario(BaseModel):
    """Settings shared by all entries of a spec."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="Short name used in reports and file names.")
    description: str = Field("", description="Free text.")
    selection: Literal["independent", "exclusive"] = Field(
        "independent", description="How entries select samples (see module docstring).")
    seed: int | None = Field(None, description="Default seed when apply_faults gets none.")


class FaultEntry(BaseModel):
    """One fault applied to one modality of a fraction ``rate`` of the samples."""

    model_config = ConfigDict(extra="forbid")

    modality: str = Field(min_length=1, description="Name of the modality to corrupt.")
    type: str = Field(description="Fault type name (see `mmguard faults list`).")
    params: dict[str, Any] = Field(default_factory=dict, description="Fault parameters (defaults filled in).")
    rate: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False, description="Fraction of samples hit.")
    group: str | None = Field(None, min_length=1, description="Entries with the same group share samples.")

    @model_validator(mode="after")
    def _check_fault(self) -> FaultEntry:
        fault = get_fault(self.type)
        self.type = fault.name  # aliases resolve to the canonical name
        self.params = fault.normalize_params(self.params)
        return self

    def key(self) -> str:
        """Selection key: entries with the same key share their samples."""
        return f"group:{self.group}" if self.group is not None else ""


class FaultSpec(BaseModel):
    """A validated fault spec. Build with :func:`load_spec` (or the builders) for one-line errors."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario = Field(default_factory=Scenario)
    faults: list[FaultEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_rates(self) -> FaultSpec:
        group_rate: dict[str, float] = {}
        for i, e in enumerate(self.faults):
            if e.group is None:
                continue
            if e.group in group_rate and abs(group_rate[e.group] - e.rate) > RATE_TOLERANCE:
                raise SpecError(f"faults[{i}]: group {e.group!r} has rate {e.rate!r} but an earlier entry "
                                f"of the group has rate {group_rate[e.group]!r} (a group shares its samples)")
            group_rate.setdefault(e.group, e.rate)
        if self.scenario.selection == "exclusive":
            total = sum(group_rate.values()) + sum(e.rate for e in self.faults if e.group is None)
            if total > 1.0 + RATE_TOLERANCE:
                raise SpecError(f"exclusive selection needs rates summing to <= 1 (groups counted once), "
                                f"got {total:g}")
        return self

    # ------------------------------------------------------------------ views
    def modalities(self) -> list[str]:
        """Modalities the spec touches, in first-use order."""
        return list(dict.fromkeys(e.modality for e in self.faults))

    def fault_types(self) -> list[str]:
        """Fault type names the spec uses, in first-use order (the batch's new vocabulary)."""
        return list(dict.fromkeys(e.type for e in self.faults))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + "\n"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        text = self.to_yaml() if path.suffix.lower() in (".yaml", ".yml") else self.to_json()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _format_validation(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = _loc(tuple(err.get("loc", ())))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, MMGuardError):
        return f"fault spec: {where}: {cause}" if where else f"fault spec: {cause}"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"fault spec: unknown key {where!r}"
    if kind == "missing":
        return f"fault spec: missing required key {where!r}"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"fault spec: {where or 'document'}: {msg}, got {err.get('input')!r}"


def spec_from_dict(data: Any) -> FaultSpec:
    """Validate a plain mapping into a :class:`FaultSpec` (one-line SpecError on any problem)."""
    if isinstance(data, FaultSpec):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(f"a fault spec must be a mapping with a 'faults' list, "
                        f"got {type(data).__name__} {data!r}")
    if "faults" in data and not isinstance(data["faults"], list):
        raise SpecError(f"fault spec: 'faults' must be a list, got {data['faults']!r}")
    for i, e in enumerate(data.get("faults") or []):
        if not isinstance(e, Mapping):
            raise SpecError(f"fault spec: faults[{i}] must be a mapping, got {e!r}")
    try:
        return FaultSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_format_validation(exc)) from None
    except MMGuardError as exc:  # raised directly by a validator outside pydantic's wrapping
        raise SpecError(f"fault spec: {exc}") from None


def parse_spec(text: str, fmt: Literal["json", "yaml"] | None = None, *, source: str = "<text>") -> FaultSpec:
    """Parse spec text; ``fmt=None`` reads YAML (a superset of JSON)."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"malformed JSON in {source}: {exc.msg} "
                            f"at line {exc.lineno} column {exc.colno}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise SpecError(f"malformed YAML in {source}: {problem}{where}") from None
    return spec_from_dict(data)


def load_spec(source: FaultSpec | Mapping[str, Any] | str | Path) -> FaultSpec:
    """A validated :class:`FaultSpec` from a spec, a mapping, or a ``.json``/``.yaml`` file path."""
    if isinstance(source, FaultSpec):
        return source
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    if not isinstance(source, (str, Path)):
        raise SpecError(f"cannot load a fault spec from {type(source).__name__} {source!r}")
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"fault spec file not found: {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read fault spec {str(path)!r}: {exc}") from None
    fmt: Literal["json", "yaml"] | None = "json" if path.suffix.lower() == ".json" else None
    return parse_spec(text, fmt, source=repr(str(path)))
