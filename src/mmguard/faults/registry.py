"""The fault-type registry: names, parameter models, supported kinds and severity.

A fault type is a function ``fn(x, params, ctx) -> Tensor`` that receives the values of the
*selected* samples of one modality, ``x`` of shape ``(n, *per_sample_shape)``, and returns the
corrupted values (same shape and dtype, a new tensor — never ``x`` modified in place). It must
be vectorized: no Python loop over samples. Randomness comes only from ``ctx.generator``.

Each type declares

* a pydantic parameter model (defaults, validation, one description per parameter);
* the modality kinds it supports (``vector``, ``timeseries``, ``image``);
* its *severity* parameter — the one a severity sweep varies (e.g. ``sigma``) — and the
  direction in which the error to the clean signal grows with it (``increasing`` for almost
  all; ``decreasing`` for a clipping bound). ``None`` when no parameter is a natural intensity.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined

from mmguard.data.model import ModalityKind
from mmguard.errors import SpecError


class FaultParams(BaseModel):
    """Base class of every fault's parameter model: unknown keys and NaN/Inf are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class FaultContext:
    """What a fault function may use besides the values it corrupts.

    * ``kind`` — the modality kind of ``x``;
    * ``generator`` — the entry's private CPU random stream;
    * ``index`` — (n,) batch indices of the selected samples (used as the time index when the
      batch carries no ``t`` meta);
    * ``t``, ``episode`` — (n,) meta of the selected samples, or ``None`` when absent.
    """

    kind: ModalityKind
    generator: torch.Generator
    index: torch.Tensor
    t: torch.Tensor | None = None
    episode: torch.Tensor | None = None

    def rand(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) draws from the private stream, on ``like``'s device and dtype."""
        return torch.rand(shape, generator=self.generator).to(device=like.device, dtype=like.dtype)

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws from the private stream, on ``like``'s device and dtype."""
        return torch.randn(shape, generator=self.generator).to(device=like.device, dtype=like.dtype)

    def randint(self, high: int | torch.Tensor, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Integers in ``[0, high)``; ``high`` may be a tensor broadcastable to ``shape``."""
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        hi = torch.as_tensor(high, dtype=torch.float64)
        return torch.minimum((u * hi).floor(), hi - 1).clamp_min(0).long().to(device)

    def randperm(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator).to(device)


FaultFn = Callable[[torch.Tensor, Any, FaultContext], torch.Tensor]


@dataclass(frozen=True)
class FaultType:
    """A registered fault: its function, parameter model, kinds and severity parameter."""

    name: str
    fn: FaultFn
    params: type[FaultParams]
    kinds: frozenset[ModalityKind]
    severity: str | None
    severity_direction: Literal["increasing", "decreasing"] = "increasing"
    temporal: bool = False
    aliases: tuple[str, ...] = ()
    severity_clears: tuple[str, ...] = ()
    doc: str = field(default="", repr=False)

    @property
    def summary(self) -> str:
        """First paragraph of the fault function's docstring, on one line."""
        first = self.doc.strip().split("\n\n")[0]
        return " ".join(first.split())

    def supports(self, kind: ModalityKind | str) -> bool:
        return as_kind(kind) in self.kinds

    def validate_params(self, params: Mapping[str, Any] | FaultParams | None) -> FaultParams:
        """Validated parameter model; raises a one-line :class:`SpecError` naming the bad value."""
        if isinstance(params, self.params):
            return params
        if params is None:
            params = {}
        if isinstance(params, BaseModel):
            params = params.model_dump()
        if not isinstance(params, Mapping):
            raise SpecError(f"fault {self.name!r}: params must be a mapping, got {params!r}")
        try:
            return self.params.model_validate(dict(params))
        except ValidationError as exc:
            raise SpecError(_param_error(self.name, params, exc)) from None

    def normalize_params(self, params: Mapping[str, Any] | FaultParams | None) -> dict[str, Any]:
        """Validated params as a plain dict with every default filled in."""
        return self.validate_params(params).model_dump(mode="json")

    def with_severity(self, params: Mapping[str, Any] | FaultParams | None, value: Any) -> dict[str, Any]:
        """``params`` with the severity parameter set to ``value`` (alternatives reset), validated."""
        if self.severity is None:
            raise SpecError(f"fault {self.name!r} has no severity parameter to sweep")
        base = dict(self.normalize_params(params))
        for key in self.severity_clears:
            base[key] = None
        base[self.severity] = value
        return self.normalize_params(base)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (name, kinds, severity, parameters) for ``faults list``."""
        return {
            "name": self.name,
            "summary": self.summary,
            "kinds": sorted(k.value for k in self.kinds),
            "severity": self.severity,
            "severity_direction": self.severity_direction if self.severity else None,
            "temporal": self.temporal,
            "aliases": list(self.aliases),
            "params": describe_params(self.params),
        }


def _param_error(name: str, params: Mapping[str, Any], exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not err.get("loc"):
        return f"fault {name!r}: bad params {dict(params)!r}: {msg}"
    key = str(err["loc"][0])
    value = params.get(key, err.get("input"))
    if err.get("type") == "extra_forbidden":
        return f"fault {name!r}: unknown param {key!r}={value!r}"
    return f"fault {name!r}: bad param {key}={value!r}: {msg}"


def type_name(annotation: Any) -> str:
    """Readable name of a parameter annotation: ``float``, ``float | null``, ``'zero' | 'nan'``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def describe_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    out = []
    for pname, info in model.model_fields.items():
        default = info.default
        required = default is PydanticUndefined
        out.append({
            "name": pname,
            "type": type_name(info.annotation),
            "default": None if required else default,
            "required": required,
            "description": info.description or "",
        })
    return out


_REGISTRY: dict[str, FaultType] = {}
_ALIASES: dict[str, str] = {}
_BUILTINS_LOADED = False


def register_fault(
    name: str,
    *,
    params: type[FaultParams],
    kinds: tuple[str, ...] | tuple[ModalityKind, ...],
    severity: str | None,
    severity_direction: Literal["increasing", "decreasing"] = "increasing",
    temporal: bool = False,
    aliases: tuple[str, ...] = (),
    severity_clears: tuple[str, ...] = (),
) -> Callable[[FaultFn], FaultFn]:
    """Decorator registering ``fn`` as fault type ``name`` (names and aliases must be new).

    ``severity_clears`` names parameters that are alternatives to the severity parameter (e.g.
    ``snr_db`` for ``sigma``): a severity sweep sets the severity and resets those to ``None``.
    """

    def deco(fn: FaultFn) -> FaultFn:
        for n in (name, *aliases):
            if n in _REGISTRY or n in _ALIASES:
                raise SpecError(f"fault type {n!r} is already registered")
        if severity is not None and severity not in params.model_fields:
            raise SpecError(f"fault {name!r}: severity param {severity!r} is not one of its params")
        _REGISTRY[name] = FaultType(
            name=name, fn=fn, params=params, kinds=frozenset(ModalityKind(k) for k in kinds),
            severity=severity, severity_direction=severity_direction, temporal=temporal,
            aliases=tuple(aliases), severity_clears=tuple(severity_clears), doc=fn.__doc__ or "",
        )
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def as_kind(kind: ModalityKind | str) -> ModalityKind:
    """``kind`` as a :class:`ModalityKind`; an unknown name → one-line SpecError."""
    try:
        return ModalityKind(kind)
    except ValueError:
        raise SpecError(
            f"unknown modality kind {kind!r}; known: {', '.join(k.value for k in ModalityKind)}"
        ) from None


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from mmguard.faults import image, vector  # noqa: F401  (registers the built-in types)


def get_fault(name: str) -> FaultType:
    """The fault type called ``name`` (or one of its aliases); unknown → one-line SpecError."""
    _load_builtins()
    if not isinstance(name, str):
        raise SpecError(f"fault type must be a string, got {name!r}")
    canonical = _ALIASES.get(name, name)
    if canonical not in _REGISTRY:
        raise SpecError(f"unknown fault type {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[canonical]


def fault_names() -> list[str]:
    """Canonical names of every registered fault type, in registration order."""
    _load_builtins()
    return list(_REGISTRY)


def list_faults(kind: ModalityKind | str | None = None) -> list[FaultType]:
    """Every registered fault type, optionally only those supporting ``kind``."""
    _load_builtins()
    if kind is None:
        return list(_REGISTRY.values())
    k = as_kind(kind)
    return [f for f in _REGISTRY.values() if k in f.kinds]


def fault_catalog(kind: ModalityKind | str | None = None) -> list[dict[str, Any]]:
    """JSON-able descriptions of :func:`list_faults` (what ``mmguard faults list --json`` prints)."""
    return [f.describe() for f in list_faults(kind)]
